"""Safety rules, without a ROS graph (image intake: test_image_intake.py; recordings: tests/runtime/test_camera.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.action_frame import ActionFrame
from ros_nodes.safety import ActionPipeline, CommandLimits


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_never_become_commands(bad):
    pipeline = ActionPipeline()
    for i in range(7):
        action = np.zeros(7)
        action[i] = bad
        assert pipeline(action) is None
    assert pipeline(np.zeros(6)) is None


def test_commands_are_scaled_mapped_and_clamped():
    limits = CommandLimits(action_scale=(2.0,) * 6 + (1.0,), action_period_s=0.1, max_linear_speed=0.3,
                           max_angular_speed=0.5, gripper_limits=(0.1, 0.9))
    pipeline = ActionPipeline(ActionFrame(permutation=(1, 0, 2), max_translation=1.0, max_rotation=1.0), limits)
    cmd = pipeline(np.array([0.01, 0.1, -0.001, 0.0, 0.0, 0.2, 1.0], np.float32))
    np.testing.assert_allclose(cmd.linear, [0.3, 0.2, -0.02], rtol=1e-5)  # x clamped at 0.3 m/s
    assert cmd.angular[2] == 0.5 and cmd.gripper == 0.9
    assert cmd.raw.dtype == np.float32 and cmd.raw[1] == np.float32(0.1)
    huge = pipeline(np.full(7, 1e30))
    assert all(abs(v) <= 0.3 for v in huge.linear) and all(math.isfinite(v) for v in huge.angular)


def test_command_check_accepts_every_pipeline_output_and_names_what_is_unsafe():
    from rlrc_runtime.action import ActionStats
    from ros_nodes.safety import CommandCheck

    limits = CommandLimits(max_linear_speed=0.3, max_angular_speed=0.5, gripper_limits=(0.0, 1.0))
    stats = ActionStats(q01=np.full(7, -0.02), q99=np.full(7, 0.02), mask=np.array([True] * 6 + [False]))
    check = CommandCheck.for_policy(limits, stats)
    pipeline = ActionPipeline(limits=limits)
    for action in np.random.default_rng(0).uniform(-1, 1, (50, 7)) * np.array([0.02] * 6 + [1.0]):
        cmd = pipeline(action)
        assert check.action(cmd.raw) is None and check.twist(cmd.linear, cmd.angular) is None
        assert check.gripper(cmd.gripper) is None
    assert "7 finite values" in check.action([0.0] * 6 + [np.nan])
    assert "outside" in check.action([0.03] + [0.0] * 6)
    assert check.action([0.0] * 6 + [-1.0]) is None  # an unmasked dimension spans [-1, 1]
    assert "max_linear_speed=0.3" in check.twist([0.31, 0, 0], [0, 0, 0])
    assert "max_angular_speed=0.5" in check.twist([0, 0, 0], [0, 0, -0.6])
    assert "not finite" in check.twist([np.inf, 0, 0], [0, 0, 0])
    assert "gripper_limits" in check.gripper(1.5) and "gripper_limits" in check.gripper(np.nan)
