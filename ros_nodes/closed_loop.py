"""rlrc-closed-loop: the VLA node + the sim robot in one process, success rate to benchmarks/results/.

    rlrc-closed-loop --bundle B [--family pick] [--split id] [--episodes 20] [--max-steps 0]
                     [--rate-hz 20] [--chunk-mode open_loop|ensemble] [--tag NAME] [--out-dir benchmarks/results]

This is the end-to-end test of the robot stack: frames go out as realsense-ros Image messages,
the VLA lifecycle node (camera_source=topic) infers and publishes ~/action, the sim robot steps
MuJoCo with it. The success rate and its 95 % Wilson interval are written as
closed_loop_<tag>.json + .md; compare them with `rlrc-eval` on the same bundle and split.
Runs with its own ROS_DOMAIN_ID unless one is set, and localhost-only discovery.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError, RLRCError


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ClosedLoopConfig:
    """One closed-loop run of the VLA node and the sim robot (the flags of rlrc-closed-loop)."""

    bundle: str = field(metadata={"help": "bundle or checkpoint directory"})
    family: str = field(default="pick", metadata={"help": "task family of the tabletop suite"})
    split: str = field(default="id", metadata={"help": "split of the suite"})
    episodes: int = field(default=20, metadata={"help": "episodes to run"})
    max_steps: int = field(default=0, metadata={"help": "episode length limit in control steps; 0 = the family's"})
    seed: int = field(default=0, metadata={"help": "seed of the first episode"})
    rate_hz: float = field(default=20.0, metadata={"help": "the node's control rate"})
    deadline_ms: float = field(default=600000.0, metadata={"help": "the node's deadline_ms (a CPU run is slow)"})
    backend: str = field(default="auto", metadata={"help": "rlrc_runtime.load_policy backend"})
    device: str = field(default="cpu", metadata={"help": "backend device"})
    image_size: int = field(default=128, metadata={"help": "sim camera side, pixels"})
    chunk_mode: str = field(default="open_loop", metadata={"help": "action-chunk policies: the node's chunk_mode",
                                                           "choices": ["open_loop", "ensemble"]})
    chunk_replan: int = field(default=0, metadata={"help": "action-chunk policies: the node's chunk_replan"})
    timeout_s: float = field(default=3600.0, metadata={"help": "give up after this long"})
    tag: str = field(default="", metadata={"help": "results name (default: <bundle dir>_<family>_<split>)"})
    note: str = field(default="", metadata={"help": "a line stored with the results"})
    out_dir: str = field(default="benchmarks/results", metadata={"help": "where closed_loop_TAG.json/.md go"})

    def __post_init__(self) -> None:
        for flag, value, low in (("episodes", self.episodes, 1), ("max-steps", self.max_steps, 0),
                                 ("image-size", self.image_size, 16), ("chunk-replan", self.chunk_replan, 0)):
            if value < low:
                raise ConfigError(f"--{flag} {value}: expected >= {low}")
        for flag, value in (("rate-hz", self.rate_hz), ("deadline-ms", self.deadline_ms), ("timeout-s", self.timeout_s)):
            if not value > 0:
                raise ConfigError(f"--{flag} {value}: expected > 0")


def run_closed_loop(cfg: ClosedLoopConfig) -> dict[str, Any]:
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from ros_nodes.sim_robot_node import SimRobotNode
    from ros_nodes.vla_node import VLANode

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    topic = "/closed_loop/camera/color/image_raw"
    vla = VLANode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "bundle_path": cfg.bundle, "backend": cfg.backend, "device": cfg.device, "camera_source": "topic",
        "image_topic": topic, "rate_hz": float(cfg.rate_hz), "deadline_ms": float(cfg.deadline_ms),
        "chunk_mode": cfg.chunk_mode, "chunk_replan": int(cfg.chunk_replan),
        "camera_timeout_ms": 600000.0, "warmup_iterations": 1}.items()])
    sim = SimRobotNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "family": cfg.family, "split": cfg.split, "episodes": int(cfg.episodes), "max_steps": int(cfg.max_steps),
        "seed": int(cfg.seed), "image_size": int(cfg.image_size), "image_topic": topic,
        "action_topic": "/vla_node/action",
        "instruction_topic": "/vla_node/instruction", "frame_timeout_s": 2.0}.items()])
    executor.add_node(vla)
    executor.add_node(sim)
    start = time.monotonic()
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        if vla.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                vla.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RLRCError(f"the VLA node did not become active: {vla.diagnostics_values()['last_error']}")
        while not sim.done.is_set():
            if time.monotonic() - start > cfg.timeout_s:
                raise RLRCError(f"the closed loop did not finish {cfg.episodes} episodes in {cfg.timeout_s:.0f} s "
                                "(--timeout-s)")
            executor.spin_once(timeout_sec=0.05)
        diagnostics = vla.diagnostics_values()
    finally:
        vla.trigger_shutdown() if vla._state_machine.current_state[1] != "finalized" else None
        executor.shutdown()
        sim.destroy_node()
        vla.destroy_node()
        rclpy.try_shutdown(context=context)
    results = list(sim.results)
    n, k = len(results), sum(r["success"] for r in results)
    lo, hi = wilson(k, n)
    return {"bundle": cfg.bundle, "backend": cfg.backend, "device": cfg.device, "family": cfg.family,
            "split": cfg.split, "chunk_mode": cfg.chunk_mode, "chunk_replan": cfg.chunk_replan,
            "episodes": n, "successes": k, "success_rate": k / n if n else 0.0, "ci95": [lo, hi],
            "steps": [r["steps"] for r in results], "invalid_actions": sum(r["invalid_actions"] for r in results),
            "wall_s": round(time.monotonic() - start, 2),
            "vla_diagnostics": {key: v for key, v in diagnostics.items()
                                if key.startswith(("latency_ms.total", "latency_ms.end_to_end", "achieved_rate"))
                                or key in ("actions_published", "holds_published", "deadline_misses", "bundle_id",
                                           "inferences", "inference_rate_hz", "action_chunk")},
            "per_episode": results}


def write_results(result: dict[str, Any], out_dir: Path, tag: str, command: str, note: str = "") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}",
            "note": note}
    path = out_dir / f"closed_loop_{tag}.json"
    path.write_text(json.dumps({**meta, **result}, indent=2) + "\n")
    lo, hi = result["ci95"]
    md = [f"# Closed loop: {tag}", "", f"- command: `{command}`", f"- date: {meta['date']}",
          f"- machine: {meta['machine']} (no GPU: timings are not representative)", ""]
    if note:
        md += [f"> {note}", ""]
    md += ["| bundle | family | split | episodes | success rate | 95 % CI | total p50 ms | wall s |",
           "|---|---|---|---|---|---|---|---|",
           f"| {result['vla_diagnostics'].get('bundle_id', result['bundle'])} | {result['family']} | {result['split']} "
           f"| {result['episodes']} | {result['success_rate']:.3f} | [{lo:.3f}, {hi:.3f}] "
           f"| {result['vla_diagnostics'].get('latency_ms.total.p50', '-')} | {result['wall_s']} |", ""]
    (out_dir / f"closed_loop_{tag}.md").write_text("\n".join(md))
    return path


def run(cfg: ClosedLoopConfig) -> str:
    result = run_closed_loop(cfg)
    tag = cfg.tag or f"{Path(cfg.bundle).name}_{cfg.family}_{cfg.split}"
    path = write_results(result, Path(cfg.out_dir), tag, "rlrc-closed-loop " + " ".join(sys.argv[1:]), cfg.note)
    lo, hi = result["ci95"]
    return (f"{result['successes']}/{result['episodes']} episodes succeeded "
            f"({result['success_rate']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]); results: {path}")


def main(argv: list[str] | None = None) -> int:
    return run_command("rlrc-closed-loop", __doc__, ClosedLoopConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
