"""The VLA node's image path over real rclpy: CompressedImage intake, unreadable frames held and diagnosed."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

pytestmark = pytest.mark.ros
pytest.importorskip("cv2")

from ros_harness import INSTRUCTION, wait_for  # noqa: E402

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402

from ros_nodes.vla_node import VLANode  # noqa: E402


def _jpeg_msg(clock, data: bytes) -> CompressedImage:
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8")
    msg.data = data
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(clock.now().nanoseconds, 1_000_000_000)
    return msg


def _publish_until(ros, pub, make, done, what: str) -> None:
    deadline = time.monotonic() + 90
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pub.publish(make())
        time.sleep(0.05)


def _compressed_node(ros, ckpt: Path, topic: str, **extra):
    """An active VLA node reading CompressedImage on ``topic``, its recorded actions and a publisher to it."""
    from rclpy.lifecycle import TransitionCallbackReturn

    params = {"bundle_path": str(ckpt), "rate_hz": 50.0, "deadline_ms": 600000.0, "warmup_iterations": 0,
              "diagnostics_period_s": 0.2, "camera_timeout_ms": 600000.0, "camera_source": "topic",
              "image_topic": topic, "image_transport": "compressed", "instruction": INSTRUCTION, **extra}
    node = ros.add(VLANode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
    actions = ros.record(Float32MultiArray, "/vla_node/action")
    pub = ros.helper.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    wait_for(lambda: pub.get_subscription_count() > 0, what="the CompressedImage subscription")
    return node, actions, pub


def test_compressed_frames_drive_the_policy_and_corrupt_ones_hold(ros, node_ckpt: Path):
    node, actions, pub = _compressed_node(ros, node_ckpt, "/test/image/compressed")
    clock = ros.helper.get_clock()
    buf = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    good = buf.getvalue()

    _publish_until(ros, pub, lambda: _jpeg_msg(clock, good), lambda: len(actions) >= 1, "an action from JPEG frames")
    wait_for(lambda: node.diagnostics_values()["inference_in_flight"] == "false", what="the last inference")
    time.sleep(0.2)
    n_actions, values = len(actions), node.diagnostics_values()
    holds, errors = int(values["holds_published"]), int(values["input_errors"])

    _publish_until(ros, pub, lambda: _jpeg_msg(clock, good[: len(good) // 2]),
                   lambda: int(node.diagnostics_values()["input_errors"]) >= errors + 3, "input errors for cut JPEGs")
    time.sleep(0.3)
    values = node.diagnostics_values()
    assert len(actions) == n_actions, "an unreadable frame produced an action"
    assert int(values["holds_published"]) > holds and values["last_hold_reason"] == "unreadable frame"
    assert "image on /test/image/compressed: JPEG of" in values["last_error"] and "truncated" in values["last_error"]

    _publish_until(ros, pub, lambda: _jpeg_msg(clock, good), lambda: len(actions) > n_actions, "actions to resume")
    ros.close(node)


@pytest.mark.parametrize("crop, works", [([160.0, 0.0, 320.0, 480.0], True), ([400.0, 0.0, 320.0, 480.0], False)],
                         ids=["crop-fits", "crop-beyond-the-frame"])
def test_scaled_jpeg_decode_with_a_crop_in_camera_pixels(ros, node_ckpt: Path, crop, works):
    """A 640x480 JPEG for a 128-px policy is decoded at half size; the crop, given in camera pixels, still
    fits and drives the policy, and a crop beyond the frame names the camera's resolution."""
    buf = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(4).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(buf, "JPEG")
    good = buf.getvalue()
    node, actions, pub = _compressed_node(ros, node_ckpt, "/test/image/scaled", crop=crop)
    clock = ros.helper.get_clock()
    if works:
        _publish_until(ros, pub, lambda: _jpeg_msg(clock, good), lambda: len(actions) >= 2, "actions")
        assert int(node.diagnostics_values()["input_errors"]) == 0
    else:
        _publish_until(ros, pub, lambda: _jpeg_msg(clock, good),
                       lambda: int(node.diagnostics_values()["input_errors"]) >= 1, "an input error")
        assert "does not fit the 640x480 frame" in node.diagnostics_values()["last_error"]
        assert len(actions) == 0
    ros.close(node)
