"""Helpers of the ROS 2 tests: an isolated DDS domain, a spinning executor, bounded waits.

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

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

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
