"""Helpers of the ROS 2 tests: an isolated DDS domain, a spinning executor, bounded waits, the VLA
node built on a real tiny policy, frames fed to it and everything it publishes recorded.

Used by tests/ros_nodes and tests/reliability (whose module puts this folder on sys.path). The
fixtures `ros`, `node_ckpt` and `recording` are defined here and imported by each conftest/module.

Isolation: every test session gets its own ROS_DOMAIN_ID (from the pid) and localhost-only
discovery, so parallel sessions on a shared machine never see each other and no traffic leaves
the machine. Everything that waits has a deadline (the machine may be slow and loaded).
Importing this module sets the environment, so it must happen before rclpy.init.
"""
from __future__ import annotations

import os

os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)  # 1..100: valid for Fast DDS' port formula
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"

import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32MultiArray, Float64  # noqa: E402

WAIT_S = float(os.environ.get("RLRC_ROS_TEST_WAIT_S", "90"))  # generous: 2 loaded cores


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


class RosHarness:
    """One rclpy context + executor spinning in a thread; helper node to publish and record."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.helper = rclpy.create_node("test_helper", context=self.context)
        self.executor.add_node(self.helper)
        self.received: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._stop = False
        self.on_close: list[Callable[[], None]] = []  # run first by close(), e.g. to stop a FrameFeed
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown races
                if self._stop:
                    return
                raise

    def add(self, node: Any) -> Any:
        self.executor.add_node(node)
        return node

    def record(self, msg_type: Any, topic: str, qos: Any = 10) -> list[Any]:
        out: list[Any] = []
        self.received[topic] = out

        def cb(msg: Any) -> None:
            with self._lock:
                out.append(msg)

        self.helper.create_subscription(msg_type, topic, cb, qos)
        return out

    def publisher(self, msg_type: Any, topic: str, latched: bool = False) -> Any:
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL) if latched else 10
        return self.helper.create_publisher(msg_type, topic, qos)

    def close(self, *nodes: Any) -> None:
        if self._stop:
            return
        for stop in self.on_close:
            stop()
        self._stop = True
        self._thread.join(timeout=10)
        for node in nodes:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        self.executor.shutdown(timeout_sec=5)
        self.helper.destroy_node()
        rclpy.try_shutdown(context=self.context)


INSTRUCTION = "pick up the red block"


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def ros():
    harness = RosHarness()
    yield harness
    harness.close()


@pytest.fixture(scope="session")
def node_ckpt(ckpt_factory) -> Path:
    """The cheapest real checkpoint for node tests (128 px, 64 patches per tower)."""
    return ckpt_factory("tiny-128")


@pytest.fixture(scope="session")
def recording(tmp_path_factory) -> tuple[Path, int]:
    """A 4-frame RealSense recording (64x48 RGB) made with rs.software_device + rs.recorder."""
    return make_recording(tmp_path_factory.mktemp("rec") / "frames.db3", 4)


def make_recording(path: Path, n: int) -> tuple[Path, int]:
    """An ``n``-frame 64x48 RealSense recording at ``path`` whose sidecar holds INSTRUCTION."""
    pytest.importorskip("pyrealsense2")
    from rlrc_runtime.camera import write_recording

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
    write_recording(path, images, instruction=INSTRUCTION)
    return path, n


# -- the VLA node and its inputs ----------------------------------------------------------------------
FAST_PARAMS = {"rate_hz": 50.0, "deadline_ms": 600000.0, "warmup_iterations": 0, "diagnostics_period_s": 0.2,
               "camera_timeout_ms": 600000.0}
"""Node parameters of the tests: fast ticks and diagnostics, no warm-up, no deadline or camera timeout."""


def make_node(ros: RosHarness, bundle: Path, policy_loader: Callable[..., Any] | None = None, **params: Any) -> Any:
    """A VLANode on ``bundle`` with FAST_PARAMS overridden by ``params``, spun by ``ros``."""
    from ros_nodes.vla_node import VLANode

    values = {"bundle_path": str(bundle), **FAST_PARAMS, **params}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    kwargs = {"policy_loader": policy_loader} if policy_loader is not None else {}
    return ros.add(VLANode(context=ros.context, parameter_overrides=overrides, **kwargs))


def configure_activate(node: Any) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.diagnostics_values()["last_error"]
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS, node.diagnostics_values()["last_error"]


def counter(node: Any, name: str) -> int:
    return int(node.diagnostics_values()[name])


def feed_frame(size=(48, 64)) -> np.ndarray:
    """The RGB image every image_msg (and so every FrameFeed message) carries."""
    return np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)


def image_msg(node_clock: Any, stamp_offset_s: float = 0.0, encoding: str = "rgb8", size=(48, 64)) -> Image:
    from ros_nodes.images import fill_image_msg

    msg = fill_image_msg(Image(), feed_frame(size))
    if encoding != "rgb8":
        msg.encoding = encoding
    now = node_clock.now().nanoseconds + int(stamp_offset_s * 1e9)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
    return msg


def publish_until(pub: Any, make_msg: Callable[[], Any], done: Callable[[], bool], what: str,
                  period: float = 0.3) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pub.publish(make_msg())
        time.sleep(period)


class FrameFeed:
    """A camera driver on ``topic``: fresh rgb8 frames every ``period`` s from its own thread, until
    `pause` (the driver vanishes) and again after `resume`."""

    def __init__(self, ros: RosHarness, topic: str, period: float = 0.05) -> None:
        self.pub = ros.helper.create_publisher(Image, topic, qos_profile_sensor_data)
        self._clock = ros.helper.get_clock()
        self._period = period
        self._running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="frame_feed")
        self._thread.start()
        ros.on_close.append(self.stop)  # also when a test fails before stopping it

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._running.is_set():
                self.pub.publish(image_msg(self._clock))
            time.sleep(self._period)

    def resume(self) -> None:
        wait_for(lambda: self.pub.get_subscription_count() > 0, what="the node's image subscription")
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class CommandLog:
    """Everything the VLA node publishes (~/action, ~/cmd_twist, ~/gripper, its /diagnostics status),
    each with the ROS time it was received, so a test can check every message after the fact."""

    def __init__(self, ros: RosHarness, node_name: str = "vla_node") -> None:
        self._clock = ros.helper.get_clock()
        self._lock = threading.Lock()
        self.actions: list[tuple[int, Float32MultiArray]] = []
        self.twists: list[tuple[int, TwistStamped]] = []
        self.grippers: list[tuple[int, Float64]] = []
        self.statuses: list[DiagnosticStatus] = []
        for msg_type, topic, out in ((Float32MultiArray, f"/{node_name}/action", self.actions),
                                     (TwistStamped, f"/{node_name}/cmd_twist", self.twists),
                                     (Float64, f"/{node_name}/gripper", self.grippers)):
            ros.helper.create_subscription(msg_type, topic, self._keep(out), 100)
        ros.helper.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 100)

    def _keep(self, out: list) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            with self._lock:
                out.append((self._clock.now().nanoseconds, msg))
        return cb

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self.statuses += [s for s in msg.status if s.name == "vla_node: policy"]

    def status(self) -> DiagnosticStatus | None:
        """The node's latest /diagnostics status."""
        with self._lock:
            return self.statuses[-1] if self.statuses else None

    def wait_status(self, level: bytes, *words: str, what: str = "") -> DiagnosticStatus:
        """Wait until the latest status has ``level`` and every one of ``words`` in its message."""
        def matches() -> bool:
            s = self.status()
            return s is not None and s.level == level and all(w in s.message for w in words)

        wait_for(matches, what=what or f"/diagnostics level {level!r} naming {words}")
        return self.status()

    def problems(self, check: Any, deadline_ms: float | None = None) -> list[str]:
        """Every unsafe message received: non-finite or out of ``check``'s limits, or (``deadline_ms``,
        for stamps taken from the node's clock) a twist received later than its deadline after its frame."""
        with self._lock:
            actions, twists, grippers = list(self.actions), list(self.twists), list(self.grippers)
        found = [check.action(m.data) for _, m in actions]
        found += [check.gripper(m.data) for _, m in grippers]
        for received, m in twists:
            v = m.twist
            found.append(check.twist((v.linear.x, v.linear.y, v.linear.z), (v.angular.x, v.angular.y, v.angular.z)))
            age_ms = (received - (m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec)) / 1e6
            if deadline_ms is not None and age_ms > deadline_ms:
                found.append(f"twist received {age_ms:.0f} ms after its frame > deadline_ms={deadline_ms:.0f}")
        return [p for p in found if p is not None]

    def n_actions(self) -> int:
        with self._lock:
            return len(self.actions)

    def moving_twists_since(self, index: int) -> list[TwistStamped]:
        """Twists after the first ``index`` ones that are not a hold (non-zero velocity)."""
        with self._lock:
            twists = [m for _, m in self.twists[index:]]
        return [m for m in twists if any((m.twist.linear.x, m.twist.linear.y, m.twist.linear.z,
                                          m.twist.angular.x, m.twist.angular.y, m.twist.angular.z))]
