"""Which part of an INT4 bundle costs success? One fp32 bundle, quantized several ways, compared.

    python research/quant_variants.py --checkpoint CKPT --demos demos.hdf5 --work artifacts/quant_variants \
        [--frames 400] [--eval-episodes 100] [--variants int4,int4_vision_int8,...]

Each variant is `rlrc-export quantize` of the same fp32 bundle (action-only head) with some parts at
other precisions. Measured per variant: the stored weight bytes; agreement of its action tokens
with the fp32 bundle's on ``--frames`` demonstration frames (exact 7-token match, per-token match,
mean |bin difference|), a cheap proxy that needs no simulation; and, with ``--eval-episodes``,
in-distribution success of the tabletop suite with its Wilson interval. Results go to
WORK/quant_variants.json and .md.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError

# name -> QuantizeConfig overrides (precision first)
VARIANTS: dict[str, dict] = {
    "int8": {"precision": "int8", "quantize_vision": True},
    "int4": {"precision": "int4", "quantize_vision": True},
    "int4_vision_int8": {"precision": "int4", "quantize_vision": False},  # vision left as exported (fp32)
    "int4_embed_int8": {"precision": "int4", "quantize_vision": True, "embed_precision": "int8"},
    "int4_acc_fp32": {"precision": "int4", "quantize_vision": True, "accuracy_level": 0},
    "int4_block16": {"precision": "int4", "quantize_vision": True, "block_size": 16},
    "int4_asym": {"precision": "int4", "quantize_vision": True, "symmetric": False},
    "int4_acc_fp32_block16": {"precision": "int4", "quantize_vision": True, "accuracy_level": 0, "block_size": 16},
}


@dataclass(frozen=True)
class VariantsConfig:
    checkpoint: str = field(metadata={"help": "the policy checkpoint"})
    demos: str = field(metadata={"help": "demonstration HDF5 whose frames the agreement is measured on"})
    work: str = field(default="artifacts/quant_variants", metadata={"help": "bundles and results"})
    variants: str = field(default=",".join(VARIANTS), metadata={"help": "comma-separated variant names"})
    frames: int = field(default=400, metadata={"help": "demonstration frames of the agreement proxy"})
    eval_episodes: int = field(default=0, metadata={"help": "id episodes per family of the success eval; 0 = off"})
    eval_variants: str = field(default="", metadata={"help": "variants evaluated (default: all of --variants)"})
    workers: int = field(default=2, metadata={"help": "evaluation workers"})

    def __post_init__(self) -> None:
        unknown = [v for v in self.names() if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")


    def names(self) -> list[str]:
        return [v for v in self.variants.split(",") if v]


def sample_frames(path: str, n: int) -> list[tuple[np.ndarray, str]]:
    from export.demos import DemoReader

    rng = np.random.default_rng(0)
    with DemoReader(path) as reader:
        keys = list(reader.demo_keys)
        out = []
        for key in rng.choice(keys, size=min(n, len(keys)), replace=len(keys) < n):
            demo = reader.read_demo(str(key))
            out.append((demo.images[int(rng.integers(len(demo.images)))], demo.instruction))
    return out[:n]


def tokens(bundle: Path, frames: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray, float]:
    """The action tokens of every frame, and the median ms of one inference (not interleaved with the
    other variants: an indication only)."""
    import rlrc_runtime

    with rlrc_runtime.load_policy(bundle, backend="onnxruntime") as policy:
        results = [policy.infer(image, text) for image, text in frames]
    return np.stack([r.action_tokens for r in results]), float(np.median([r.timings_ms["total"] for r in results]))


def run(cfg: VariantsConfig) -> str:
    from export.onnx_export import OnnxExportConfig, export_onnx
    from export.quantize_deploy import QuantizeConfig, quantize_bundle
    from sim.evaluate import EvalConfig, evaluate

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from rlrc_table import bundle_bytes

    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32"
    if not (fp32 / "manifest.json").exists():
        export_onnx(cfg.checkpoint, fp32, OnnxExportConfig(head="action"), overwrite=True)
    frames = sample_frames(cfg.demos, cfg.frames)
    ref, ref_ms = tokens(fp32, frames)
    results_path = work / "quant_variants.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("variants", {})
    evaluated = [v for v in cfg.eval_variants.split(",") if v] or cfg.names()
    for name in ["fp32", *cfg.names()]:
        row = results["variants"].get(name, {})
        bundle = fp32 if name == "fp32" else work / name
        if name != "fp32" and not (bundle / "manifest.json").exists():
            quantize_bundle(fp32, bundle, QuantizeConfig(**VARIANTS[name]), overwrite=True)
        if "token_exact" not in row:
            mine, ms = (ref, ref_ms) if name == "fp32" else tokens(bundle, frames)
            row.update({"weight_bytes": bundle_bytes(str(bundle))["weight_bytes"], "median_ms": ms,
                        "token_exact": float(np.mean(np.all(mine == ref, axis=1))),
                        "token_match": float(np.mean(mine == ref)),
                        "mean_abs_bin_diff": float(np.mean(np.abs(mine - ref)))})
        if cfg.eval_episodes and (name == "fp32" or name in evaluated) and row.get("episodes_per_family") != cfg.eval_episodes:
            report = evaluate(EvalConfig(policy=str(bundle), backend="onnxruntime", split="id",
                                         episodes=cfg.eval_episodes, workers=cfg.workers,
                                         json=str(work / f"eval_{name}_id.json")))
            row.update({"episodes_per_family": cfg.eval_episodes, "id": report["overall"],
                        "id_per_family": {f: r["success_rate"] for f, r in report["families"].items()}})
        results["variants"][name] = row
        results.update({"config": asdict(cfg), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "load_average": os.getloadavg()})
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (work / "quant_variants.md").write_text(md)
    return md


def markdown(results: dict) -> str:
    lines = [f"# Quantization variants of {results['config']['checkpoint']}", "",
             f"{results['config']['frames']} demonstration frames for the agreement with fp32; date {results['date']}",
             "", "| variant | weight MB | median ms | tokens exact | token match | mean abs bin diff | success id |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results["variants"].items():
        ok = r.get("id")
        succ = (f"{ok['success_rate']:.3f} [{ok['ci95'][0]:.2f}, {ok['ci95'][1]:.2f}] (n={ok['episodes']})"
                if ok else "-")
        lines.append(f"| {name} | {r['weight_bytes'] / 1e6:.2f} | {r['median_ms']:.1f} | {r['token_exact']:.3f} "
                     f"| {r['token_match']:.3f} "
                     f"| {r['mean_abs_bin_diff']:.2f} | {succ} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command("quant_variants", __doc__, VariantsConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
