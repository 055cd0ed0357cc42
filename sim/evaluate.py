"""``rlrc-eval``: success rate of any policy on the built-in tabletop suite, through the Policy API.

Every episode is (family, seed) with seeds starting at ``--seed`` (default 100000, disjoint from
the seeds ``rlrc-sim demos`` uses), so an evaluation is deterministic for a seed and the same
episodes are scored for every policy. Episodes can be spread over worker processes, each loading
its own copy of the policy. Reported per family: successes / episodes with a 95 % Wilson interval,
mean episode length and per-step policy latency; optional GIFs, a contact sheet and a bar plot.

Action mapping: the policy's 7-D action goes to the env unchanged except the gripper, which is
clipped to the env's [0, 1] (OpenVLA leaves the gripper dimension unnormalised, so a decoded bin
centre can fall a hair outside the training range).
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from rlrc_runtime.chunking import ChunkExecution, ChunkExecutor
from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError

log = logging.getLogger(__name__)

Z95 = 1.959963984540054


@dataclass(frozen=True)
class EvalConfig:
    policy: str = field(metadata={"help": "checkpoint or bundle directory"})
    suite: str = field(default="tabletop", metadata={"help": "benchmark suite"})
    split: str = field(default="id", metadata={"help": "split: id, ood (a mix) or a specific ood_* split"})
    episodes: int = field(default=100, metadata={"help": "episodes per family"})
    families: str | None = field(default=None, metadata={"help": "comma-separated families; default: all"})
    backend: str = field(default="torch", metadata={"help": "inference backend of load_policy"})
    unnorm_key: str | None = field(default=None, metadata={"help": "norm_stats key (needed with several datasets)"})
    seed: int = field(default=100_000, metadata={"help": "seed of the first episode of each family"})
    image_size: int = field(default=128, metadata={"help": "rendered frame side, pixels"})
    workers: int = field(default=1, metadata={"help": "worker processes (each loads the policy)"})
    json: str | None = field(default=None, metadata={"help": "write the report as JSON here"})
    video_dir: str | None = field(default=None, metadata={"help": "write GIFs and a contact sheet of the first episodes here"})
    video_episodes: int = field(default=1, metadata={"help": "episodes per family recorded to --video-dir"})
    plot: str | None = field(default=None, metadata={"help": "write a PNG bar plot of success per family"})
    chunk_mode: str = field(default="open_loop", metadata={"help": "policies that predict action chunks: "
                                                                   "'open_loop' (execute the chunk, then re-plan) or "
                                                                   "'ensemble' (ACT temporal ensembling)",
                                                           "choices": ["open_loop", "ensemble"]})
    replan: int = field(default=0, metadata={"help": "chunked policies: control steps between inferences; 0 = the "
                                                     "mode's default (open loop: the chunk length, ensemble: 1)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        ChunkExecution(self.chunk_mode, self.replan)  # validates both
        if self.episodes < 1 or self.workers < 1 or self.video_episodes < 0:
            raise ConfigError(f"--episodes={self.episodes} and --workers={self.workers} must be >= 1, "
                              f"--video-episodes={self.video_episodes} >= 0")


@dataclass(frozen=True)
class EpisodeResult:
    family: str
    seed: int
    success: bool
    steps: int
    step_ms: list[float]


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def to_env_action(action: np.ndarray) -> np.ndarray:
    out = np.asarray(action, dtype=np.float32).copy()
    out[6] = np.clip(out[6], 0.0, 1.0)
    return out


# Per-process state for pool workers: one policy per process.
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: EvalConfig, threads: int) -> None:
    if threads:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    from rlrc_runtime import load_policy

    _WORKER["policy"] = load_policy(cfg.policy, backend=cfg.backend)
    _WORKER["cfg"] = cfg


def _close_worker() -> None:
    for env in _WORKER.pop("envs", {}).values():
        env.close()
    if "policy" in _WORKER:
        _WORKER.pop("policy").close()


def run_episode(family: str, seed: int, record: bool = False) -> tuple[EpisodeResult, list[np.ndarray]]:
    """One episode with the worker's policy; frames returned when ``record``."""
    from sim import make_env

    cfg: EvalConfig = _WORKER["cfg"]
    policy = _WORKER["policy"]
    envs = _WORKER.setdefault("envs", {})
    if family not in envs:  # one env per family and worker: building one compiles a model and a GL context
        envs[family] = make_env(suite=cfg.suite, family=family, split=cfg.split, seed=seed, image_size=cfg.image_size)
    env = envs[family]
    obs, info = env.reset(seed=seed)
    frames = [obs["image"]] if record else []
    step_ms: list[float] = []
    success = False
    steps = 0
    chunks = (ChunkExecutor(policy.action_chunk, ChunkExecution(cfg.chunk_mode, cfg.replan))
              if policy.action_chunk > 1 else None)
    while True:
        if chunks is None or chunks.needs_plan():
            res = policy.infer(obs["image"], obs["instruction"], cfg.unnorm_key)
            step_ms.append(res.timings_ms["total"])  # one entry per inference
            if chunks is not None:
                chunks.add(res.chunk)
        action = res.action if chunks is None else chunks.action()
        obs, reward, terminated, truncated, info = env.step(to_env_action(action))
        steps += 1
        if record:
            frames.append(obs["image"])
        if terminated or truncated:
            success = bool(info.get("success", terminated))
            break
    return EpisodeResult(family, seed, success, steps, step_ms), frames


