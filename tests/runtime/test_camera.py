"""rlrc_runtime.camera: lazy imports, the frame slot, RealSense recordings written with rs.software_device."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from rlrc_runtime.camera import Frame, FrameSlot


def test_importing_the_camera_package_loads_no_camera_library():
    code = ("import sys, rlrc_runtime, rlrc_runtime.cli, rlrc_runtime.camera;"
            "heavy = [m for m in ('pyrealsense2', 'cv2', 'rclpy', 'ros_nodes') if m in sys.modules];"
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"importing rlrc_runtime.camera imported {proc.stdout.strip()} {proc.stderr[-500:]}"


def test_frame_slot_keeps_the_latest_frame_or_waits_for_the_consumer():
    slot = FrameSlot()
    for i in range(3):
        assert slot.put(Frame(image=np.full((2, 2, 3), i, np.uint8), stamp_ns=i))
    assert slot.received == 3 and slot.dropped == 2 and slot.take().stamp_ns == 2 and slot.take() is None
    slot.put(Frame(image=np.zeros((2, 2, 3), np.uint8), stamp_ns=10))
    done = threading.Event()
    threading.Thread(target=lambda: (slot.put(Frame(np.zeros((2, 2, 3), np.uint8), 11), block=True), done.set()),
                     daemon=True).start()
    time.sleep(0.2)
    assert not done.is_set()  # blocked: the previous frame was not taken yet
    assert slot.take().stamp_ns == 10
    assert done.wait(5) and slot.take().stamp_ns == 11 and slot.dropped == 2
    slot.close()
    assert not slot.put(Frame(np.zeros((2, 2, 3), np.uint8), 12))


def test_recordings_carry_the_given_pinhole_intrinsics(tmp_path):
    pytest.importorskip("pyrealsense2")
    from rlrc_runtime.camera import camera_info_dict, color_intrinsics, read_recording, read_sidecar, write_recording

    images = [np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8) for i in range(3)]
    path = write_recording(tmp_path / "p.db3", images, pinhole=(50.5, 51.0, 19.5, 14.5), commands=[[0.01, 0, 0]] * 2)
    intr = color_intrinsics(path)
    assert (intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy) == (40, 30, 50.5, 51.0, 19.5, 14.5)
    assert camera_info_dict(intr)["camera_matrix"]["data"][:3] == [50.5, 0.0, 19.5]
    assert read_sidecar(path)["commands"] == [[0.01, 0, 0]] * 2
    for frame, image in zip(read_recording(path), images, strict=True):
        np.testing.assert_array_equal(frame.image, image)


def test_recording_round_trip_and_realtime_playback(tmp_path):
    pytest.importorskip("pyrealsense2")
    from rlrc_runtime.camera import FrameSlot, RecordingPlayer, read_recording, read_sidecar, write_recording

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
    from rlrc_runtime.camera import CameraError, FrameSlot, RecordingPlayer

    with pytest.raises(CameraError, match="does not exist"):
        RecordingPlayer(tmp_path / "nope.db3", FrameSlot()).start()
