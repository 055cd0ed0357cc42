"""rlrc-closed-loop: the VLA node + the sim robot in one process, success rate to benchmarks/results/.

    rlrc-closed-loop --bundle B [--family pick] [--split id] [--episodes 20] [--max-steps 0]
                     [--rate-hz 20] [--tag NAME] [--out-dir benchmarks/results]

This is the end-to-end test of the robot stack: frames go out as realsense-ros Image messages,
the VLA lifecycle node (camera_source=topic) infers and publishes ~/action, the sim robot steps
MuJoCo with it. The success rate and its 95 % Wilson interval are written as
closed_loop_<tag>.json + .md; compare them with `rlrc-eval` on the same bundle and split.
Runs with its own ROS_DOMAIN_ID unless one is set, and localhost-only discovery.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_closed_loop(bundle: str, family: str = "pick", split: str = "id", episodes: int = 1, max_steps: int = 0,
                    seed: int = 0, rate_hz: float = 20.0, deadline_ms: float = 600000.0, backend: str = "auto",
                    device: str = "cpu", image_size: int = 128, timeout_s: float = 3600.0) -> dict[str, Any]:
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
        "bundle_path": str(bundle), "backend": backend, "device": device, "camera_source": "topic",
        "image_topic": topic, "rate_hz": float(rate_hz), "deadline_ms": float(deadline_ms),
        "camera_timeout_ms": 600000.0, "warmup_iterations": 1}.items()])
    sim = SimRobotNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "family": family, "split": split, "episodes": int(episodes), "max_steps": int(max_steps), "seed": int(seed),
        "image_size": int(image_size), "image_topic": topic, "action_topic": "/vla_node/action",
        "instruction_topic": "/vla_node/instruction", "frame_timeout_s": 2.0}.items()])
    executor.add_node(vla)
    executor.add_node(sim)
    start = time.monotonic()
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        if vla.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                vla.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f"the VLA node did not become active: {vla.diagnostics_values()['last_error']}")
        while not sim.done.is_set():
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"closed loop did not finish {episodes} episodes in {timeout_s:.0f} s")
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
    return {"bundle": str(bundle), "backend": backend, "device": device, "family": family, "split": split,
            "episodes": n, "successes": k, "success_rate": k / n if n else 0.0, "ci95": [lo, hi],
            "steps": [r["steps"] for r in results], "invalid_actions": sum(r["invalid_actions"] for r in results),
            "wall_s": round(time.monotonic() - start, 2),
            "vla_diagnostics": {key: v for key, v in diagnostics.items()
                                if key.startswith(("latency_ms.total", "latency_ms.end_to_end", "achieved_rate"))
                                or key in ("actions_published", "holds_published", "deadline_misses", "bundle_id")},
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlrc-closed-loop", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--bundle", required=True, help="bundle or checkpoint directory")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--family", default="pick")
    parser.add_argument("--split", default="id")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=0, help="0 = the family's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-hz", type=float, default=20.0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--tag", default=None, help="results name (default: <bundle dir>_<family>_<split>)")
    parser.add_argument("--note", default="", help="a line stored with the results")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    try:
        result = run_closed_loop(args.bundle, family=args.family, split=args.split, episodes=args.episodes,
                                 max_steps=args.max_steps, seed=args.seed, rate_hz=args.rate_hz, backend=args.backend,
                                 device=args.device, image_size=args.image_size, timeout_s=args.timeout_s)
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not trace back
        print(f"rlrc-closed-loop: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    tag = args.tag or f"{Path(args.bundle).name}_{args.family}_{args.split}"
    path = write_results(result, args.out_dir, tag, "rlrc-closed-loop " + " ".join(argv or sys.argv[1:]), args.note)
    lo, hi = result["ci95"]
    print(f"{result['successes']}/{result['episodes']} episodes succeeded "
          f"({result['success_rate']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]); results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
