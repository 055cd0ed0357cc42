"""The sim robot node and the closed loop (VLA node + sim robot), with real rclpy and MuJoCo."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("mujoco")

from ros_harness import wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Float32MultiArray, String  # noqa: E402

from ros_nodes.images import image_msg_to_rgb  # noqa: E402


def test_sim_robot_publishes_camera_steps_on_actions_and_reports_episodes(ros):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from ros_nodes.sim_robot_node import SimRobotNode

    images = ros.record(Image, "/camera/camera/color/image_raw")
    infos = ros.record(CameraInfo, "/camera/camera/color/camera_info")
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    episodes = ros.record(String, "/sim_robot/episode", latched)
    instructions = ros.record(String, "/vla_node/instruction", latched)
    action_pub = ros.helper.create_publisher(Float32MultiArray, "/vla_node/action", 10)
    node = ros.add(SimRobotNode(context=ros.context, parameter_overrides=[
        Parameter("episodes", value=2), Parameter("max_steps", value=3), Parameter("image_size", value=32),
        Parameter("frame_timeout_s", value=0.5)]))
    wait_for(lambda: len(images) >= 1 and len(infos) >= 1 and instructions, what="the first frame")
    frame = image_msg_to_rgb(images[0])
    assert frame.shape == (32, 32, 3) and images[0].encoding == "rgb8"
    assert infos[0].width == 32 and infos[0].k[0] > 0 and images[0].header.frame_id == infos[0].header.frame_id
    wait_for(lambda: action_pub.get_subscription_count() > 0, what="the action subscription")
    hold = Float32MultiArray(data=[0.0] * 6 + [1.0])
    for _ in range(200):
        if node.done.is_set():
            break
        n = len(images)
        action_pub.publish(hold)
        wait_for(lambda: len(images) > n or node.done.is_set(), what="the next frame")
    assert node.done.is_set()
    wait_for(lambda: len(episodes) == 2, what="two episode reports")
    reports = [json.loads(m.data) for m in episodes]
    assert [r["episode"] for r in reports] == [0, 1] and all(r["steps"] == 3 and not r["success"] for r in reports)
    ros.close(node)


@pytest.mark.slow
def test_closed_loop_with_the_tiny_policy(node_ckpt, tmp_path):
    """The mechanics of the closed loop (the trained policy's success rate is a separate benchmark)."""
    from ros_nodes.closed_loop import ClosedLoopConfig, run_closed_loop, write_results

    result = run_closed_loop(ClosedLoopConfig(str(node_ckpt), family="pick", episodes=2, max_steps=4, image_size=64,
                                              timeout_s=600))
    assert result["episodes"] == 2 and result["steps"] == [4, 4] and result["invalid_actions"] == 0
    assert int(result["vla_diagnostics"]["actions_published"]) >= 8
    path = write_results(result, tmp_path, "tiny_test", "pytest")
    assert json.loads(path.read_text())["episodes"] == 2
    assert np.isfinite(result["success_rate"])


def test_closed_loop_with_a_chunk_policy_plans_once_per_chunk(ckpt_factory):
    """A K = 4 parallel-decoding policy through ROS: every sim step gets an action, one inference per 4."""
    from ros_nodes.closed_loop import ClosedLoopConfig, run_closed_loop

    ckpt = ckpt_factory("tiny-128", action_chunk=4)
    result = run_closed_loop(ClosedLoopConfig(str(ckpt), family="push", episodes=1, max_steps=8, image_size=64,
                                              timeout_s=600))
    diagnostics = result["vla_diagnostics"]
    assert result["steps"] == [8] and result["invalid_actions"] == 0
    assert diagnostics["action_chunk"] == "4"
    assert int(diagnostics["actions_published"]) >= 8
    assert int(diagnostics["inferences"]) <= int(diagnostics["actions_published"]) // 4 + 1
