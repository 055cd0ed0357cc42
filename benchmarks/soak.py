"""Soak: the VLA node in a closed loop for a long time; memory slope, latency per window, no unsafe action.

    python benchmarks/soak.py                       # the published run: 60 min on the sim robot
    python benchmarks/soak.py --minutes 2 --window-min 0.5 --policy BUNDLE_OR_CHECKPOINT
    python benchmarks/soak.py --source recording --recording frames.db3   # a recording, looped

Everything runs in one process with real rclpy: the VLA lifecycle node (camera_source=topic), a
frame source, and a monitor node that checks every message the VLA node publishes.

- ``--source sim``: the sim robot (ros_nodes/sim_robot_node.py, MuJoCo) steps on each ~/action and
  publishes the next frame, episode after episode (ros_nodes/closed_loop.py is the same loop).
- ``--source recording``: the frames of a RealSense recording (read once with pyrealsense2) are
  published in a loop at ``--fps``, freshly stamped, as realsense-ros would publish them.

Measured: resident memory (RSS of the whole process, /proc) every ``window / 10`` s and its slope
(MB/hour, least squares, the first window left out as warm-up when there are two or more);
per window: p50/p99 end-to-end latency (frame stamp -> the command's arrival at the monitor),
actions, frames received, deadline misses (stale frames + late actions, the node's counters) and
unsafe messages. Unsafe = non-finite or outside the limits (ros_nodes.safety.CommandCheck: the
twist and gripper clamps, the policy's action range): the run is a failure unless it is 0.

Outputs: ``--out``.json (config, machine, windows, RSS samples, totals), ``--out``.md (the table)
and ``--out``.png (RSS with its fit; p50/p99 per window). CPU timings are not robot timings:
compare them as ratios within one run.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shlex
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Float64

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError
from ros_nodes.images import fill_image_msg
from ros_nodes.safety import CommandCheck, CommandLimits
from ros_nodes.vla_node import VLANode

log = logging.getLogger("soak")

TOPIC = "/soak/camera/color/image_raw"
SOURCES = ("sim", "recording")


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = field(default=60.0, metadata={"help": "how long the node runs"})
    window_min: float = field(default=5.0, metadata={"help": "length of one latency / count window, minutes"})
    policy: str = field(default="", metadata={"help": "bundle or checkpoint directory; empty = a tiny-128 "
                                                      "checkpoint with random weights, built under --work"})
    backend: str = field(default="auto", metadata={"help": "rlrc_runtime.load_policy backend"})
    source: str = field(default="sim", metadata={"help": "where frames come from", "choices": list(SOURCES)})
    recording: str = field(default="", metadata={"help": "RealSense recording (.db3) looped by --source recording"})
    fps: float = field(default=15.0, metadata={"help": "frame rate of --source recording"})
    rate_hz: float = field(default=10.0, metadata={"help": "the node's control rate"})
    deadline_ms: float = field(default=1000.0, metadata={"help": "the node's deadline_ms"})
    image_size: int = field(default=128, metadata={"help": "sim camera side, pixels"})
    work: str = field(default="artifacts/soak", metadata={"help": "where the default policy is built"})
    out: str = field(default="benchmarks/results/soak", metadata={"help": "results stem: OUT.json, OUT.md, OUT.png"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar and one line per window"})

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ConfigError(f"--minutes {self.minutes}: expected > 0")
        if not 0 < self.window_min <= self.minutes:
            raise ConfigError(f"--window-min {self.window_min}: expected > 0 and <= --minutes {self.minutes}")
        if self.source == "recording" and not Path(self.recording).is_file():
            raise ConfigError(f"--recording {self.recording!r}: --source recording needs an existing .db3 file "
                              "(make one with `rlrc-calib capture` or the sim robot's record_path)")
        if not self.fps > 0 or not self.rate_hz > 0 or not self.deadline_ms > 0:
            raise ConfigError(f"--fps {self.fps}, --rate-hz {self.rate_hz}, --deadline-ms {self.deadline_ms}: "
                              "expected > 0")

    @property
    def window_s(self) -> float:
        return self.window_min * 60.0

    @property
    def sample_s(self) -> float:
        """RSS sample period: ten samples per window, between 0.5 s and 30 s."""
        return min(30.0, max(0.5, self.window_s / 10.0))


# -- measurements -------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident memory of this process, MB (VmRSS from /proc/self/status; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("/proc/self/status has no VmRSS line: RSS is measured on Linux only")


def slope_mb_per_hour(samples: list[tuple[float, float]], skip_s: float) -> float:
    """Least-squares slope of (seconds, MB) samples after ``skip_s`` (all of them if too few remain)."""
    kept = [s for s in samples if s[0] >= skip_s]
    if len(kept) < 3:
        kept = samples
    if len(kept) < 2:
        return 0.0
    t, mb = np.array(kept).T
    return float(np.polyfit(t / 3600.0, mb, 1)[0])


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "n": int(arr.size)}


class Monitor(Node):
    """Subscribes to the VLA node's outputs and the camera topic; checks every message.

    A ~/cmd_twist whose stamp is a frame's stamp is an action (latency = its arrival - the stamp);
    a hold is stamped when it is sent. Callbacks run on the executor thread; `take_window` reads
    from the main loop, hence the lock.
    """

    def __init__(self, context: Any, check: CommandCheck, deadline_ms: float) -> None:
        super().__init__("soak_monitor", context=context)
        self.check, self.deadline_ms = check, deadline_ms
        self._lock = threading.Lock()
        self._frames: deque[int] = deque(maxlen=1000)  # recent frame stamps, ns
        self._frame_set: set[int] = set()
        self.latencies_ms: list[float] = []
        self.counts = {"actions": 0, "twists": 0, "grippers": 0, "unsafe": 0, "late_at_arrival": 0}
        self.unsafe_examples: list[str] = []
        self.create_subscription(Image, TOPIC, self._on_frame, qos_profile_sensor_data)
        self.create_subscription(Float32MultiArray, "/vla_node/action", self._on_action, 100)
        self.create_subscription(TwistStamped, "/vla_node/cmd_twist", self._on_twist, 100)
        self.create_subscription(Float64, "/vla_node/gripper", self._on_gripper, 100)

    def _unsafe(self, problem: str | None) -> None:
        if problem is not None:
            self.counts["unsafe"] += 1
            if len(self.unsafe_examples) < 10:
                self.unsafe_examples.append(problem)

    def _on_frame(self, msg: Any) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            if len(self._frames) == self._frames.maxlen:
                self._frame_set.discard(self._frames[0])
            self._frames.append(stamp)
            self._frame_set.add(stamp)

    def _on_action(self, msg: Any) -> None:
        with self._lock:
            self.counts["actions"] += 1
            self._unsafe(self.check.action(msg.data))

    def _on_gripper(self, msg: Any) -> None:
        with self._lock:
            self.counts["grippers"] += 1
            self._unsafe(self.check.gripper(msg.data))

    def _on_twist(self, msg: Any) -> None:
        arrival = self.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        v = msg.twist
        with self._lock:
            self.counts["twists"] += 1
            self._unsafe(self.check.twist((v.linear.x, v.linear.y, v.linear.z), (v.angular.x, v.angular.y, v.angular.z)))
            if stamp in self._frame_set:
                latency = (arrival - stamp) / 1e6
                self.latencies_ms.append(latency)
                self.counts["late_at_arrival"] += latency > self.deadline_ms

    def take_window(self) -> tuple[list[float], dict[str, int]]:
        """The latencies since the last call and the running counts."""
        with self._lock:
            latencies, self.latencies_ms = self.latencies_ms, []
            return latencies, dict(self.counts)


# -- the loop -----------------------------------------------------------------------------------------
def default_policy(work: Path) -> Path:
    """A tiny-128 checkpoint (random weights) under ``work``, built once."""
    from export.tiny import make_tiny

    path = work / "tiny-128"
    if not (path / "config.json").is_file():
        log.info("building a tiny-128 checkpoint in %s", path)
        make_tiny(path, preset="tiny-128", overwrite=True)
    return path


class RecordingLoop(Node):
    """The frames of a RealSense recording, published on TOPIC in a loop at ``fps``, stamped now."""

    def __init__(self, context: Any, recording: str, fps: float) -> None:
        from rlrc_runtime.camera import read_recording

        super().__init__("soak_recording", context=context)
        frames = read_recording(recording)
        if not frames:
            raise ConfigError(f"--recording {recording}: no colour frames could be read from it")
        self.messages = [fill_image_msg(Image(), f.image) for f in frames]
        self._i = 0
        self._pub = self.create_publisher(Image, TOPIC, 2)
        self.create_timer(1.0 / fps, self._publish)

    def _publish(self) -> None:
        msg = self.messages[self._i % len(self.messages)]
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pub.publish(msg)
        self._i += 1


def make_nodes(cfg: SoakConfig, context: Any, policy: Path) -> tuple[VLANode, Node]:
    """(VLA node, frame source node); the VLA node is not configured yet."""
    vla = VLANode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "bundle_path": str(policy), "backend": cfg.backend, "camera_source": "topic", "image_topic": TOPIC,
        "rate_hz": float(cfg.rate_hz), "deadline_ms": float(cfg.deadline_ms), "warmup_iterations": 1,
        "camera_timeout_ms": 5000.0}.items()])
    if cfg.source == "sim":
        from ros_nodes.sim_robot_node import SimRobotNode

        source = SimRobotNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in {
            "episodes": 100000, "image_size": int(cfg.image_size), "image_topic": TOPIC,
            "action_topic": "/vla_node/action", "instruction_topic": "/vla_node/instruction",
            "frame_timeout_s": 0.5}.items()])
    else:
        source = RecordingLoop(context, cfg.recording, cfg.fps)
        vla.set_parameters([Parameter("instruction", value=_recording_instruction(cfg.recording))])
    return vla, source


def _recording_instruction(recording: str) -> str:
    from rlrc_runtime.camera import read_sidecar

    text = read_sidecar(recording).get("instruction")
    return text if isinstance(text, str) and text.strip() else "pick up the block"


def command_check(vla: VLANode) -> CommandCheck:
    """The limits the node was configured with, and its policy's action range."""
    limits = CommandLimits(max_linear_speed=vla.p("max_linear_speed"), max_angular_speed=vla.p("max_angular_speed"),
                           gripper_limits=tuple(vla.p("gripper_limits")))
    return CommandCheck.for_policy(limits, vla._policy.stats(vla.p("unnorm_key") or None))