def _job(args: tuple[str, int, bool]) -> tuple[EpisodeResult, list[np.ndarray]]:
    return run_episode(*args)


def parallel_map(fn: Callable[[Any], Any], jobs: list[Any], workers: int, initializer: Callable[..., None],
                 initargs: tuple[Any, ...]) -> Iterator[Any]:
    """``fn`` over ``jobs`` in ``workers`` spawned processes, results in job order.

    A worker that dies (killed, out of memory, a crash inside MuJoCo or EGL) or an initializer that
    fails ends the evaluation with an error that says so, instead of waiting forever for the lost
    episode (what ``multiprocessing.Pool`` does). An exception raised by ``fn`` comes through as is.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    done = 0
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer,
                             initargs=initargs) as pool:
        try:
            for out in pool.map(fn, jobs):
                done += 1
                yield out
        except BrokenProcessPool as exc:
            raise RuntimeError(f"an evaluation worker process died after {done} of {len(jobs)} episodes (killed, "
                               "out of memory, or a crash while loading the policy or inside MuJoCo/EGL); rerun "
                               "with --workers 1 to see the failure in this process") from exc
        finally:
            pool.shutdown(cancel_futures=True)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation and return the report dict (also written to --json/--plot/--video-dir)."""
    from sim import list_families

    families = cfg.families.split(",") if cfg.families else list_families(cfg.suite)
    unknown = sorted(set(families) - set(list_families(cfg.suite)))
    if unknown:
        raise ConfigError(f"--families {unknown} not in {list_families(cfg.suite)}")
    jobs = [(f, cfg.seed + i, i < cfg.video_episodes and cfg.video_dir is not None)
            for f in families for i in range(cfg.episodes)]
    results: list[EpisodeResult] = []
    videos: dict[str, list[list[np.ndarray]]] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=f"eval {cfg.split}", unit="ep", disable=not cfg.progress, dynamic_ncols=True)
    start = time.perf_counter()
    if cfg.workers == 1:
        _init_worker(cfg, threads=0)
        outputs = map(_job, jobs)
    else:
        cores = os.cpu_count() or 1
        outputs = parallel_map(_job, jobs, cfg.workers, _init_worker, (cfg, max(1, cores // cfg.workers)))
    try:
        for res, frames in outputs:
            results.append(res)
            if frames:
                videos.setdefault(res.family, []).append(frames)
            bar.update(1)
            done = [r.success for r in results]
            bar.set_postfix(success=f"{np.mean(done):.2f}")
    finally:
        bar.close()
        if cfg.workers == 1:
            _close_worker()
    report = build_report(cfg, families, results, time.perf_counter() - start)
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(report, indent=2) + "\n")
    if cfg.video_dir and videos:
        save_videos(Path(cfg.video_dir), videos)
    if cfg.plot:
        plot_report(report, cfg.plot)
    return report


def build_report(cfg: EvalConfig, families: list[str], results: list[EpisodeResult], wall_s: float) -> dict[str, Any]:
    per_family = {}
    for fam in families:
        rs = [r for r in results if r.family == fam]
        k, n = sum(r.success for r in rs), len(rs)
        lo, hi = wilson_interval(k, n)
        lat = np.concatenate([r.step_ms for r in rs]) if rs else np.zeros(0)
        per_family[fam] = {
            "episodes": n,
            "successes": k,
            "success_rate": k / n if n else 0.0,
            "ci95": [lo, hi],
            "mean_episode_length": float(np.mean([r.steps for r in rs])) if rs else 0.0,
            "step_latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                                "p95": float(np.percentile(lat, 95))} if lat.size else {},
        }
    k = sum(r.success for r in results)
    n = len(results)
    lo, hi = wilson_interval(k, n)
    return {
        "schema": "rlrc-eval/1",
        "policy": cfg.policy,
        "backend": cfg.backend,
        "suite": cfg.suite,
        "split": cfg.split,
        "seed": cfg.seed,
        "episodes_per_family": cfg.episodes,
        "families": per_family,
        "overall": {
            "episodes": n,
            "successes": k,
            "success_rate": k / n if n else 0.0,
            "ci95": [lo, hi],
            "mean_family_success": float(np.mean([f["success_rate"] for f in per_family.values()])),
        },
        "wall_s": wall_s,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg),
    }


def save_videos(out: Path, videos: dict[str, list[list[np.ndarray]]]) -> None:
    """One GIF per recorded episode and a contact sheet (every 4th frame of each episode)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for fam, episodes in videos.items():
        for i, frames in enumerate(episodes):
            ims = [Image.fromarray(f) for f in frames]
            ims[0].save(out / f"{fam}_{i}.gif", save_all=True, append_images=ims[1:], duration=100, loop=0)
            rows.append(np.concatenate(frames[::4][:12], axis=1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    Image.fromarray(sheet).save(out / "contact_sheet.png")


def plot_report(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(report["families"])
    rates = [report["families"][f]["success_rate"] for f in fams]
    # max(0, .): at 0 or n successes the interval's end equals the rate up to float rounding.
    lo = [max(0.0, r - report["families"][f]["ci95"][0]) for r, f in zip(rates, fams)]
    hi = [max(0.0, report["families"][f]["ci95"][1] - r) for r, f in zip(rates, fams)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(fams, rates, yerr=[lo, hi], capsize=4, color="#4c72b0")
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (95 % Wilson CI)")
    ax.set_title(f"{Path(report['policy']).name} · split {report['split']} · {report['episodes_per_family']} ep/family")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'family':10s} {'success':>9s} {'95% CI':>15s} {'len':>6s} {'ms/step':>8s}"]
    for fam, r in report["families"].items():
        lat = r["step_latency_ms"].get("p50", float("nan"))
        lines.append(f"{fam:10s} {r['successes']:>4d}/{r['episodes']:<4d} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
                     f"{r['mean_episode_length']:>8.1f} {lat:>8.1f}")
    o = report["overall"]
    lines.append(f"{'overall':10s} {o['successes']:>4d}/{o['episodes']:<4d} [{o['ci95'][0]:.2f}, {o['ci95'][1]:.2f}]"
                 f"  mean of families {o['mean_family_success']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_command("rlrc-eval", __doc__, EvalConfig, lambda cfg: format_table(evaluate(cfg)), argv, logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
