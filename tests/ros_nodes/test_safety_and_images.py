"""Safety rules, image conversion and RealSense recordings, without a ROS graph."""
from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest

from calibration.action_frame import ActionFrame
from rlrc_runtime.errors import InputError
from ros_nodes.images import crop_image, fill_image_msg, image_msg_to_rgb
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


def _msg(h=4, w=5, encoding="rgb8", step=None, data=None):
    ch = 4 if encoding in ("rgba8", "bgra8") else 3
    step = step if step is not None else w * ch
    data = data if data is not None else bytes(range(256)) * (h * step // 256 + 1)
    return SimpleNamespace(height=h, width=w, encoding=encoding, step=step, data=data[: h * step])


def test_image_conversion_handles_rgb_bgr_alpha_and_padding():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = fill_image_msg(SimpleNamespace(), rgb)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    bgr = fill_image_msg(SimpleNamespace(), rgb, encoding="bgr8")
    np.testing.assert_array_equal(image_msg_to_rgb(bgr), rgb)
    padded = _msg(step=5 * 3 + 3)
    assert image_msg_to_rgb(padded).shape == (4, 5, 3)
    bgra = _msg(encoding="bgra8")
    raw = np.frombuffer(bgra.data, np.uint8).reshape(4, 5, 4)
    np.testing.assert_array_equal(image_msg_to_rgb(bgra), raw[..., [2, 1, 0]])


@pytest.mark.parametrize("msg, match", [
    (_msg(encoding="mono16"), "encoding"),
    (_msg(encoding="16UC1"), "encoding"),
    (_msg(h=0), "size"),
    (_msg(w=100_000), "size"),
    (_msg(step=2), "step"),
    (SimpleNamespace(height=4, width=5, encoding="rgb8", step=15, data=b"\x00" * 10), "bytes"),
])
def test_malformed_images_raise_input_errors(msg, match):
    with pytest.raises(InputError, match=match):
        image_msg_to_rgb(msg)


def test_crop():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    assert crop_image(image, [0, 0, 0, 0]) is image
    np.testing.assert_array_equal(crop_image(image, [2, 1, 4, 3]), image[1:4, 2:6])
    with pytest.raises(InputError, match="crop"):
        crop_image(image, [6, 0, 4, 4])


def test_recording_round_trip_and_realtime_playback(tmp_path):
    pytest.importorskip("pyrealsense2")
    from ros_nodes.realsense import FrameSlot, RecordingPlayer, read_recording, read_sidecar, write_recording

    images = [np.full((24, 32, 3), i * 20, np.uint8) for i in range(8)]
    path = write_recording(tmp_path / "r.db3", images, instruction="wave", fps=30, pace=True)
    assert read_sidecar(path) == {"instruction": "wave", "frames": 8}
    frames = read_recording(path)
    assert [int(f.image[0, 0, 0]) for f in frames] == [i * 20 for i in range(8)]
    assert all(f.stamp_ns > 0 for f in frames) and [f.frame_number for f in frames] == list(range(8))
    # real time, nobody reading: only the latest frame is kept, the rest are counted as dropped
    slot = FrameSlot()
    player = RecordingPlayer(path, slot, realtime=True)
    player.start()
    deadline = time.monotonic() + 30
    while not player.finished.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    last = slot.take()
    player.stop()
    assert player.finished.is_set() and last is not None
    assert slot.received == 8 and slot.dropped == 7 and int(last.image[0, 0, 0]) == 140


def test_missing_recording_is_a_camera_error(tmp_path):
    pytest.importorskip("pyrealsense2")
    from ros_nodes.realsense import CameraError, FrameSlot, RecordingPlayer

    with pytest.raises(CameraError, match="does not exist"):
        RecordingPlayer(tmp_path / "nope.db3", FrameSlot()).start()