NODE_COUNTERS = ("frames_received", "frames_used", "actions_published", "holds_published", "deadline_misses",
                 "stale_frames", "nonfinite_actions", "inference_errors", "input_errors", "camera_losses")


def window_row(index: int, cfg: SoakConfig, latencies: list[float], counts: dict[str, int],
               before: dict[str, int], node: dict[str, int], rss: float) -> dict[str, Any]:
    """One window's figures; ``before`` holds the running counts at its start (updated in place)."""
    delta = {k: node[k] - before.get(k, 0) for k in NODE_COUNTERS}
    row = {"window": index, "start_min": index * cfg.window_min, "end_min": (index + 1) * cfg.window_min,
           "latency_ms": percentiles(latencies), "frames_received": delta["frames_received"],
           "actions_published": delta["actions_published"],
           "deadline_misses": delta["deadline_misses"] + delta["stale_frames"],
           "unsafe": counts["unsafe"] - before.get("unsafe", 0), "rss_mb": round(rss, 2),
           "load_average_1min": round(os.getloadavg()[0], 2)}
    before.update(node)
    before["unsafe"] = counts["unsafe"]
    return row


def soak(cfg: SoakConfig, policy: Path) -> dict[str, Any]:
    """Run the loop for cfg.minutes; the figures (not yet written anywhere)."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))  # read by rclpy.init, not import
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    vla, source = make_nodes(cfg, context, policy)
    nodes = [vla, source]
    try:
        for node in nodes:
            executor.add_node(node)
        if vla.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(f"the VLA node did not configure on {policy}: {vla.diagnostics_values()['last_error']}")
        monitor = Monitor(context, command_check(vla), cfg.deadline_ms)
        nodes.append(monitor)
        executor.add_node(monitor)
        spin_until(executor, lambda: all(pub.get_subscription_count() > 0 for pub in vla._pubs.values()),
                   "the monitor's subscriptions to match the VLA node's publishers")
        if vla.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(f"the VLA node did not activate: {vla.diagnostics_values()['last_error']}")
        result = spin_windows(cfg, executor, vla, monitor)
        result["sim"] = _sim_facts(source) if cfg.source == "sim" else None
        result["node_diagnostics"] = {k: v for k, v in vla.diagnostics_values().items()
                                      if k.startswith("latency_ms.") or k in ("bundle_id", "backend")}
    finally:
        if vla._state_machine.current_state[1] != "finalized":
            vla.trigger_shutdown()
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    return result


def spin_until(executor: SingleThreadedExecutor, done: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"soak: timed out after {timeout_s:.0f} s waiting for {what}")
        executor.spin_once(timeout_sec=0.05)


def _sim_facts(sim: Any) -> dict[str, Any]:
    return {"episodes": len(sim.results), "invalid_actions": sim.invalid_actions,
            "success_rate": sim.success_rate()}


def spin_windows(cfg: SoakConfig, executor: Any, vla: Any, monitor: Monitor) -> dict[str, Any]:
    """Spin the executor for cfg.minutes, sampling RSS and closing a window every cfg.window_s."""
    from tqdm import tqdm

    total_s, n_windows = cfg.minutes * 60.0, max(1, round(cfg.minutes / cfg.window_min))
    start = time.monotonic()
    samples: list[tuple[float, float]] = [(0.0, rss_mb())]
    windows: list[dict[str, Any]] = []
    before: dict[str, int] = {}
    next_sample, bar = cfg.sample_s, tqdm(total=round(total_s), unit="s", disable=not cfg.progress, desc="soak")
    while (elapsed := time.monotonic() - start) < total_s:
        executor.spin_once(timeout_sec=0.05)
        bar.update(int(elapsed) - bar.n)
        if elapsed >= next_sample:
            samples.append((elapsed, rss_mb()))
            next_sample += cfg.sample_s
        if elapsed >= (len(windows) + 1) * cfg.window_s and len(windows) < n_windows - 1:
            windows.append(close_window(cfg, len(windows), vla, monitor, before, samples, bar))
    drain(executor, vla)
    windows.append(close_window(cfg, len(windows), vla, monitor, before, samples, bar))
    bar.close()
    samples.append((time.monotonic() - start, rss_mb()))
    _, counts = monitor.take_window()
    return {"duration_s": round(time.monotonic() - start, 2), "windows": windows, "rss_samples": samples,
            "monitor": counts, "unsafe_examples": list(monitor.unsafe_examples),
            "node_counters": {k: int(vla.diagnostics_values()[k]) for k in NODE_COUNTERS}}


def drain(executor: SingleThreadedExecutor, vla: VLANode) -> None:
    """Stop the node (it waits for the inference in flight) and deliver what it sent to the monitor,
    so that every published message is counted and checked."""
    vla.trigger_deactivate()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def close_window(cfg: SoakConfig, index: int, vla: Any, monitor: Monitor, before: dict[str, int],
                 samples: list[tuple[float, float]], bar: Any) -> dict[str, Any]:
    latencies, counts = monitor.take_window()
    node = {k: int(vla.diagnostics_values()[k]) for k in NODE_COUNTERS}
    row = window_row(index, cfg, latencies, counts, before, node, samples[-1][1])
    row["_latencies"] = latencies  # for the whole-run percentiles; dropped before writing
    lat = row["latency_ms"]
    p50 = f"{lat['p50']:.1f}" if lat["p50"] is not None else "-"
    p99 = f"{lat['p99']:.1f}" if lat["p99"] is not None else "-"
    if cfg.progress:
        bar.write(f"window {index + 1}: p50 {p50} ms, p99 {p99} ms, {row['actions_published']} actions / "
                  f"{row['frames_received']} frames, {row['deadline_misses']} deadline misses, "
                  f"{row['unsafe']} unsafe, RSS {row['rss_mb']:.1f} MB")
    return row


# -- results ------------------------------------------------------------------------------------------
def summarize(cfg: SoakConfig, policy: Path, run: dict[str, Any], command: str) -> dict[str, Any]:
    latencies = [x for w in run["windows"] for x in w.pop("_latencies")]
    samples = run["rss_samples"]
    node, mon = run["node_counters"], run["monitor"]
    skip = cfg.window_s if len(run["windows"]) >= 2 else 0.0
    return {
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "config": asdict(cfg),
        "policy": str(policy),
        "bundle_id": run["node_diagnostics"].get("bundle_id", ""),
        "backend": run["node_diagnostics"].get("backend", cfg.backend),
        "duration_s": run["duration_s"],
        "windows": run["windows"],
        "latency_ms": percentiles(latencies),
        "rss": {"samples": [[round(t, 2), round(mb, 2)] for t, mb in samples],
                "slope_mb_per_hour": round(slope_mb_per_hour(samples, skip), 3), "fit_skips_s": skip,
                "start_mb": round(samples[0][1], 2), "end_mb": round(samples[-1][1], 2),
                "peak_mb": round(max(mb for _, mb in samples), 2)},
        "totals": {**node, "deadline_misses_total": node["deadline_misses"] + node["stale_frames"],
                   "actions_received": mon["actions"], "unsafe": mon["unsafe"],
                   "late_at_arrival": mon["late_at_arrival"],
                   "actions_per_frame": round(node["actions_published"] / node["frames_received"], 4)
                   if node["frames_received"] else 0.0},
        "unsafe_examples": run["unsafe_examples"],
        "sim": run["sim"],
        "node_diagnostics": run["node_diagnostics"],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    t, rss = result["totals"], result["rss"]
    lines = [f"# Soak: {result['config']['minutes']:g} min, {result['config']['source']} source", "",
             f"- command: `{result['command']}`", f"- date: {result['date']}",
             f"- machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs "
             "(CPU timings: compare as ratios, not robot timings)",
             f"- policy: {result['bundle_id'] or result['policy']} on {result['backend']}", "",
             "| window | minutes | p50 ms | p99 ms | actions | frames | deadline misses | unsafe | RSS MB | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in result["windows"]:
        lat = w["latency_ms"]
        lines.append(f"| {w['window'] + 1} | {w['start_min']:g}-{w['end_min']:g} | {_ms(lat['p50'])} | "
                     f"{_ms(lat['p99'])} | {w['actions_published']} | {w['frames_received']} | "
                     f"{w['deadline_misses']} | {w['unsafe']} | {w['rss_mb']:.1f} | "
                     f"{w.get('load_average_1min', float('nan')):.2f} |")
    lines += ["", f"RSS {rss['start_mb']:.1f} -> {rss['end_mb']:.1f} MB (peak {rss['peak_mb']:.1f}), slope "
              f"{rss['slope_mb_per_hour']:+.2f} MB/hour; {t['actions_published']} actions for "
              f"{t['frames_received']} frames ({t['actions_per_frame']:.3f} per frame), "
              f"{t['deadline_misses_total']} deadline misses, **{t['unsafe']} unsafe** "
              "(non-finite or outside the limits, every message checked).", ""]
    path.write_text("\n".join(lines))


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, mb = np.array(result["rss"]["samples"]).T
    fig, (ax_mem, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    ax_mem.plot(t / 60.0, mb, ".-", label="RSS")
    skip = result["rss"]["fit_skips_s"]
    fit_t = t[t >= skip] if (t >= skip).sum() >= 3 else t
    if fit_t.size >= 2:
        slope = result["rss"]["slope_mb_per_hour"]
        kept = mb[np.isin(t, fit_t)]
        intercept = float(np.mean(kept) - slope * np.mean(fit_t) / 3600.0)
        ax_mem.plot(fit_t / 60.0, intercept + slope * fit_t / 3600.0, "--", label=f"fit {slope:+.2f} MB/h")
    ax_mem.set(xlabel="minutes", ylabel="MB", title="resident memory")
    ax_mem.legend()
    mids = [(w["start_min"] + w["end_min"]) / 2 for w in result["windows"]]
    for q in ("p50", "p99"):
        ax_lat.plot(mids, [np.nan if w["latency_ms"][q] is None else w["latency_ms"][q] for w in result["windows"]],
                    "o-", label=q)
    ax_lat.set(xlabel="minutes", ylabel="ms", title="end-to-end latency per window")
    ax_lat.legend()
    fig.suptitle(f"soak: {result['totals']['unsafe']} unsafe of {result['totals']['actions_received']} actions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(result: dict[str, Any], out: Path) -> Path:
    """OUT.json, OUT.md and OUT.png (``out`` is a stem: any suffix of its own is kept)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = Path(f"{out}.json")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, Path(f"{out}.md"))
    write_plot(result, Path(f"{out}.png"))
    return json_path


def run(cfg: SoakConfig, argv: list[str] | None = None) -> dict[str, Any]:
    policy = Path(cfg.policy) if cfg.policy else default_policy(Path(cfg.work))
    command = "python benchmarks/soak.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = summarize(cfg, policy, soak(cfg, policy), command)
    write_results(result, Path(cfg.out))
    return result


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: the run passed (no unsafe message); 1: it did not; 2: bad flags or no policy."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    unsafe = 0

    def go(cfg: SoakConfig) -> str:
        nonlocal unsafe
        result = run(cfg, argv)
        t = result["totals"]
        unsafe = t["unsafe"]
        return (f"{'PASS' if unsafe == 0 else 'FAIL'}: {unsafe} unsafe, {t['actions_published']} actions / "
                f"{t['frames_received']} frames, RSS slope {result['rss']['slope_mb_per_hour']:+.2f} MB/h; "
                f"wrote {cfg.out}.json/.md/.png")

    status = run_command("soak", __doc__, SoakConfig, go, argv)
    return 1 if status == 0 and unsafe else status


if __name__ == "__main__":
    sys.exit(main())
