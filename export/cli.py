"""``rlrc-export``: the export toolchain's command line (one subcommand per stage)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import typing
from dataclasses import dataclass, field
from typing import Any

from rlrc_runtime.cli_args import add_arguments, from_namespace
from rlrc_runtime.errors import ConfigError, RLRCError

log = logging.getLogger("rlrc-export")


@dataclass(frozen=True)
class MakeTinyArgs:
    out: str = field(metadata={"help": "output checkpoint directory"})
    preset: str = field(default="tiny", metadata={"help": "model preset; see --list"})
    seed: int = field(default=0, metadata={"help": "random seed of the weights"})
    dtype: str = field(default="float32", metadata={"help": "stored dtype", "choices": ["float32", "bfloat16", "float16"]})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing checkpoint at --out"})


@dataclass(frozen=True)
class InspectArgs:
    checkpoint: str = field(metadata={"help": "checkpoint directory", "positional": True})
    json: bool = field(default=False, metadata={"help": "print JSON instead of a summary"})


def cmd_make_tiny(args: MakeTinyArgs) -> None:
    from export.tiny import make_tiny, parameter_summary, preset_config, get_preset

    out = make_tiny(args.out, preset=args.preset, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite)
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


def _with_config(name: str, config_cls: type, *leading: tuple[str, type, Any]) -> type:
    """A frozen CLI dataclass: ``leading`` fields, then every field of ``config_cls`` (one source of help)."""
    hints = typing.get_type_hints(config_cls)
    fields = [*leading, *((f.name, hints[f.name], dataclasses.field(default=f.default, metadata=f.metadata))
                          if f.default is not dataclasses.MISSING else (f.name, hints[f.name], dataclasses.field(metadata=f.metadata))
                          for f in dataclasses.fields(config_cls))]
    def required(f: tuple) -> bool:
        return f[2].default is dataclasses.MISSING and f[2].default_factory is dataclasses.MISSING

    fields = [f for f in fields if required(f)] + [f for f in fields if not required(f)]
    return dataclasses.make_dataclass(name, fields, frozen=True)


def _pick(config_cls: type, args: Any) -> Any:
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def _command() -> str:
    return shlex.join(["rlrc-export", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("rlrc-export") else ""


_OUT = ("out", str, field(metadata={"help": "output bundle directory"}))
_OVERWRITE = ("overwrite", bool, field(default=False, metadata={"help": "replace an existing directory at --out"}))
_BUNDLE = ("bundle", str, field(metadata={"help": "bundle directory (written by `rlrc-export onnx`)"}))
_CKPT = ("checkpoint", str, field(metadata={"help": "OpenVLA checkpoint directory"}))


def _onnx_args() -> type:
    from export.onnx_export import OnnxExportConfig

    return _with_config("OnnxArgs", OnnxExportConfig, _CKPT, _OUT, _OVERWRITE)


def _quantize_args() -> type:
    from export.quantize_deploy import QuantizeConfig

    return _with_config("QuantizeArgs", QuantizeConfig, _BUNDLE, _OUT, _OVERWRITE)


def _engine_args() -> type:
    from export.engine import EngineConfig

    return _with_config("EngineArgs", EngineConfig, _BUNDLE)


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

    def __post_init__(self) -> None:
        if self.target == "tensorrt" and self.quantize in ("int8", "int4"):
            raise ConfigError(
                f"--quantize {self.quantize} --target tensorrt: onnxruntime's int8/int4 graphs use ops TensorRT does not run; "
                "use --quantize fp16 for TensorRT (explicit Q/DQ INT8/FP8/INT4 engines need a Q/DQ-quantized ONNX)"
            )
        if self.target == "tensorrt" and self.embeddings != "host":
            raise ConfigError("--target tensorrt needs --embeddings host (the engines take embeddings)")


def cmd_onnx(args: Any) -> None:
    from export.onnx_export import OnnxExportConfig, export_onnx

    out = export_onnx(args.checkpoint, args.out, _pick(OnnxExportConfig, args), overwrite=args.overwrite, command=_command() or None)
    print(f"wrote bundle {out}")


def cmd_quantize(args: Any) -> None:
    from export.quantize_deploy import QuantizeConfig, quantize_bundle

    out = quantize_bundle(args.bundle, args.out, _pick(QuantizeConfig, args), overwrite=args.overwrite, command=_command() or None)
    print(f"wrote bundle {out}")


def cmd_engine(args: Any) -> None:
    from export.engine import EngineConfig, build_engines

    out = build_engines(args.bundle, _pick(EngineConfig, args), command=_command() or None)
    print(f"built engines in {out}/engines")


def cmd_pipeline(args: PipelineArgs) -> None:
    """Every stage that exists today: onnx export -> quantize -> engine (pruning/recovery arrive later)."""
    import shutil
    from pathlib import Path

    from export.engine import EngineConfig, build_engines
    from export.onnx_export import OnnxExportConfig, export_onnx
    from export.quantize_deploy import QuantizeConfig, quantize_bundle

    out = Path(args.out)
    onnx_cfg = OnnxExportConfig(precision="fp16" if args.quantize == "fp16" else "fp32", max_seq_len=args.max_seq_len,
                                embeddings=args.embeddings, head=args.head, exporter=args.exporter)
    command = _command() or None
    if args.quantize in ("int8", "int4"):
        stage_dir = out.parent / f".{out.name}.fp32"
        export_onnx(args.checkpoint, stage_dir, onnx_cfg, overwrite=True, command=command)
        try:
            quantize_bundle(stage_dir, out, QuantizeConfig(precision=args.quantize), overwrite=args.overwrite, command=command)
        finally:
            shutil.rmtree(stage_dir, ignore_errors=True)
    else:
        export_onnx(args.checkpoint, out, onnx_cfg, overwrite=args.overwrite, command=command)
    if args.target == "tensorrt":
        build_engines(out, EngineConfig(precision="fp16" if args.quantize == "fp16" else "fp32"), command=command)
    print(f"wrote bundle {out} ({args.quantize}, target {args.target})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlrc-export", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-tiny", help="write a small OpenVLA-format checkpoint with random weights")
    add_arguments(p, MakeTinyArgs)
    p.set_defaults(run=cmd_make_tiny, args_cls=MakeTinyArgs)
    p = sub.add_parser("presets", help="list the make-tiny presets")
    p.set_defaults(run=None, args_cls=None)
    p = sub.add_parser("inspect", help="print a checkpoint's dimensions, parameter counts and files")
    add_arguments(p, InspectArgs)
    p.set_defaults(run=cmd_inspect, args_cls=InspectArgs)
    for name, factory, run, text in (
        ("onnx", _onnx_args, cmd_onnx, "export vision/prefill/decode ONNX graphs into a bundle"),
        ("quantize", _quantize_args, cmd_quantize, "int8/int4 LLM graphs (onnxruntime.quantization) into a new bundle"),
        ("engine", _engine_args, cmd_engine, "build TensorRT engines for this GPU into the bundle (run on the target)"),
    ):
        cls = factory()
        p = sub.add_parser(name, help=text)
        add_arguments(p, cls)
        p.set_defaults(run=run, args_cls=cls)
    p = sub.add_parser("pipeline", help="checkpoint -> bundle: every stage that exists (onnx, quantize, engine)")
    add_arguments(p, PipelineArgs)
    p.set_defaults(run=cmd_pipeline, args_cls=PipelineArgs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if ns.command == "presets":
            from export.tiny import PRESETS

            for name, preset in PRESETS.items():
                print(f"{name:12s} {preset.description}")
            return 0
        ns.run(from_namespace(ns.args_cls, ns))
    except RLRCError as exc:
        print(f"rlrc-export {ns.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
