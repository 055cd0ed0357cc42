"""Fixtures of the ROS 2 tests (helpers and the DDS isolation live in ros_harness.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from ros_harness import INSTRUCTION, RosHarness  # noqa: E402  (sets ROS_DOMAIN_ID before rclpy.init)


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
    pytest.importorskip("pyrealsense2")
    from rlrc_runtime.camera import write_recording

    n = 4
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
    path = tmp_path_factory.mktemp("rec") / "frames.db3"
    write_recording(path, images, instruction=INSTRUCTION)
    return path, n
