"""The RLRC main table and its ablations, in miniature, on the built-in tabletop suite.

    python benchmarks/rlrc_table.py                 # full run on benchmarks/base_policy.sh's policy (CPU: ~3 h)
    python benchmarks/rlrc_table.py --quick         # smoke run on tiny budgets (minutes)
    python benchmarks/rlrc_table.py --help          # every budget is a flag
    python benchmarks/rlrc_table.py --base CKPT --name rlrc_table_chunk8 --ratios 0.75 --no-ablations
                                                    # the main rows only, for another base (e.g. a chunked policy)

Rows (the paper's Table 1 and ablations): base; pruned at each ``--ratios`` (no recovery); the
``--main-ratio`` model + SFT; + SFT + RL (RLRC); RLRC + INT8 and + INT4 (ONNX Runtime bundles);
ablations: RL from the pruned model without SFT, RLRC without critic warm-up, RLRC without BC loss.
The deployed rows are exported with the action-only head (``--head action``) and the quantized ones
also store the host embedding table quantized (int8 / int4 per row, ``rlrc_runtime.embeddings``):
at this scale the 32064-row embeddings and lm_head are most of the weights (3.5 % at 7B).
SFT uses the benchmark's own training recipe (``--sft-recipe``: the base run's co-training terms,
sim/recipes/tabletop.py), as RLRC fine-tunes with the task's original recipe.
Columns: LLM parameters, stored weight bytes, memory ratio vs the base in bf16 (checkpoint rows:
2 bytes per parameter of every tensor; bundle rows: every weight file the robot loads, graphs,
external data and host tables, with a per-part breakdown), p50 latency ratio vs the base measured
in one run (rows interleaved, one process per row, which also gives each row's peak resident
memory), success in-distribution and held-out with 95 % Wilson intervals (``--episodes`` per
family on the base, SFT, RLRC, INT8 and INT4 rows, ``--ablation-episodes`` on the others).

Resumable: every stage writes its artifact under ``--work`` and a marker in ``--work/stages/``
holding the stage's inputs; a finished stage is skipped when the command runs again with the same
inputs (and run again, from scratch, when they changed), and the training stages resume from
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
import shutil
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
    sft_steps: int = field(default=2000, metadata={"help": "SFT optimizer steps"})
    sft_batch_size: int = field(default=64, metadata={"help": "SFT batch size"})
    sft_lr: float = field(default=3e-4, metadata={"help": "SFT peak learning rate"})
    label_sigma: float = field(default=2.0, metadata={"help": "SFT soft action targets, bins (as the base recipe)"})
    sft_recipe: bool = field(default=True, metadata={"help": "SFT with the benchmark's co-training recipe (the base "
                                                             "run's terms); --no-sft-recipe: plain rlrc-train"})
    sft_distill: float = field(default=1.0, metadata={"help": "weight of distillation from the base during SFT "
                                                              "(rlrc-train --teacher); 0 = SFT on the demos alone"})
    rl_updates: int = field(default=40, metadata={"help": "PPO updates per RL run"})
    rl_num_envs: int = field(default=8, metadata={"help": "vector envs per RL run"})
    rl_rollout_steps: int = field(default=32, metadata={"help": "env steps per env per PPO update"})
    rl_lr: float = field(default=1e-5, metadata={"help": "policy learning rate of PPO"})
    rl_temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    critic_warmup: int = field(default=4, metadata={"help": "value-head-only updates at the start of RLRC"})
    bc_coef: float = field(default=0.1, metadata={"help": "BC-loss weight of RLRC"})
    episodes: int = field(default=100, metadata={"help": "evaluation episodes per family and split on the base, SFT, "
                                                         "RLRC, INT8 and INT4 rows"})
    ablation_episodes: int = field(default=25, metadata={"help": "evaluation episodes per family and split on the "
                                                                 "other rows (pruned without recovery, ablations)"})
    eval_workers: int = field(default=2, metadata={"help": "evaluation worker processes"})
    latency_iters: int = field(default=40, metadata={"help": "timed predictions per row (interleaved rounds of 5)"})
    ablations: bool = field(default=True, metadata={"help": "also the three RL ablations (false: the main rows only, "
                                                            "e.g. for a second base such as a chunked policy)"})
    quick: bool = field(default=False, metadata={"help": "smoke run: tiny budgets, own tiny base and demos if absent"})
    seed: int = field(default=0, metadata={"help": "seed of pruning, training, RL"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self) -> None:
        if not 0 < self.main_ratio < 1:
            raise ConfigError(f"--main-ratio={self.main_ratio}: expected a fraction in (0, 1), e.g. 0.75")
        for r in self.ratio_list:
            if not 0 < r <= 0.9:
                raise ConfigError(f"--ratios contains {r}: every ratio must be in (0, 0.9]")
        if self.episodes < 1 or self.ablation_episodes < 1:
            raise ConfigError(f"--episodes={self.episodes} and --ablation-episodes={self.ablation_episodes} must be "
                              ">= 1 (per family)")

    @property
    def ratio_list(self) -> list[float]:
        return sorted({float(r) for r in self.ratios.split(",") if r} | {self.main_ratio})

    def resolved(self) -> "TableConfig":
        """--quick swaps in smoke budgets and its own work folder (so it never skips a full run's stages)."""
        if not self.quick:
            return self
        from dataclasses import replace

        return replace(self, work=self.work.rstrip("/") + "_quick", name=self.name + "_quick", calib_batches=2,
                       sft_steps=4, sft_batch_size=32, rl_updates=2, rl_num_envs=2, rl_rollout_steps=8,
                       critic_warmup=1, episodes=1, ablation_episodes=1, eval_workers=1, latency_iters=5,
                       ratios="0.5,0.9")


def pct(r: float) -> str:
    return f"{round(r * 100):d}"


class Stages:
    """Run-once stages with markers under work/stages/NAME.json holding each stage's inputs and facts.

    A marker whose inputs differ from this invocation's (another base, budget or method) does not count:
    the stage runs again, into a cleared output directory.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.dir = work / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.facts: dict[str, Any] = {}

    def run(self, name: str, fn: Callable[[], dict[str, Any] | None], inputs: dict[str, Any] | None = None,
            output: Path | None = None) -> dict[str, Any]:
        marker = self.dir / f"{name}.json"
        inputs = json.loads(json.dumps(inputs or {}, default=str))
        if marker.exists():
            facts = json.loads(marker.read_text())
            if facts.get("inputs", {}) == inputs:
                self.facts[name] = facts
                log.info("stage %-28s done earlier, skipped", name)
                return facts
            log.info("stage %-28s ran with other inputs before; running it again", name)
            marker.unlink()
            if output is not None and output.exists():
                shutil.rmtree(output)
        log.info("stage %-28s running", name)
        t0 = time.perf_counter()
        facts = dict(fn() or {})
        facts["wall_s"] = round(time.perf_counter() - t0, 1)
        facts["inputs"] = inputs
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts, indent=2, default=str) + "\n")
        tmp.replace(marker)
        self.facts[name] = facts
        log.info("stage %-28s finished in %.0f s", name, facts["wall_s"])
        return facts


# --------------------------------------------------------------------------- stage bodies


def make_quick_inputs(cfg: TableConfig, work: Path) -> tuple[str, str]:
    """--quick without a trained base: 8 demos and a base-128 model trained for 20 steps."""
    from export.train.sft import TrainConfig, train
    from sim.data import DemoConfig, write_demos

    demos = work / "quick_demos.hdf5"
    if not demos.exists():
        write_demos(DemoConfig(episodes=8, families=FAMILIES, image_size=128, seed=0), demos, progress=cfg.progress)
    base_dir = work / "quick_base"
    if not (base_dir / "final" / "config.json").exists():
        train(TrainConfig(data=str(demos), out=str(base_dir), preset="base-96", steps=20, batch_size=8, warmup_steps=2,
                          save_every=20, log_every=5, progress=cfg.progress, label_sigma=cfg.label_sigma,
                          head_rows="targets"))
    return str(base_dir / "final"), str(demos)


def prune_stage(cfg: TableConfig, base: str, demos: str, ratio: float, out: Path) -> dict[str, Any]:
    from export.prune import PruneConfig, prune_checkpoint

    report = prune_checkpoint(base, out, PruneConfig(ratio=ratio, method=cfg.prune_method, data=demos,
                                                     calib_batches=cfg.calib_batches, seed=cfg.seed,
                                                     progress=cfg.progress), overwrite=True)
    return {"checkpoint": str(out), "achieved_ratio": report["achieved_ratio"], "params": report["params"]}


SFT_RECIPE = dict(ground_frac=0.2, ground_task=True, ground_orient=True, ground_orient_weight=8.0,
                  counterfactual_frac=0.0625, attn_role=1.0, attn_role_tokens=2)
"""The co-training terms of the base run (benchmarks/base_policy.sh, its last stage), used by --sft-recipe."""


def sft_stage(cfg: TableConfig, init: str, demos: str, out: Path, teacher: str) -> dict[str, Any]:
    from export.train.sft import TrainConfig, train

    recipe = None
    if cfg.sft_recipe:
        from sim.recipes.tabletop import TabletopRecipe, TabletopRecipeConfig

        recipe = TabletopRecipe(TabletopRecipeConfig(**SFT_RECIPE))
    final = train(TrainConfig(data=demos, out=str(out), init=init, steps=cfg.sft_steps, batch_size=cfg.sft_batch_size,
                              lr=cfg.sft_lr, warmup_steps=min(100, cfg.sft_steps // 10), label_sigma=cfg.label_sigma,
                              head_rows="targets", save_every=max(1, cfg.sft_steps // 4),
                              log_every=max(1, cfg.sft_steps // 60), seed=cfg.seed, progress=cfg.progress,
                              teacher=teacher if cfg.sft_distill > 0 else None,
                              distill_weight=cfg.sft_distill or 1.0), recipe)
    return {"checkpoint": str(final), "metrics": str(out / "metrics.jsonl")}


def rl_stage(cfg: TableConfig, init: str, demos: str, out: Path, warmup: int, bc_coef: float) -> dict[str, Any]:
    from export.train.rl import RLConfig, train_rl

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
        # The vision graph too: it holds most of the bytes a quantized LLM leaves (the byte breakdown).
        quantize_bundle(checkpoint, out, QuantizeConfig(precision=precision, quantize_vision=True), overwrite=True)
    return {"bundle": str(out)}


def eval_stage(cfg: TableConfig, policy: str, backend: str, split: str, per_family: int, out: Path) -> dict[str, Any]:
    from sim.evaluate import EvalConfig, evaluate

    report = evaluate(EvalConfig(policy=policy, backend=backend, split=split, episodes=per_family,
                                 workers=cfg.eval_workers, json=str(out), progress=cfg.progress))
    return {"json": str(out), "overall": report["overall"],
            "per_family": {f: r["success_rate"] for f, r in report["families"].items()}}


# --------------------------------------------------------------------------- sizes and latency


def checkpoint_sizes(path: str) -> dict[str, int]:
    """Parameter counts from the checkpoint's tensor headers (no weights read)."""
    from rlrc_runtime.checkpoint import read_checkpoint

    info = read_checkpoint(path, require_norm_stats=False)
    parts = {"vision": 0, "projector": 0, "embeddings": 0, "decoder": 0, "head": 0, "norm": 0}
    for name, t in info.tensors.items():
        parts[_part(name)] += int(np.prod(t.shape))
    llm = parts["embeddings"] + parts["decoder"] + parts["head"] + parts["norm"]
    return {"total_params": sum(parts.values()), "llm_params": llm, "decoder_params": parts["decoder"],
            "params_by_part": parts}


def _part(name: str) -> str:
    """Which part of the model a tensor (checkpoint key or ONNX initializer name) belongs to."""
    n = name.replace("/", ".")
    if "vision_backbone" in n or "featurizer" in n:
        return "vision"
    if "projector" in n:
        return "projector"
    if "embed_tokens" in n or n.startswith("embed_"):
        return "embeddings"
    if "lm_head" in n or "action_head" in n:
        return "head"
    if ".layers." in n or "layers." in n:
        return "decoder"
    return "norm"


WEIGHT_SUFFIXES = (".onnx", ".data", ".npy", ".bin", ".engine", ".plan")


def bundle_bytes(path: str) -> dict[str, Any]:
    """Stored bytes of a bundle: every weight file the robot loads (graphs, external data, host tables,
    engines), the other files (tokenizer, manifest), and the weight bytes split by model part."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    weights = sum(p.stat().st_size for p in files if p.name.endswith(WEIGHT_SUFFIXES))
    other = sum(p.stat().st_size for p in files if not p.name.endswith(WEIGHT_SUFFIXES))
    return {"weight_bytes": weights, "other_bytes": other, "bytes_by_part": bundle_parts(path)}


def bundle_parts(path: str) -> dict[str, int]:
    """Weight bytes of a bundle by part: each ONNX initializer and host table is attributed by its name;
    graph structure (what is left of each .onnx file) is counted under "graph"."""
    import onnx

    parts: dict[str, int] = {}
    root = Path(path)
    seen_data: set[str] = set()
    for graph in sorted(root.glob("*.onnx")):
        model = onnx.load(str(graph), load_external_data=False)
        scope = {}  # initializer -> the module scope of the node that reads it (quantized weights lose their names)
        for node in model.graph.node:
            ns = next((p.value for p in node.metadata_props if p.key == "namespace"), None)
            for name in node.input:
                if ns and name not in scope:
                    scope[name] = ns.rsplit("/", 2)[-2] if "/" in ns else ns
        counted = 0
        for init in model.graph.initializer:
            ext = {e.key: e.value for e in init.external_data}
            if ext:
                key = f"{ext['location']}:{ext.get('offset', 0)}"
                if key in seen_data:  # prefill and decode share one external data file
                    continue
                seen_data.add(key)
                size = int(ext.get("length", 0))
            else:
                size = len(init.raw_data) or onnx.numpy_helper.to_array(init).nbytes
                counted += size
            part = _part(scope.get(init.name, init.name))
            parts[part] = parts.get(part, 0) + size
        parts["graph"] = parts.get("graph", 0) + max(0, graph.stat().st_size - counted)
    for table in root.glob("*.npy"):
        parts["embeddings"] = parts.get("embeddings", 0) + table.stat().st_size
    return parts


# --------------------------------------------------------------------------- the run


MAIN_ROWS = ("base", "sft", "rlrc", "int8", "int4")
"""Row kinds evaluated with --episodes per family (the others with --ablation-episodes)."""


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
    source = {"base": base, "base_digest": _digest(base), "demos": demos, "seed": cfg.seed}
    prune_in = {**source, "method": cfg.prune_method, "calib_batches": cfg.calib_batches}

    # Rows: name -> (policy path, backend, kind); filled as stages finish.
    rows: dict[str, dict[str, Any]] = {"base": {"policy": base, "backend": "torch", "label": "base", "kind": "base"}}
    for r in cfg.ratio_list:
        out = work / f"pruned_{pct(r)}"
        f = stages.run(f"prune_{pct(r)}", lambda r=r, out=out: prune_stage(cfg, base, demos, r, out),
                       {**prune_in, "ratio": r}, out)
        rows[f"pruned_{pct(r)}"] = {"policy": f["checkpoint"], "backend": "torch", "label": f"pruned {pct(r)} %",
                                    "kind": "ablation"}
    pruned_main = rows[f"pruned_{main}"]["policy"]
    sft_in = {**prune_in, "ratio": cfg.main_ratio, "steps": cfg.sft_steps, "batch_size": cfg.sft_batch_size,
              "lr": cfg.sft_lr, "label_sigma": cfg.label_sigma, "recipe": SFT_RECIPE if cfg.sft_recipe else None,
              **({"distill_from_base": cfg.sft_distill} if cfg.sft_distill > 0 else {})}
    sft = stages.run(f"sft_{main}", lambda: sft_stage(cfg, pruned_main, demos, work / f"sft_{main}", base), sft_in,
                     work / f"sft_{main}")
    rows[f"sft_{main}"] = {"policy": sft["checkpoint"], "backend": "torch", "label": f"pruned {main} % + SFT",
                           "kind": "sft"}
    rl_in = {"updates": cfg.rl_updates, "num_envs": cfg.rl_num_envs, "rollout_steps": cfg.rl_rollout_steps,
             "lr": cfg.rl_lr, "temperature": cfg.rl_temperature}
    rl_runs = {
        f"rlrc_{main}": (sft["checkpoint"], sft_in, cfg.critic_warmup, cfg.bc_coef, "pruned {} % + SFT + RL (RLRC)", "rlrc"),
    }
    ablation_runs = {
        f"rl_no_sft_{main}": (pruned_main, {**prune_in, "ratio": cfg.main_ratio}, cfg.critic_warmup, cfg.bc_coef,
                              "ablation: pruned {} % + RL, no SFT", "ablation"),
        f"rlrc_{main}_no_warmup": (sft["checkpoint"], sft_in, 0, cfg.bc_coef, "ablation: RLRC without critic warm-up",
                                   "ablation"),
        f"rlrc_{main}_no_bc": (sft["checkpoint"], sft_in, cfg.critic_warmup, 0.0, "ablation: RLRC without BC loss",
                               "ablation"),
    }
    if cfg.ablations:
        rl_runs.update(ablation_runs)
    for name, (init, init_in, warm, bc, label, kind) in rl_runs.items():
        f = stages.run(name, lambda init=init, warm=warm, bc=bc, name=name: rl_stage(cfg, init, demos, work / name,
                                                                                    warm, bc),
                       {"init": init_in, **rl_in, "critic_warmup": warm, "bc_coef": bc}, work / name)
        rows[name] = {"policy": f["checkpoint"], "backend": "torch", "label": label.format(main), "kind": kind}
    rlrc = rows[f"rlrc_{main}"]["policy"]
    rlrc_in = {"init": sft_in, **rl_in, "critic_warmup": cfg.critic_warmup, "bc_coef": cfg.bc_coef}
    base_fp32 = stages.run("onnx_base_fp32", lambda: onnx_stage(base, work / "bundle_base_fp32", "fp32"),
                           {**source, "code": _export_code_digest()}, work / "bundle_base_fp32")["bundle"]
    rlrc_fp32 = stages.run(f"onnx_rlrc_{main}_fp32",
                           lambda: onnx_stage(rlrc, work / f"bundle_rlrc_{main}_fp32", "fp32"),
                           {**rlrc_in, "code": _export_code_digest()}, work / f"bundle_rlrc_{main}_fp32")["bundle"]
    for prec in ("int8", "int4"):
        out = work / f"bundle_rlrc_{main}_{prec}"
        f = stages.run(f"quant_rlrc_{main}_{prec}", lambda prec=prec, out=out: onnx_stage(rlrc_fp32, out, prec),
                       {**rlrc_in, "code": _export_code_digest()}, out)
        rows[f"rlrc_{main}_{prec}"] = {"policy": f["bundle"], "backend": "onnxruntime", "kind": prec,
                                       "label": f"RLRC {main} % + {prec.upper()} (ONNX Runtime)"}
    order = ["base", *[f"pruned_{pct(r)}" for r in cfg.ratio_list], f"sft_{main}", f"rlrc_{main}",
             f"rlrc_{main}_int8", f"rlrc_{main}_int4", *(ablation_runs if cfg.ablations else ())]
    rows = {k: rows[k] for k in order}
    for name, row in rows.items():
        per_family = cfg.episodes if row["kind"] in MAIN_ROWS else cfg.ablation_episodes
        stage = {"base": None, **{f"pruned_{pct(r)}": f"prune_{pct(r)}" for r in cfg.ratio_list},
                 f"rlrc_{main}_int8": f"quant_rlrc_{main}_int8", f"rlrc_{main}_int4": f"quant_rlrc_{main}_int4"}.get(name, name)
        policy_in = stages.facts[stage]["inputs"] if stage else source
        for split in ("id", "ood"):
            f = stages.run(f"eval_{name}_{split}",
                           lambda row=row, split=split, name=name, n=per_family: eval_stage(
                               cfg, row["policy"], row["backend"], split, n, work / "evals" / f"{name}_{split}.json"),
                           {"policy": policy_in, "episodes_per_family": per_family})
            row[split] = f["overall"]
            row[f"{split}_per_family"] = f.get("per_family", {})

    # Sizes and latency (measured now, every row in one run, so ratios compare like with like).
    base_sizes = checkpoint_sizes(base)
    base_bf16 = 2 * base_sizes["total_params"]
    lat_rows = {**rows, "_base_onnx_fp32": {"policy": base_fp32, "backend": "onnxruntime"}}
    load = os.getloadavg()
    log.info("latency: %d rows x %d predictions, interleaved (load average %.2f)", len(lat_rows), cfg.latency_iters,
             load[0])
    from rlrc_runtime.bench import measure_interleaved

    latency = measure_interleaved({k: (v["policy"], v["backend"]) for k, v in lat_rows.items()}, cfg.latency_iters)
    for name, row in rows.items():
        if row["backend"] == "torch":
            sizes = checkpoint_sizes(row["policy"])
            row.update(sizes, weight_bytes=2 * sizes["total_params"], bytes_convention="bf16 (2 B/param)",
                       bytes_by_part={k: 2 * v for k, v in sizes["params_by_part"].items()})
            ref = "base"
        else:
            row.update(checkpoint_sizes(rlrc), **bundle_bytes(row["policy"]),
                       bytes_convention="stored bundle weight files")
            ref = "_base_onnx_fp32"
        row["memory_ratio_vs_base_bf16"] = base_bf16 / row["weight_bytes"]
        row["latency"] = latency[name]
        row["latency_ref"] = "base (torch)" if ref == "base" else "base exported to ONNX Runtime fp32"
        row["speedup_vs_base"] = latency[ref]["p50"] / latency[name]["p50"]
        row["speedup_vs_base_torch"] = latency["base"]["p50"] / latency[name]["p50"]
    result = {
        "schema": "rlrc-table/1",
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "config": asdict(cfg),
        "base": base,
        "base_success": {"id": rows["base"]["id"], "ood": rows["base"]["ood"]},
        "base_bf16_bytes": base_bf16,
        "base_bytes_by_part_bf16": {k: 2 * v for k, v in base_sizes["params_by_part"].items()},
        "base_onnx_fp32_latency": latency["_base_onnx_fp32"],
        "targets": targets(rows, main),
        "rows": rows,
        "stages": stages.facts,
        "wall_s_this_invocation": round(time.perf_counter() - t_start, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average_before_latency": list(load), "load_average_after": list(os.getloadavg())},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(cfg.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cfg.name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{cfg.name}.md").write_text(markdown(result))
    plot(result, out / f"{cfg.name}.png")
    print(markdown(result))
    return result


def targets(rows: dict[str, dict[str, Any]], main: str) -> dict[str, dict[str, Any]]:
    """The table's targets, read from its rows: each with the figures compared and whether it is met."""
    def rate(name: str, split: str) -> float:
        return rows[name][split]["success_rate"]

    base, sft, rlrc = "base", f"sft_{main}", f"rlrc_{main}"
    out = {
        "rlrc_id_within_5_points_of_base": {"rlrc": rate(rlrc, "id"), "base": rate(base, "id"),
                                            "met": rate(rlrc, "id") >= rate(base, "id") - 0.05},
        "rlrc_ood_at_least_sft": {"rlrc": rate(rlrc, "ood"), "sft": rate(sft, "ood"),
                                  "met": rate(rlrc, "ood") >= rate(sft, "ood")},
        "int4_id_within_3_points_of_rlrc": {"int4": rate(f"rlrc_{main}_int4", "id"), "rlrc": rate(rlrc, "id"),
                                            "met": rate(f"rlrc_{main}_int4", "id") >= rate(rlrc, "id") - 0.03},
    }
    if f"rl_no_sft_{main}" in rows:
        out["rl_without_sft_below_rlrc"] = {"rl_no_sft": rate(f"rl_no_sft_{main}", "id"), "rlrc": rate(rlrc, "id"),
                                            "met": rate(f"rl_no_sft_{main}", "id") < rate(rlrc, "id")}
    if "weight_bytes" in rows[f"rlrc_{main}_int4"]:
        ratio = rows[f"rlrc_{main}_int4"]["memory_ratio_vs_base_bf16"]
        out["int4_8x_smaller_than_base_bf16"] = {"ratio": ratio, "met": ratio >= 8.0}
    return out


def _digest(path: str) -> str:
    """A short digest of a checkpoint's config and tensor headers + sizes (cheap; changes with its weights' files)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(Path(path).glob("*")):
        if p.is_file() and (p.suffix in (".json",) or p.name.endswith(".safetensors")):
            h.update(p.name.encode())
            h.update(str(p.stat().st_size).encode())
            with p.open("rb") as f:
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _export_code_digest() -> str:
    """A digest of the export code, so bundles are rebuilt when the exporter or quantizer changes."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in ("export/onnx_export.py", "export/quantize_deploy.py", "export/bundle.py", "rlrc_runtime/embeddings.py"):
        p = root / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _ci(s: dict[str, Any]) -> str:
    lo, hi = s["ci95"]
    return f"{s['success_rate']:.0%} [{lo:.0%}, {hi:.0%}] (n={s['episodes']})"


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    m = result["machine"]
    lines = [
        f"# RLRC in miniature on the tabletop suite{' (quick smoke run)' if cfg['quick'] else ''}",
        "",
        f"- **Command:** `{result['command']}`",
        f"- **Machine:** {m['platform']}, {m['cpus']} CPUs, load average {m['load_average_before_latency'][0]:.2f} "
        f"before the latency run; **date** {result['date']}",
        f"- **Base:** `{result['base']}` ({_ci(result['base_success']['id'])} in-distribution); demos `{cfg['demos']}`",
        f"- **Episodes:** {cfg['episodes']} per family and split on the base, SFT, RLRC, INT8 and INT4 rows, "
        f"{cfg['ablation_episodes']} on the others. SFT: {cfg['sft_steps']} steps"
        f"{' with the benchmark recipe' if cfg['sft_recipe'] else ''}"
        f"{' and distillation from the base (weight ' + str(cfg['sft_distill']) + ')' if cfg.get('sft_distill') else ''}"
        f"; RL: {cfg['rl_updates']} PPO updates of "
        f"{cfg['rl_num_envs']} x {cfg['rl_rollout_steps']} env steps.",
        f"- **Memory:** the base in bf16 ({result['base_bf16_bytes'] / 1e6:.2f} MB) / the row's stored weights "
        "(checkpoint rows at 2 B/param; bundle rows: every graph, external-data and host-table file). "
        "**Speed-up:** p50 of one predict_action, every row timed interleaved in one run; ONNX Runtime rows against "
        "the base exported to ONNX Runtime fp32 (and, in the last column, against the base in PyTorch).",
        "",
        "| row | LLM params | decoder params | weight MB | memory × | speed-up × | vs torch base × | p50 ms "
        "| success id | success ood |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"].values():
        lines.append(
            f"| {r['label']} | {r['llm_params'] / 1e6:.2f} M | {r['decoder_params'] / 1e6:.3f} M "
            f"| {r['weight_bytes'] / 1e6:.2f} | {r['memory_ratio_vs_base_bf16']:.2f} | {r['speedup_vs_base']:.2f} "
            f"| {r['speedup_vs_base_torch']:.2f} | {r['latency']['p50']:.1f} | {_ci(r['id'])} | {_ci(r['ood'])} |")
    fams = list(next(iter(result["rows"].values()))["id_per_family"])
    lines += ["", "Success in-distribution per family:", "",
              "| row | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for r in result["rows"].values():
        lines.append(f"| {r['label']} | " + " | ".join(f"{r['id_per_family'].get(f, 0):.2f}" for f in fams) + " |")
    parts = ("vision", "projector", "decoder", "head", "embeddings", "norm", "graph")
    lines += ["", "Stored bytes by part (MB; base in bf16):", "",
              "| row | " + " | ".join(parts) + " | total |", "|---|" + "---|" * (len(parts) + 1)]
    lines.append("| base (bf16) | " + " | ".join(f"{result['base_bytes_by_part_bf16'].get(p, 0) / 1e6:.3f}"
                                                 for p in parts) + f" | {result['base_bf16_bytes'] / 1e6:.3f} |")
    for r in result["rows"].values():
        if r["backend"] != "torch":
            by = r["bytes_by_part"]
            lines.append(f"| {r['label']} | " + " | ".join(f"{by.get(p, 0) / 1e6:.3f}" for p in parts)
                         + f" | {r['weight_bytes'] / 1e6:.3f} |")
    lines += ["", "Targets:", ""]
    for name, t in result["targets"].items():
        figures = ", ".join(f"{k} {v:.3f}" for k, v in t.items() if k != "met")
        lines.append(f"- {name.replace('_', ' ')}: {figures} -> **{'met' if t['met'] else 'missed'}**")
    return "\n".join(lines) + "\n"


def _curve(path: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    p = Path(path)
    if path and p.is_file():
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
        if name not in stages:  # --no-ablations
            continue
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
