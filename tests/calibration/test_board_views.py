"""Extrinsics and the measured action frame on rendered MuJoCo views with a known ground truth.

Every view goes through a RealSense recording written with rs.software_device (intrinsics included),
so the tools read frames and intrinsics exactly as they do from a camera's recording.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("mujoco")
pytest.importorskip("pyrealsense2")

from board_scene import CameraSpec, build_board_scene  # noqa: E402

from calibration.action_frame import load_action_frame, matrix_to_rpy, rotation_angle_deg, rpy_matrix  # noqa: E402
from calibration.cli import main  # noqa: E402
from calibration.extrinsics import BoardSpec, CameraPose, load_camera_pose  # noqa: E402
from rlrc_runtime.camera import write_recording  # noqa: E402

PARKED_HAND = np.array([0.2, -0.6, 0.3])  # out of the board's way
GRID = BoardSpec(board="grid", squares_x=5, squares_y=4, square_size=0.05, marker_size=0.04, dictionary="DICT_5X5_100")


def _board_flags(board: BoardSpec) -> list[str]:
    return ["--board", board.board, "--squares-x", str(board.squares_x), "--squares-y", str(board.squares_y),
            "--square-size", str(board.square_size), "--marker-size", str(board.marker_size),
            "--dictionary", board.dictionary]


def _pose_flag(matrix: np.ndarray) -> str:
    return ",".join(f"{v:.9f}" for v in (*matrix[:3, 3], *matrix_to_rpy(matrix[:3, :3])))


def _noisy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(image + rng.normal(0.0, 2.0, image.shape), 0, 255).astype(np.uint8)  # sensor noise


@pytest.mark.parametrize("board, centre, yaw, camera", [
    (BoardSpec(), (0.15, 0.0), 0.3, CameraSpec()),
    (GRID, (0.12, 0.05), -0.5, CameraSpec(eye=(0.45, 0.3, 0.5), target=(0.1, 0.0, 0.0))),
], ids=["charuco", "aruco-grid"])
def test_extrinsics_recover_the_rendered_camera_pose(tmp_path, capsys, board, centre, yaw, camera):
    scene = build_board_scene(tmp_path, board, centre, yaw, camera=camera)
    scene.set_hand(PARKED_HAND)
    image = scene.render()
    scene.close()
    rng = np.random.default_rng(0)
    recording = write_recording(tmp_path / "board.db3", [_noisy(image, rng) for _ in range(4)],
                                pinhole=camera.pinhole)
    out = tmp_path / "camera_pose.yaml"
    assert main(["extrinsics", "--recording", str(recording), "--out", str(out), "--robot-frame", "world",
                 f"--board-pose={_pose_flag(scene.world_from_board)}", *_board_flags(board)]) == 0
    assert "static_transform_publisher" in capsys.readouterr().out
    pose = load_camera_pose(out)
    truth = camera.world_from_camera
    error_mm = np.linalg.norm(pose.matrix[:3, 3] - truth[:3, 3]) * 1e3
    error_deg = rotation_angle_deg(pose.matrix[:3, :3].T @ truth[:3, :3])
    assert error_mm < 3.0 and error_deg < 0.5, (error_mm, error_deg)
    assert pose.parent_frame == "world" and pose.quality["frames_used"] == 4
    assert pose.quality["reprojection_rms_px"] < 1.0
    assert pose.quality["intrinsics"]["fx"] == pytest.approx(camera.pinhole[0], rel=1e-5)


def test_extrinsics_without_a_board_in_view_is_a_clear_error(tmp_path, capsys):
    recording = write_recording(tmp_path / "empty.db3", [np.full((48, 64, 3), 200, np.uint8)] * 2)
    assert main(["extrinsics", "--recording", str(recording), "--out", str(tmp_path / "p.yaml"),
                 "--board-pose", "0,0,0,0,0,0"]) == 2
    err = capsys.readouterr().err
    assert "rlrc-calib extrinsics: error:" in err and "none of 2 frames" in err


# The driver under test takes commands in its base frame turned by 90 degrees about z and moves 80% of them.
DRIVER = 0.8 * rpy_matrix((0.0, 0.0, math.pi / 2))
STEP = 0.025
COMMANDS = STEP * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [0, 0, -1],
                            [0.7, 0.7, 0.5], [-0.7, -0.7, -0.5]])
MOTION_CAMERA = CameraSpec(eye=(0.05, -0.2, 0.7), target=(0.2, 0.0, 0.2))


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    """A recording of the hand stepping through COMMANDS (marker id 42, 5 cm) + the true camera pose."""
    folder = tmp_path_factory.mktemp("motion")
    scene = build_board_scene(folder, BoardSpec(), (0.15, 0.0), 0.0, marker=("DICT_4X4_50", 42, 0.05),
                              camera=MOTION_CAMERA)
    position = np.array([0.2, 0.0, 0.12])
    scene.set_hand(position)
    images = [scene.render()]
    for command in COMMANDS:
        position = position + DRIVER @ command
        scene.set_hand(position)
        images.append(scene.render())
    scene.close()
    recording = write_recording(folder / "motion.db3", images, pinhole=MOTION_CAMERA.pinhole,
                                commands=COMMANDS.tolist())
    pose = CameraPose(MOTION_CAMERA.world_from_camera, parent_frame="world").save(folder / "camera_pose.yaml")
    return recording, pose


def test_action_frame_from_a_rendered_motion_undoes_the_driver(tmp_path, capsys, motion):
    recording, pose = motion
    out = tmp_path / "frame.yaml"
    assert main(["action-frame", "--out", str(out), "--from-motion", str(recording), "--extrinsics", str(pose),
                 "--marker-id", "42", "--marker-size", "0.05", "--gripper-invert"]) == 0
    report = json.loads(capsys.readouterr().out)
    frame = load_action_frame(out)
    assert frame.permutation == (1, 0, 2) and frame.signs == (1.0, -1.0, 1.0) and frame.rotation_rpy == (0, 0, 0)
    assert frame.translation_scale == pytest.approx(1 / 0.8, rel=0.02)
    assert report["snapped"] and report["steps"] == len(COMMANDS)
    assert report["fitted_scale"] == pytest.approx(0.8, rel=0.02)
    assert report["residual_written_mm"]["rms"] < 1.0 and len(report["residual_written_mm"]["per_step"]) == 8
    # A policy step along +x now moves the hand along +x of the measured frame, and the gripper stays inverted.
    lin, _, grip = frame.apply(np.array([0.01, -0.005, 0.002, 0.0, 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(DRIVER @ lin, [0.01, -0.005, 0.002], atol=3e-4)
    assert grip == 0.0


def test_from_motion_names_a_missing_marker(tmp_path, capsys, motion):
    recording, pose = motion
    assert main(["action-frame", "--out", str(tmp_path / "f.yaml"), "--from-motion", str(recording),
                 "--extrinsics", str(pose), "--marker-id", "45", "--marker-size", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "marker id 45" in err and "42" in err
    assert main(["action-frame", "--out", str(tmp_path / "f.yaml"), "--from-motion", str(recording)]) == 2
    assert "--extrinsics" in capsys.readouterr().err
