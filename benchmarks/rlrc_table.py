"""The RLRC main table and its ablations, in miniature, on the built-in tabletop suite (issue 6).

    python benchmarks/rlrc_table.py                 # full run (CPU: about 2 h on 2 cores)
    python benchmarks/rlrc_table.py --quick         # smoke run on tiny budgets (minutes)
    python benchmarks/rlrc_table.py --help          # every budget is a flag

Rows (the paper's Table 1 and ablations): base; pruned at each ``--ratios`` (no recovery); the
``--main-ratio`` model + SFT; + SFT + RL (RLRC); RLRC + INT8 and + INT4 (ONNX Runtime bundles);
ablations: RL from the pruned model without SFT, RLRC without critic warm-up, RLRC without BC loss.
The deployed rows are exported with the action-only head (``--head action``) and the quantized ones
also store the host embedding table quantized (int8 / int4 per row, ``rlrc_runtime.embeddings``):
at this scale the 32064-row embeddings and lm_head are most of the weights (3.5 % at 7B).
Columns: LLM parameters, stored weight bytes, memory ratio vs the base in bf16 (the paper's
baseline convention), p50 latency ratio vs the base measured in one run (rows interleaved, one
process per row, which also gives each row's peak resident memory), success in-distribution and
held-out (``--episodes`` per split, spread over the four families) with 95 % Wilson intervals.

Resumable: every stage writes its artifact under ``--work`` and a marker in ``--work/stages/``;
a finished stage is skipped when the command runs again, and the training stages resume from
their own last state, so a run cut off by a restart continues where it stopped. The same command
runs on a GPU (training and RL pick CUDA when present; evaluation stays on the CPU env workers).

Outputs (``--results``): ``NAME.json`` (every row, every stage's facts, command, machine, date),
``NAME.md`` (the table) and ``NAME.png`` (success vs memory, SFT and RL training curves).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError

log = logging.getLogger("rlrc_table")

FAMILIES = ("pick", "push", "place", "stack")


@dataclass(frozen=True)
class TableConfig:
    base: str = field(default="artifacts/base_policy/run/final",
                      metadata={"help": "base policy checkpoint (benchmarks/base_policy.sh writes it)"})
    demos: str = field(default="artifacts/base_policy/demos_id_2000.hdf5,artifacts/base_policy/demos_id_dart_2000.hdf5",
                       metadata={"help": "demonstration HDF5 files: pruning calibration, SFT data, BC data"})
    work: str = field(default="artifacts/rlrc_table", metadata={"help": "stage artifacts and markers"})
    results: str = field(default="benchmarks/results", metadata={"help": "where NAME.json/.md/.png go"})
    name: str = field(default="rlrc_table", metadata={"help": "file stem of the results"})
    ratios: str = field(default="0.5,0.75,0.9", metadata={"help": "pruning ratios of the 'pruned' rows"})
    main_ratio: float = field(default=0.75, metadata={"help": "the ratio that gets SFT, RL and quantization"})
    prune_method: str = field(default="taylor", metadata={"help": "importance: taylor, magnitude, random"})
    calib_batches: int = field(default=8, metadata={"help": "pruning calibration batches (16 samples each)"})
    sft_steps: int = field(default=1500, metadata={"help": "SFT optimizer steps"})
    sft_batch_size: int = field(default=64, metadata={"help": "SFT batch size"})
    sft_lr: float = field(default=3e-4, metadata={"help": "SFT peak learning rate"})
    label_sigma: float = field(default=2.0, metadata={"help": "SFT soft action targets, bins (as the base recipe)"})
    rl_updates: int = field(default=20, metadata={"help": "PPO updates per RL run"})
    rl_num_envs: int = field(default=8, metadata={"help": "vector envs per RL run"})
    rl_rollout_steps: int = field(default=32, metadata={"help": "env steps per env per PPO update"})
    rl_lr: float = field(default=1e-5, metadata={"help": "policy learning rate of PPO"})
    rl_temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    critic_warmup: int = field(default=4, metadata={"help": "value-head-only updates at the start of RLRC"})
    bc_coef: float = field(default=0.1, metadata={"help": "BC-loss weight of RLRC"})
    episodes: int = field(default=100, metadata={"help": "evaluation episodes per split (spread over the families)"})
    eval_workers: int = field(default=2, metadata={"help": "evaluation worker processes"})
    latency_iters: int = field(default=40, metadata={"help": "timed predictions per row (interleaved rounds of 5)"})
    quick: bool = field(default=False, metadata={"help": "smoke run: tiny budgets, own tiny base and demos if absent"})
    seed: int = field(default=0, metadata={"help": "seed of pruning, training, RL"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self) -> None:
        if not 0 < self.main_ratio < 1:
            raise ConfigError(f"--main-ratio={self.main_ratio}: expected a fraction in (0, 1), e.g. 0.75")
        for r in self.ratio_list:
            if not 0 < r <= 0.9:
                raise ConfigError(f"--ratios contains {r}: every ratio must be in (0, 0.9]")
        if self.episodes < len(FAMILIES):
            raise ConfigError(f"--episodes={self.episodes}: need at least one episode per family ({len(FAMILIES)})")

    @property
    def ratio_list(self) -> list[float]:
        return sorted({float(r) for r in self.ratios.split(",") if r} | {self.main_ratio})

    def resolved(self) -> "TableConfig":
        """--quick swaps in smoke budgets and its own work folder (so it never skips a full run's stages)."""
        if not self.quick:
            return self
        from dataclasses import replace

        return replace(self, work=self.work.rstrip("/") + "_quick", name=self.name + "_quick", calib_batches=2,
                       sft_steps=8, sft_batch_size=8, rl_updates=2, rl_num_envs=2, rl_rollout_steps=8,
                       critic_warmup=1, episodes=4, eval_workers=1, latency_iters=5, ratios="0.5,0.9")


def pct(r: float) -> str:
    return f"{round(r * 100):d}"


class Stages:
    """Run-once stages with markers under work/stages/NAME.json holding each stage's facts."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.facts: dict[str, Any] = {}

    def run(self, name: str, fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        marker = self.dir / f"{name}.json"
        if marker.exists():
            self.facts[name] = json.loads(marker.read_text())
            log.info("stage %-28s done earlier, skipped", name)
            return self.facts[name]
        log.info("stage %-28s running", name)
        t0 = time.perf_counter()
        facts = dict(fn() or {})
        facts["wall_s"] = round(time.perf_counter() - t0, 1)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts, indent=2, default=str) + "\n")
        tmp.replace(marker)
        self.facts[name] = facts
        log.info("stage %-28s finished in %.0f s", name, facts["wall_s"])
        return facts


# --------------------------------------------------------------------------- stage bodies


def make_quick_inputs(cfg: TableConfig, work: Path) -> tuple[str, str]:
    """--quick without a trained base: 8 demos and a base-128 model trained for 20 steps."""
    from export.train import TrainConfig, train
    from sim.data import DemoConfig, write_demos

    demos = work / "quick_demos.hdf5"
    if not demos.exists():
        write_demos(DemoConfig(episodes=8, families=FAMILIES, image_size=128, seed=0), demos, progress=cfg.progress)
    base_dir = work / "quick_base"
    if not (base_dir / "final" / "config.json").exists():
        train(TrainConfig(data=str(demos), out=str(base_dir), preset="base-128", steps=20, batch_size=8, warmup_steps=2,
                          save_every=20, log_every=5, progress=cfg.progress, label_sigma=cfg.label_sigma))
    return str(base_dir / "final"), str(demos)


def prune_stage(cfg: TableConfig, base: str, demos: str, ratio: float, out: Path) -> dict[str, Any]:
    from export.prune import PruneConfig, prune_checkpoint

    report = prune_checkpoint(base, out, PruneConfig(ratio=ratio, method=cfg.prune_method, data=demos,
                                                     calib_batches=cfg.calib_batches, seed=cfg.seed,
                                                     progress=cfg.progress), overwrite=True)
    return {"checkpoint": str(out), "achieved_ratio": report["achieved_ratio"], "params": report["params"]}


def sft_stage(cfg: TableConfig, init: str, demos: str, out: Path) -> dict[str, Any]:
    from export.train import TrainConfig, train

    final = train(TrainConfig(data=demos, out=str(out), init=init, steps=cfg.sft_steps, batch_size=cfg.sft_batch_size,
                              lr=cfg.sft_lr, warmup_steps=min(100, cfg.sft_steps // 10), label_sigma=cfg.label_sigma,
                              save_every=max(1, cfg.sft_steps // 4), log_every=max(1, cfg.sft_steps // 60),
                              seed=cfg.seed, progress=cfg.progress))
    return {"checkpoint": str(final), "metrics": str(out / "metrics.jsonl")}


def rl_stage(cfg: TableConfig, init: str, demos: str, out: Path, warmup: int, bc_coef: float) -> dict[str, Any]:
    from export.recover_rl import RLConfig, train_rl

    final = train_rl(RLConfig(init=init, out=str(out), families=",".join(FAMILIES), num_envs=cfg.rl_num_envs,
                              rollout_steps=cfg.rl_rollout_steps, updates=cfg.rl_updates, lr=cfg.rl_lr,
                              temperature=cfg.rl_temperature, critic_warmup=warmup, bc_coef=bc_coef,
                              bc_data=demos if bc_coef > 0 else None, save_every=max(1, cfg.rl_updates // 4),
                              seed=cfg.seed, progress=cfg.progress))
    return {"checkpoint": str(final), "metrics": str(out / "metrics.jsonl"), "critic_warmup": warmup, "bc_coef": bc_coef}


def onnx_stage(checkpoint: str, out: Path, precision: str) -> dict[str, Any]:
    """fp32 ONNX bundle, or int8/int4 from the fp32 bundle next to it."""
    from export.onnx_export import OnnxExportConfig, export_onnx
    from export.quantize_deploy import QuantizeConfig, quantize_bundle

    if precision == "fp32":
        export_onnx(checkpoint, out, OnnxExportConfig(head="action"), overwrite=True)
    else:
        quantize_bundle(checkpoint, out, QuantizeConfig(precision=precision), overwrite=True)
    return {"bundle": str(out)}


def eval_stage(cfg: TableConfig, policy: str, backend: str, split: str, out: Path) -> dict[str, Any]:
    from sim.evaluate import EvalConfig, evaluate

    per_family = max(1, cfg.episodes // len(FAMILIES))
    report = evaluate(EvalConfig(policy=policy, backend=backend, split=split, episodes=per_family,
                                 workers=cfg.eval_workers, json=str(out), progress=cfg.progress))
    return {"json": str(out), "overall": report["overall"]}


# --------------------------------------------------------------------------- sizes and latency


def checkpoint_sizes(path: str) -> dict[str, int]:
    """Parameter counts from the checkpoint's tensor headers (no weights read)."""
    from rlrc_runtime.checkpoint import read_checkpoint

    info = read_checkpoint(path, require_norm_stats=False)
    total = llm = decoder = 0
    for name, t in info.tensors.items():
        n = int(np.prod(t.shape))
        total += n
        if name.startswith("language_model."):
            llm += n
            if ".layers." in name:
                decoder += n
    return {"total_params": total, "llm_params": llm, "decoder_params": decoder}


def bundle_bytes(path: str) -> int:
    """Bytes of every graph and weight file of a bundle (what the robot stores)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and p.suffix in (".onnx", ".data", ".bin", ".npy"))


# --------------------------------------------------------------------------- the run


def run(cfg: TableConfig) -> dict[str, Any]:
    cfg = cfg.resolved()
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work)
    t_start = time.perf_counter()
    base, demos = cfg.base, cfg.demos
    if cfg.quick and not Path(base, "config.json").exists():
        base, demos = make_quick_inputs(cfg, work)
    if not Path(base, "config.json").exists():
        raise ConfigError(f"--base {base}: no checkpoint there; train one with `bash benchmarks/base_policy.sh` "
                          "or pass --quick for a smoke run")
    missing = [d for d in demos.split(",") if d and not Path(d).exists()]
    if missing:
        raise ConfigError(f"--demos: {missing} not found; `bash benchmarks/base_policy.sh` writes them")
    main = pct(cfg.main_ratio)

    # Rows: name -> (policy path, backend); filled as stages finish.
    rows: dict[str, dict[str, Any]] = {"base": {"policy": base, "backend": "torch", "label": "base"}}
    for r in cfg.ratio_list:
        f = stages.run(f"prune_{pct(r)}", lambda r=r: prune_stage(cfg, base, demos, r, work / f"pruned_{pct(r)}"))
        rows[f"pruned_{pct(r)}"] = {"policy": f["checkpoint"], "backend": "torch", "label": f"pruned {pct(r)} %"}
    pruned_main = rows[f"pruned_{main}"]["policy"]
    sft = stages.run(f"sft_{main}", lambda: sft_stage(cfg, pruned_main, demos, work / f"sft_{main}"))
    rows[f"sft_{main}"] = {"policy": sft["checkpoint"], "backend": "torch", "label": f"pruned {main} % + SFT"}
    rl_runs = {
        f"rlrc_{main}": (sft["checkpoint"], cfg.critic_warmup, cfg.bc_coef, f"pruned {main} % + SFT + RL (RLRC)"),
        f"rl_no_sft_{main}": (pruned_main, cfg.critic_warmup, cfg.bc_coef, f"ablation: pruned {main} % + RL, no SFT"),
        f"rlrc_{main}_no_warmup": (sft["checkpoint"], 0, cfg.bc_coef, "ablation: RLRC without critic warm-up"),
        f"rlrc_{main}_no_bc": (sft["checkpoint"], cfg.critic_warmup, 0.0, "ablation: RLRC without BC loss"),
    }
    for name, (init, warm, bc, label) in rl_runs.items():
        f = stages.run(name, lambda init=init, warm=warm, bc=bc, name=name: rl_stage(cfg, init, demos, work / name, warm, bc))
        rows[name] = {"policy": f["checkpoint"], "backend": "torch", "label": label}
    rlrc = rows[f"rlrc_{main}"]["policy"]
    base_fp32 = stages.run("onnx_base_fp32", lambda: onnx_stage(base, work / "bundle_base_fp32", "fp32"))["bundle"]
    rlrc_fp32 = stages.run(f"onnx_rlrc_{main}_fp32", lambda: onnx_stage(rlrc, work / f"bundle_rlrc_{main}_fp32", "fp32"))["bundle"]
    for prec in ("int8", "int4"):
        f = stages.run(f"quant_rlrc_{main}_{prec}",
                       lambda prec=prec: onnx_stage(rlrc_fp32, work / f"bundle_rlrc_{main}_{prec}", prec))
        rows[f"rlrc_{main}_{prec}"] = {"policy": f["bundle"], "backend": "onnxruntime",
                                       "label": f"RLRC {main} % + {prec.upper()} (ONNX Runtime)"}
    order = ["base", *[f"pruned_{pct(r)}" for r in cfg.ratio_list], f"sft_{main}", f"rlrc_{main}",
             f"rlrc_{main}_int8", f"rlrc_{main}_int4", f"rl_no_sft_{main}", f"rlrc_{main}_no_warmup", f"rlrc_{main}_no_bc"]
    rows = {k: rows[k] for k in order}
    for name, row in rows.items():
        for split in ("id", "ood"):
            f = stages.run(f"eval_{name}_{split}",
                           lambda row=row, split=split, name=name: eval_stage(cfg, row["policy"], row["backend"], split,
                                                                               work / "evals" / f"{name}_{split}.json"))
            row[split] = f["overall"]

    # Sizes and latency (measured now, every row in one run, so ratios compare like with like).
    base_sizes = checkpoint_sizes(base)
    base_bf16 = 2 * base_sizes["total_params"]
    lat_rows = {**rows, "_base_onnx_fp32": {"policy": base_fp32, "backend": "onnxruntime"}}
    log.info("latency: %d rows x %d predictions, interleaved", len(lat_rows), cfg.latency_iters)
    from rlrc_runtime.bench import measure_interleaved

    latency = measure_interleaved({k: (v["policy"], v["backend"]) for k, v in lat_rows.items()}, cfg.latency_iters)
    for name, row in rows.items():
        if row["backend"] == "torch":
            sizes = checkpoint_sizes(row["policy"])
            row.update(sizes, weight_bytes=2 * sizes["total_params"], bytes_convention="bf16 (2 B/param)")
            ref = "base"
        else:
            src = checkpoint_sizes(rlrc)
            row.update(src, weight_bytes=bundle_bytes(row["policy"]), bytes_convention="stored bundle files")
            ref = "_base_onnx_fp32"
        row["memory_ratio_vs_base_bf16"] = base_bf16 / row["weight_bytes"]
        row["latency"] = latency[name]
        row["latency_ref"] = "base (torch)" if ref == "base" else "base exported to ONNX Runtime fp32"
        row["speedup_vs_base"] = latency[ref]["p50"] / latency[name]["p50"]
    result = {
        "schema": "rlrc-table/1",
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "config": asdict(cfg),
        "base": base,
        "base_bf16_bytes": base_bf16,
        "base_onnx_fp32_latency": latency["_base_onnx_fp32"],
        "rows": rows,
        "stages": stages.facts,
        "wall_s_this_invocation": round(time.perf_counter() - t_start, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(cfg.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cfg.name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{cfg.name}.md").write_text(markdown(result))
    plot(result, out / f"{cfg.name}.png")
    print(markdown(result))
    return result


def _ci(s: dict[str, Any]) -> str:
    lo, hi = s["ci95"]
    return f"{s['success_rate']:.0%} [{lo:.0%}, {hi:.0%}] (n={s['episodes']})"


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"# RLRC in miniature on the tabletop suite{' (quick smoke run)' if cfg['quick'] else ''}",
        "",
        f"- **Command:** `{result['command']}`",
        f"- **Machine:** {result['machine']['platform']}, {result['machine']['cpus']} CPUs; **date** {result['date']}",
        f"- **Base:** `{result['base']}`; demos `{cfg['demos']}`",
        f"- Memory ratio: base in bf16 ({result['base_bf16_bytes'] / 1e6:.1f} MB) / the row's weights (checkpoint rows "
        "counted at 2 B/param as the paper does; quantized rows: the bundle's stored files). Speed-up: p50 of one "
        "predict_action, all rows timed interleaved in one run; ONNX Runtime rows against the base exported to "
        "ONNX Runtime fp32.",
        "",
        "| row | LLM params | decoder params | weight MB | memory × | speed-up × | p50 ms | peak RSS MB | success id | success ood |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        lines.append(
            f"| {r['label']} | {r['llm_params'] / 1e6:.2f} M | {r['decoder_params'] / 1e6:.3f} M | {r['weight_bytes'] / 1e6:.1f} "
            f"| {r['memory_ratio_vs_base_bf16']:.2f} | {r['speedup_vs_base']:.2f} | {r['latency']['p50']:.1f} "
            f"| {r['latency']['peak_rss_bytes'] / 1e6:.0f} | {_ci(r['id'])} | {_ci(r['ood'])} |")
    return "\n".join(lines) + "\n"


def _curve(path: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    p = Path(path)
    if p.exists():
        for line in p.read_text().splitlines():
            r = json.loads(line)
            if key in r:
                xs.append(r.get("step", r.get("update", len(xs))))
                ys.append(r[key])
    return xs, ys


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    for name, r in result["rows"].items():
        s = r["id"]
        lo, hi = s["ci95"]
        ax.errorbar(r["weight_bytes"] / 1e6, s["success_rate"],
                    yerr=[[max(0.0, s["success_rate"] - lo)], [max(0.0, hi - s["success_rate"])]], fmt="o", capsize=3)
        ax.annotate(r["label"], (r["weight_bytes"] / 1e6, s["success_rate"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("weight MB (bf16 convention / stored)")
    ax.set_ylabel("success, in-distribution")
    ax.set_title("success vs memory")
    stages = result["stages"]
    main = pct(result["config"]["main_ratio"])
    sft = stages.get(f"sft_{main}", {}).get("metrics", "")
    xs, ys = _curve(sft, "losses/action_ce")
    axes[1].plot(xs, ys)
    axes[1].set_title(f"SFT of the {main} %-pruned model")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("action-token loss")
    for name in (f"rlrc_{main}", f"rl_no_sft_{main}", f"rlrc_{main}_no_warmup", f"rlrc_{main}_no_bc"):
        xs, ys = _curve(stages.get(name, {}).get("metrics", ""), "charts/success_rate")
        axes[2].plot(xs, ys, label=name)
    axes[2].set_title("RL rollouts")
    axes[2].set_xlabel("update")
    axes[2].set_ylabel("rollout success rate")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    def go(cfg: TableConfig) -> str:
        result = run(cfg)
        return f"wrote {Path(result['config']['results']) / result['config']['name']}.json/.md/.png"

    return run_command("rlrc_table", __doc__, TableConfig, go, argv)


if __name__ == "__main__":
    sys.exit(main())
