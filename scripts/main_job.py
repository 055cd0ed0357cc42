"""The main job: checkpoint -> compressed bundle -> latency benchmark -> ROS 2 node in the loop -> summary.

    bash scripts/main.sh [--checkpoint CKPT] [--data demos.hdf5] [--quantize int8|int4] [--work DIR]

Every stage is one of the commands the README documents, run as a subprocess with its log under
--work; the summary is read back from the JSON files they write (and written to WORK/summary.json).
The checkpoint defaults to the built-in benchmark's base policy when `benchmarks/base_policy.sh` has
built it, else a small OpenVLA-format model (random weights) made here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASE_POLICY = ROOT / "artifacts/base_policy/run/final"


def stage(name: str, args: list[str], log: Path) -> float:
    """Run one command, its output to ``log``; one line on the screen. Exits with its log's tail on failure."""
    print(f"[main] {name} ...", end="", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    dt = time.perf_counter() - t0
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        print(f" failed (exit {rc}); the last lines of {log}:\n{tail}", file=sys.stderr)
        sys.exit(rc)
    print(f" done in {dt:.0f} s (log: {log.relative_to(ROOT) if log.is_relative_to(ROOT) else log})")
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/main.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="OpenVLA-format checkpoint to compress (default: the base policy if built, "
                                         "else a small model made here)")
    ap.add_argument("--data", help="demonstration HDF5 for pruning calibration and SFT (default: generated here)")
    ap.add_argument("--quantize", default="int8", choices=["int8", "int4"], help="bundle precision (default: int8)")
    ap.add_argument("--prune-ratio", type=float, default=0.75, help="fraction of the decoder pruned (default: 0.75)")
    ap.add_argument("--sft-steps", type=int, default=None, help="SFT recovery steps (default: 20 on the small "
                                                                "model, 300 on the base policy)")
    ap.add_argument("--episodes", type=int, default=2, help="closed-loop episodes of the ROS 2 node (default: 2)")
    ap.add_argument("--work", default="artifacts/main", help="where every artifact goes (default: artifacts/main)")
    a = ap.parse_args(argv)

    work = (ROOT / a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MUJOCO_GL", "egl")
    if a.checkpoint:
        ckpt, what = Path(a.checkpoint).resolve(), f"the checkpoint {a.checkpoint}"
    elif (BASE_POLICY / "config.json").is_file():
        ckpt, what = BASE_POLICY, "the built-in benchmark's base policy (benchmarks/base_policy.sh)"
    else:
        ckpt, what = work / "tiny", "a small OpenVLA-format model with random weights (no base policy built yet)"
        if not (ckpt / "config.json").is_file():
            stage("make a small model", [str(BIN / "rlrc-export"), "make-tiny", "--out", str(ckpt), "--preset",
                                         "tiny-128"], work / "make_tiny.log")
    if not (ckpt / "config.json").is_file():
        print(f"[main] {ckpt} is not an OpenVLA-format checkpoint (no config.json); pass --checkpoint DIR of a "
              "checkpoint, or leave it out to use the base policy / a small model", file=sys.stderr)
        return 2
    print(f"[main] checkpoint: {what}")
    trained = ckpt == BASE_POLICY
    image_size = json.loads((ckpt / "config.json").read_text()).get("image_sizes", [128])[0]
    data = a.data
    if not data:
        data = str(work / "demos.hdf5")
        if not Path(data).is_file():
            stage("generate demonstrations", [str(BIN / "rlrc-sim"), "demos", "--episodes", "16" if trained else "8",
                                              "--out", data, "--image-size", str(image_size), "--no-progress"],
                  work / "demos.log")
    bundle = work / f"bundle_{a.quantize}"
    steps = a.sft_steps if a.sft_steps is not None else (300 if trained else 20)
    stage(f"rlrc-export pipeline: prune {a.prune_ratio:.0%}, SFT {steps} steps, {a.quantize}",
          [str(BIN / "rlrc-export"), "pipeline", "--checkpoint", str(ckpt), "--out", str(bundle), "--prune-ratio",
           str(a.prune_ratio), "--recover", "sft", "--data", data, "--sft-steps", str(steps), "--quantize",
           a.quantize, "--head", "action", "--overwrite"], work / "pipeline.log")
    stage("rlrc-bench --compare (bundle vs the checkpoint in PyTorch, interleaved)",
          [str(BIN / "rlrc-bench"), "--bundle", str(bundle), "--compare", str(ckpt), "--compare-backend", "torch",
           "--iters", "30", "--json", str(work / "bench.json"), "--plot", str(work / "bench.png"), "--no-progress"],
          work / "bench.log")
    stage(f"ROS 2 node on the bundle, simulated robot in the loop ({a.episodes} episodes)",
          [str(BIN / "rlrc-closed-loop"), "--bundle", str(bundle), "--family", "pick", "--episodes", str(a.episodes),
           "--image-size", str(image_size), "--out-dir", str(work), "--tag", "closed_loop"], work / "closed_loop.log")
    summary = summarize(work, bundle, ckpt, what, trained)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return 0


def summarize(work: Path, bundle: Path, ckpt: Path, what: str, trained: bool) -> dict:
    bench = json.loads((work / "bench.json").read_text())
    loop = json.loads((work / "closed_loop_closed_loop.json").read_text())
    mine, ref = bench["runs"][0], bench["runs"][1]
    diag = loop["vla_diagnostics"]
    return {
        "checkpoint": str(ckpt), "checkpoint_is": what, "bundle": str(bundle),
        "bundle_weight_bytes": mine["weights"]["total_bytes"], "checkpoint_weight_bytes": ref["weights"]["total_bytes"],
        "stages_ms": {k: {q: v[q] for q in ("p50", "p90", "p99")} for k, v in mine["stages_ms"].items()},
        "speedup_p50_end_to_end": bench["ratios"]["speedup_p50_end_to_end"],
        "weight_bytes_ratio": bench["ratios"]["weight_bytes_ratio"],
        "load_average": bench["load_average"],
        "actions_published": int(diag["actions_published"]), "holds_published": int(diag["holds_published"]),
        "node_latency_ms_p50_p95_p99": [float(diag[f"latency_ms.total.{q}"]) for q in ("p50", "p95", "p99")],
        "closed_loop": {"episodes": loop["episodes"], "successes": loop["successes"], "trained_policy": trained},
        "artifacts": {"bundle": str(bundle), "benchmark": str(work / "bench.json"), "plot": str(work / "bench.png"),
                      "closed_loop": str(work / "closed_loop_closed_loop.json"), "summary": str(work / "summary.json")},
    }


def print_summary(s: dict) -> None:
    mb = 1 / 2**20
    print("\n=== rlrc_runtime main job ===")
    print(f"checkpoint  {s['checkpoint_is']}")
    print(f"size        bundle {s['bundle_weight_bytes'] * mb:.1f} MiB vs checkpoint {s['checkpoint_weight_bytes'] * mb:.1f} MiB"
          f" ({s['weight_bytes_ratio']:.2f}x smaller)")
    print(f"speed       {s['speedup_p50_end_to_end']:.2f}x faster p50 end to end than the checkpoint in PyTorch "
          f"(interleaved; load average {s['load_average']['before'][0]:.2f})")
    print("latency     stage          p50     p90     p99  (ms)")
    for name, q in s["stages_ms"].items():
        if name.startswith("decode_") and name != "decode_step":
            continue  # the per-token rows are in the JSON
        print(f"            {name:<12} {q['p50']:7.2f} {q['p90']:7.2f} {q['p99']:7.2f}")
    node = s["node_latency_ms_p50_p95_p99"]
    print(f"ROS 2 node  {s['actions_published']} actions published, {s['holds_published']} holds; "
          f"inference p50/p95/p99 {node[0]:.1f}/{node[1]:.1f}/{node[2]:.1f} ms")
    cl = s["closed_loop"]
    print(f"closed loop {cl['successes']}/{cl['episodes']} episodes succeeded"
          + ("" if cl["trained_policy"] else " (random weights: success is not expected)"))
    for k, v in s["artifacts"].items():
        print(f"{k:<11} {v}")


if __name__ == "__main__":
    sys.exit(main())
