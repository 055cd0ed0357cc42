"""``rlrc-export``: the export toolchain's command line (one subcommand per stage)."""
from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from rlrc_runtime.cli_args import Subcommand, combined_config, run_subcommands, split_config
from rlrc_runtime.errors import ConfigError

log = logging.getLogger("rlrc-export")


@dataclass(frozen=True)
class MakeTinyArgs:
    out: str = field(metadata={"help": "output checkpoint directory"})
    preset: str = field(default="tiny", metadata={"help": "model preset; see --list"})
    seed: int = field(default=0, metadata={"help": "random seed of the weights"})
    dtype: str = field(default="float32", metadata={"help": "stored dtype", "choices": ["float32", "bfloat16", "float16"]})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing checkpoint at --out"})
    action_chunk: int = field(default=1, metadata={"help": "actions per pass; > 1 makes a parallel-decoding model"})
    slot_embeddings: str = field(default="zero", metadata={
        "help": "with --action-chunk > 1: empty action slots or random learned ones", "choices": ["zero", "learned"]})


@dataclass(frozen=True)
class InspectArgs:
    checkpoint: str = field(metadata={"help": "checkpoint directory", "positional": True})
    json: bool = field(default=False, metadata={"help": "print JSON instead of a summary"})


def cmd_make_tiny(args: MakeTinyArgs) -> None:
    from export.tiny import make_tiny, parameter_summary, preset_config, get_preset

    out = make_tiny(args.out, preset=args.preset, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite,
                    action_chunk=args.action_chunk, slot_embeddings=args.slot_embeddings)
    counts = parameter_summary(preset_config(get_preset(args.preset)))
    print(f"wrote {out} (preset {args.preset!r}: {counts['total'] / 1e6:.2f} M parameters, "
          f"LLM {counts['llm'] / 1e6:.2f} M)")


