"""The main job: checkpoint -> compressed bundle -> latency benchmark -> ROS 2 node in the loop -> summary.

    bash scripts/main.sh [--checkpoint CKPT] [--data demos.hdf5] [--quantize int8|int4] [--work DIR]
                         [--camera sim|realsense|recording [--recording R.db3] [--serial S] [--seconds N]]

Every stage is one of the commands the README documents, run as a subprocess with its log under
--work; the summary is read back from the JSON files they write (and written to WORK/summary.json).
The checkpoint defaults to the built-in benchmark's base policy when `benchmarks/base_policy.sh` has
built it, else a small OpenVLA-format model (random weights) made here.

The last stage runs the ROS 2 node on the bundle: with the simulated robot in the loop
(`rlrc-closed-loop`, the default), or as `rlrc-node` on a live RealSense camera (`--camera realsense`)
or a RealSense recording (`--camera recording --recording R.db3`) for `--seconds`, stopped with SIGINT
as a launcher stops it; its final /diagnostics come back through the node's `diagnostics_file`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
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
    ap.add_argument("--camera", default="sim", choices=["sim", "realsense", "recording"],
                    help="what feeds the ROS 2 node: the simulated robot in the loop (default), a live RealSense "
                         "camera, or a RealSense recording (--recording)")
    ap.add_argument("--recording", default="", help="with --camera recording: the RealSense recording (.db3)")
    ap.add_argument("--serial", default="", help="with --camera realsense: the camera's serial (default: the first)")
    ap.add_argument("--instruction", default="pick up the red block",
                    help="with --camera realsense|recording: the task given to the node")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="with --camera realsense|recording: how long the node runs once active (default: 20)")
    a = ap.parse_args(argv)
    if a.camera == "recording" and not Path(a.recording).is_file():
        print(f"[main] --camera recording needs --recording FILE.db3 (got {a.recording!r}); record one with "
              "`rlrc-calib capture --record`", file=sys.stderr)
        return 2

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
    if a.camera == "sim":
        stage(f"ROS 2 node on the bundle, simulated robot in the loop ({a.episodes} episodes)",
              [str(BIN / "rlrc-closed-loop"), "--bundle", str(bundle), "--family", "pick", "--episodes",
               str(a.episodes), "--image-size", str(image_size), "--out-dir", str(work), "--tag", "closed_loop"],
              work / "closed_loop.log")
        loop = json.loads((work / "closed_loop_closed_loop.json").read_text())
        node, source = loop["vla_diagnostics"], str(work / "closed_loop_closed_loop.json")
    else:
        node = run_node(bundle, work, a.camera, recording=a.recording, serial=a.serial, instruction=a.instruction,
                        seconds=a.seconds)
        loop, source = None, str(work / "node_diagnostics.json")
    summary = summarize(work, bundle, ckpt, what, trained, node, source, loop)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return 0


FAILED = ("configure failed", "activate failed", "error")


def run_node(bundle: Path, work: Path, camera: str, *, recording: str, serial: str, instruction: str,
             seconds: float) -> dict[str, str]:
    """`rlrc-node` on the bundle with camera_source=``camera`` until ``seconds`` after it is active (a
    recording: until it ends), then SIGINT; returns its last diagnostics values. Exits 2, naming the
    node's error, when it never becomes active or publishes no action."""
    diag, log = work / "node_diagnostics.json", work / "node.log"
    diag.unlink(missing_ok=True)
    params = {"bundle_path": bundle, "camera_source": camera, "autostart": True, "instruction": instruction,
              "diagnostics_file": diag, "diagnostics_period_s": 0.5}
    if camera == "recording":
        params["recording_path"] = Path(recording).resolve()
    if serial:
        params["realsense_serial"] = serial
    args = [str(BIN / "rlrc-node"), "--ros-args"] + [x for k, v in params.items() for x in ("-p", f"{k}:={_yaml(v)}")]
    print(f"[main] ROS 2 node on the bundle, {camera} camera ...", end="", flush=True)
    t0 = time.perf_counter()
    values: dict[str, str] = {}
    with log.open("w") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        active_since, failed = None, ""
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                values = _read_values(diag) or values
                state = values.get("lifecycle", "")
                if state in FAILED:
                    failed = state
                    break
                if state == "active" and active_since is None:
                    active_since = time.perf_counter()
                if values.get("recording_finished") == "true" or (
                        active_since is not None and time.perf_counter() - active_since > seconds):
                    break
                if active_since is None and time.perf_counter() - t0 > 600:
                    break
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    values = _read_values(diag) or values
    if failed or not values or int(values.get("actions_published", "0")) == 0:
        reason = values.get("last_error") or "no diagnostics were written"
        print(f" failed: the node published no action ({failed or values.get('lifecycle', 'not started')}: "
              f"{reason}); its log: {log}", file=sys.stderr)
        sys.exit(2)
    print(f" done in {time.perf_counter() - t0:.0f} s (log: {log})")
    return values


def _yaml(value: object) -> str:
    """A -p value: booleans and numbers as YAML reads them, anything else a single-quoted YAML string
    (so that a serial made of digits stays a string)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _read_values(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())["values"]
    except (OSError, ValueError, KeyError):
        return {}


def summarize(work: Path, bundle: Path, ckpt: Path, what: str, trained: bool, diag: dict[str, str], node_source: str,
              loop: dict | None) -> dict:
    bench = json.loads((work / "bench.json").read_text())
    mine, ref = bench["runs"][0], bench["runs"][1]
    return {
        "checkpoint": str(ckpt), "checkpoint_is": what, "bundle": str(bundle),
        "bundle_weight_bytes": mine["weights"]["total_bytes"], "checkpoint_weight_bytes": ref["weights"]["total_bytes"],
        "stages_ms": {k: {q: v[q] for q in ("p50", "p90", "p99")} for k, v in mine["stages_ms"].items()},
        "speedup_p50_end_to_end": bench["ratios"]["speedup_p50_end_to_end"],
        "weight_bytes_ratio": bench["ratios"]["weight_bytes_ratio"],
        "load_average": bench["load_average"],
        "actions_published": int(diag["actions_published"]), "holds_published": int(diag["holds_published"]),
        "node_latency_ms_p50_p95_p99": [float(diag[f"latency_ms.total.{q}"]) for q in ("p50", "p95", "p99")],
        "camera_source": diag.get("camera_source", "topic"),
        "closed_loop": None if loop is None else {"episodes": loop["episodes"], "successes": loop["successes"],
                                                  "trained_policy": trained},
        "artifacts": {"bundle": str(bundle), "benchmark": str(work / "bench.json"), "plot": str(work / "bench.png"),
                      "node": node_source, "summary": str(work / "summary.json")},
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
    if cl is not None:
        print(f"closed loop {cl['successes']}/{cl['episodes']} episodes succeeded"
              + ("" if cl["trained_policy"] else " (random weights: success is not expected)"))
    else:
        print(f"camera      {s['camera_source']} (no success rate without the simulated robot)")
    for k, v in s["artifacts"].items():
        print(f"{k:<11} {v}")


if __name__ == "__main__":
    sys.exit(main())
