"""Fixtures of the ROS 2 tests (they, the helpers and the DDS isolation live in ros_harness.py)."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
from ros_harness import node_ckpt, recording, ros  # noqa: E402,F401  (fixtures; sets ROS_DOMAIN_ID before rclpy.init)