def cmd_inspect(args: InspectArgs) -> None:
    from export.tiny import parameter_summary
    from rlrc_runtime.checkpoint import read_checkpoint

    info = read_checkpoint(args.checkpoint, require_norm_stats=False)
    cfg = info.config
    summary = {
        "path": str(info.path),
        "vision_backbone_id": cfg.vision_backbone_id,
        "image_size": cfg.image_size,
        "patches": cfg.num_patches,
        "towers": [{"timm_id": t.timm_id, "embed_dim": t.embed_dim, "depth": t.depth} for t in cfg.towers],
        "llm": {
            "hidden_size": cfg.llm.hidden_size,
            "layers": cfg.llm.num_layers,
            "num_attention_heads": list(cfg.llm.num_attention_heads),
            "num_key_value_heads": list(cfg.llm.num_key_value_heads),
            "intermediate_size": list(cfg.llm.intermediate_size),
        },
        "parameters": parameter_summary(cfg),
        "weight_bytes": sum(_numel(t.shape) * _DTYPE_BYTES.get(t.dtype, 4) for t in info.tensors.values()),
        "shards": info.files,
        "tokenizer": info.tokenizer_file.name,
        "norm_stats_keys": sorted(cfg.norm_stats or {}),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    p, llm = summary["parameters"], summary["llm"]
    print(f"checkpoint   {summary['path']}")
    print(f"vision       {cfg.vision_backbone_id}, {cfg.image_size} px, {cfg.num_patches} patches, "
          + " + ".join(f"{t['timm_id'].split('.')[0]} (d={t['embed_dim']}, depth {t['depth']})" for t in summary["towers"]))
    print(f"llm          {llm['layers']} layers, hidden {llm['hidden_size']}, heads {llm['num_attention_heads']}, "
          f"kv heads {llm['num_key_value_heads']}, mlp {llm['intermediate_size']}")
    print(f"parameters   total {p['total'] / 1e6:.2f} M (vision {p['vision'] / 1e6:.2f} M, projector "
          f"{p['projector'] / 1e6:.2f} M, llm {p['llm'] / 1e6:.2f} M); {summary['weight_bytes'] / 2**20:.1f} MiB stored")
    print(f"files        {', '.join(summary['shards'])}; tokenizer {summary['tokenizer']}")
    print(f"norm_stats   {summary['norm_stats_keys'] or 'none'}")


_DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "I8": 1, "U8": 1, "I64": 8, "I32": 4, "BOOL": 1}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _command() -> str:
    return shlex.join(["rlrc-export", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("rlrc-export") else ""


_OUT = ("out", str, field(metadata={"help": "output bundle directory"}))
_OVERWRITE = ("overwrite", bool, field(default=False, metadata={"help": "replace an existing directory at --out"}))
_BUNDLE = ("bundle", str, field(metadata={"help": "bundle directory (written by `rlrc-export onnx`)"}))
_CKPT = ("checkpoint", str, field(metadata={"help": "OpenVLA checkpoint directory"}))


def _onnx_args() -> type:
    from export.onnx_export import OnnxExportConfig

    return combined_config("OnnxArgs", OnnxExportConfig, leading=(_CKPT, _OUT, _OVERWRITE))


def _quantize_args() -> type:
    from export.quantize_deploy import QuantizeConfig

    return combined_config("QuantizeArgs", QuantizeConfig, leading=(_BUNDLE, _OUT, _OVERWRITE))


def _engine_args() -> type:
    from export.engine import EngineConfig

    return combined_config("EngineArgs", EngineConfig, leading=(_BUNDLE,))


def _prune_args() -> type:
    from export.prune import PruneConfig

    return combined_config("PruneArgs", PruneConfig, leading=(
        _CKPT, ("out", str, field(metadata={"help": "output checkpoint directory"})),
        ("overwrite", bool, field(default=False, metadata={"help": "replace an existing checkpoint at --out"}))))


@dataclass(frozen=True)
class PipelineArgs:
    checkpoint: str = field(metadata={"help": "OpenVLA checkpoint directory"})
    out: str = field(metadata={"help": "output bundle directory"})
    quantize: str = field(default="fp32", metadata={"help": "final precision of the LLM graphs", "choices": ["fp32", "fp16", "int8", "int4"]})
    target: str = field(default="onnxruntime", metadata={"help": "runtime the bundle is for; 'tensorrt' also builds engines (on this GPU)",
                                                         "choices": ["onnxruntime", "tensorrt"]})
    max_seq_len: int | None = field(default=None, metadata={"help": "static cache length (default: patches + 128)"})
    embeddings: str = field(default="host", metadata={"help": "text embeddings looked up on the 'host' or in the 'graph'", "choices": ["host", "graph"]})
    head: str = field(default="full", metadata={"help": "'full' vocabulary head or 'action' rows only", "choices": ["full", "action"]})
    exporter: str = field(default="dynamo", metadata={"help": "torch.onnx exporter", "choices": ["dynamo", "torchscript"]})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing bundle at --out"})
    prune_ratio: float = field(default=0.0, metadata={"help": "structured pruning of the LLM first (0 = none); see `rlrc-export prune`"})
    prune_method: str = field(default="taylor", metadata={"help": "pruning importance", "choices": ["taylor", "magnitude", "random"]})
    recover: str = field(default="", metadata={"help": "recovery stages after pruning: '', 'sft', 'rl' or 'sft,rl' (RLRC)"})
    data: str | None = field(default=None, metadata={"help": "demonstration HDF5 file(s): Taylor calibration, SFT data, BC data"})
    sft_steps: int = field(default=1000, metadata={"help": "SFT optimizer steps (rlrc-train --init PRUNED)"})
    rl_updates: int = field(default=20, metadata={"help": "PPO updates (rlrc-export recover-rl; critic warm-up 4, BC 0.1)"})
    work: str | None = field(default=None, metadata={"help": "stage checkpoints (default OUT.stages); finished stages are reused"})

    def __post_init__(self) -> None:
        stages = [s for s in self.recover.split(",") if s]
        if any(s not in ("sft", "rl") for s in stages) or len(set(stages)) != len(stages):
            raise ConfigError(f"--recover {self.recover!r}: expected a comma-separated subset of sft,rl in order, e.g. 'sft,rl'")
        if stages == ["rl", "sft"]:
            raise ConfigError("--recover rl,sft: SFT comes before RL (RLRC); use --recover sft,rl")
        if not 0 <= self.prune_ratio <= 0.9:
            raise ConfigError(f"--prune-ratio={self.prune_ratio}: expected a fraction in [0, 0.9]")
        if (stages or (self.prune_ratio > 0 and self.prune_method == "taylor")) and not self.data:
            raise ConfigError("--recover and Taylor pruning need demonstrations: pass --data demos.hdf5 "
                              "(`rlrc-sim demos --out demos.hdf5` writes them)")
        if self.target == "tensorrt" and self.quantize in ("int8", "int4"):
            raise ConfigError(
                f"--quantize {self.quantize} --target tensorrt: onnxruntime's int8/int4 graphs use ops TensorRT does not run; "
                "use --quantize fp16 for TensorRT (explicit Q/DQ INT8/FP8/INT4 engines need a Q/DQ-quantized ONNX)"
            )
        if self.target == "tensorrt" and self.embeddings != "host":
            raise ConfigError("--target tensorrt needs --embeddings host (the engines take embeddings)")


def cmd_onnx(args: Any) -> None:
    from export.onnx_export import OnnxExportConfig, export_onnx

    out = export_onnx(args.checkpoint, args.out, split_config(args, OnnxExportConfig), overwrite=args.overwrite, command=_command() or None)
    print(f"wrote bundle {out}")


def cmd_quantize(args: Any) -> None:
    from export.quantize_deploy import QuantizeConfig, quantize_bundle

    out = quantize_bundle(args.bundle, args.out, split_config(args, QuantizeConfig), overwrite=args.overwrite, command=_command() or None)
    print(f"wrote bundle {out}")


def cmd_engine(args: Any) -> None:
    from export.engine import EngineConfig, build_engines

    out = build_engines(args.bundle, split_config(args, EngineConfig), command=_command() or None)
    print(f"built engines in {out}/engines")


def cmd_prune(args: Any) -> None:
    from export.prune import PruneConfig, format_report, prune_checkpoint

    print(format_report(prune_checkpoint(args.checkpoint, args.out, split_config(args, PruneConfig), overwrite=args.overwrite)))


def stage_key(**inputs: Any) -> str:
    """A short digest of a stage's inputs (the digest of its input checkpoint, its data, its settings)."""
    import hashlib

    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]


def compress_checkpoint(args: PipelineArgs) -> str:
    """prune -> SFT -> RL on checkpoints under --work; returns the last one.

    Each stage's directory is named by a digest of everything that determines its result (the
    source checkpoint's content, the demonstrations' content, the stage's settings, the stage
    before it), so a finished stage is reused only by a rerun with the same inputs.
    """
    from pathlib import Path

    from export.bundle import content_digest, exclusive_out

    work = Path(args.work or f"{args.out}.stages")
    ckpt = args.checkpoint
    with exclusive_out(work):
        key = content_digest(Path(ckpt))
        data = content_digest(*(Path(f) for f in args.data.split(","))) if args.data else None
        if args.prune_ratio > 0:
            from export.prune import PruneConfig, format_report, prune_checkpoint

            cfg = PruneConfig(ratio=args.prune_ratio, method=args.prune_method, data=args.data)
            key = stage_key(stage="prune", source=key, data=data, ratio=cfg.ratio, method=cfg.method)
            dst = work / f"pruned_{args.prune_ratio:g}_{key}"
            if not (dst / "prune_report.json").exists():
                print(format_report(prune_checkpoint(ckpt, dst, cfg, overwrite=True)))
            ckpt = str(dst)
        stages = [s for s in args.recover.split(",") if s]
        if "sft" in stages:
            from export.train.sft import TrainConfig, train

            key = stage_key(stage="sft", source=key, data=data, steps=args.sft_steps)
            dst = work / f"sft_{key}"
            if not (dst / "final" / "config.json").is_file():
                train(TrainConfig(data=args.data or "", out=str(dst), init=ckpt, steps=args.sft_steps,
                                  warmup_steps=min(100, args.sft_steps // 10)))
            ckpt = str(dst / "final")
        if "rl" in stages:
            from export.train.rl import RLConfig, train_rl

            key = stage_key(stage="rl", source=key, data=data, updates=args.rl_updates)
            dst = work / f"rl_{key}"
            if not (dst / "final" / "config.json").is_file():
                train_rl(RLConfig(init=ckpt, out=str(dst), updates=args.rl_updates, critic_warmup=4, bc_coef=0.1,
                                  bc_data=args.data))
            ckpt = str(dst / "final")
    return ckpt


def require_tensorrt() -> None:
    """Fail before any work when TensorRT engines cannot be built here."""
    from rlrc_runtime.errors import BackendError

    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            "--target tensorrt builds the engines on this machine, but TensorRT is not installed here; run on the "
            "GPU target after `pip install 'rlrc_runtime[tensorrt]'`, or export with --target onnxruntime and build "
            "the engines there with `rlrc-export engine --bundle BUNDLE`"
        ) from exc
    from rlrc_runtime.backends.tensorrt import cudart_module

    cudart_module()


def cmd_pipeline(args: PipelineArgs) -> None:
    """Every stage: [prune -> SFT -> RL] -> onnx export -> [quantize] -> [engines], holding --out's lock."""
    import shutil
    from pathlib import Path

    from export.bundle import exclusive_out, private_dir
    from export.engine import EngineConfig, build_engines
    from export.onnx_export import OnnxExportConfig, export_onnx
    from export.quantize_deploy import QuantizeConfig, quantize_bundle
    from rlrc_runtime.errors import CheckpointError

    if args.target == "tensorrt":
        require_tensorrt()
    out = Path(args.out)
    with exclusive_out(out):
        if out.exists() and any(out.iterdir()) and not args.overwrite:  # before hours of recovery, not after
            raise CheckpointError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
        if args.prune_ratio > 0 or args.recover:
            args = dataclasses.replace(args, checkpoint=compress_checkpoint(args))
        onnx_cfg = OnnxExportConfig(precision="fp16" if args.quantize == "fp16" else "fp32",
                                    max_seq_len=args.max_seq_len, embeddings=args.embeddings, head=args.head,
                                    exporter=args.exporter)
        command = _command() or None
        if args.quantize in ("int8", "int4"):
            staging = private_dir(out, "fp32")  # this export's own: a concurrent one cannot mix into it
            try:
                export_onnx(args.checkpoint, staging / "bundle", onnx_cfg, overwrite=True, command=command)
                quantize_bundle(staging / "bundle", out, QuantizeConfig(precision=args.quantize),
                                overwrite=args.overwrite, command=command)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            export_onnx(args.checkpoint, out, onnx_cfg, overwrite=args.overwrite, command=command)
        if args.target == "tensorrt":
            build_engines(out, EngineConfig(precision="fp16" if args.quantize == "fp16" else "fp32"), command=command)
    print(f"wrote bundle {out} ({args.quantize}, target {args.target})")


def cmd_recover_rl(args: Any) -> str:
    from export.train.loop import outcome
    from export.train.rl import train_rl

    return outcome(train_rl(args))


@dataclass(frozen=True)
class PresetsArgs:
    pass


def cmd_presets(_: PresetsArgs) -> None:
    from export.tiny import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:12s} {preset.description}")


def cmd_size_report(args: Any) -> str:
    from export.size_report import size_report

    report = size_report(args, command=_command() or None)
    lines = [f"{name:28s} {b['total_gb']:7.3f} GB  {b['ratio_vs_bf16']:5.2f}x smaller than the bf16 base "
             f"({report['base']['gb']:.2f} GB)" for name, b in report["bundles"].items()]
    return "\n".join([*lines, f"wrote {args.out}.json and {args.out}.md"])


def commands() -> dict[str, Subcommand]:
    from export.size_report import SizeReportConfig
    from export.train.rl import RLConfig

    return {
        "make-tiny": Subcommand(MakeTinyArgs, cmd_make_tiny, "write a small OpenVLA-format checkpoint with random weights"),
        "presets": Subcommand(PresetsArgs, cmd_presets, "list the make-tiny presets"),
        "inspect": Subcommand(InspectArgs, cmd_inspect, "print a checkpoint's dimensions, parameter counts and files"),
        "prune": Subcommand(_prune_args(), cmd_prune,
                            "structured pruning of the LLM (heads, MLP channels, layers) into a new checkpoint"),
        "onnx": Subcommand(_onnx_args(), cmd_onnx, "export vision/prefill/decode ONNX graphs into a bundle"),
        "quantize": Subcommand(_quantize_args(), cmd_quantize,
                               "int8/int4 LLM graphs (onnxruntime.quantization) into a new bundle"),
        "engine": Subcommand(_engine_args(), cmd_engine,
                             "build TensorRT engines for this GPU into the bundle (run on the target)"),
        "pipeline": Subcommand(PipelineArgs, cmd_pipeline,
                               "checkpoint -> bundle: [prune, SFT, RL,] onnx, [quantize, engine]"),
        "recover-rl": Subcommand(RLConfig, cmd_recover_rl,
                                 "PPO recovery in the tabletop sim (critic warm-up, BC loss) into a new checkpoint"),
        "size-report": Subcommand(SizeReportConfig, cmd_size_report,
                                  "stored bytes of the compressed bundle at OpenVLA-7B's widths: real-width pieces "
                                  "exported and measured, the decoder scaled by its layer count"),
    }


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so every stage removes its temporary directory on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
        # A process started in the background of a non-interactive shell inherits SIGINT as ignored, and
        # Python then never raises KeyboardInterrupt: set it, so that an interrupt always unwinds the export.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return run_subcommands("rlrc-export", __doc__, commands(), argv)


if __name__ == "__main__":
    sys.exit(main())
