"""Calibration tools: action-frame YAML, intrinsics and calibration sets from a RealSense recording."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from calibration.action_frame import ActionFrame, load_action_frame
from calibration.cli import main
from rlrc_runtime.errors import ConfigError


def test_identity_frame_passes_actions_through_with_clamps():
    frame = ActionFrame()
    lin, ang, grip = frame.apply(np.array([0.01, -0.02, 0.03, 0.1, -0.1, 0.2, 1.0]))
    np.testing.assert_allclose(lin, [0.01, -0.02, 0.03])
    np.testing.assert_allclose(ang, [0.1, -0.1, 0.2])
    assert grip == 1.0
    lin, ang, grip = frame.apply(np.array([1.0, 0, 0, 0, 0, -9.0, 7.0]))
    assert lin[0] == frame.max_translation and ang[2] == -frame.max_rotation and grip == 1.0


def test_permutation_signs_rotation_and_gripper_inversion(tmp_path):
    frame = ActionFrame(permutation=(1, 0, 2), signs=(-1, 1, 1), rotation_rpy=(0.0, 0.0, math.pi / 2),
                        gripper_output_open=0.0, gripper_output_closed=1.0, translation_scale=2.0)
    path = frame.save(tmp_path / "frame.yaml")
    loaded = load_action_frame(path)
    assert loaded == frame
    # P maps (x, y, z) -> (-y, x, z); Rz(90deg) maps (a, b, c) -> (-b, a, c)
    lin, _, grip = loaded.apply(np.array([0.01, 0.02, 0.0, 0, 0, 0, 1.0]))
    np.testing.assert_allclose(lin, [-0.02, -0.04, 0.0], atol=1e-12)
    assert grip == 0.0  # policy open (1) -> robot open (0)


@pytest.mark.parametrize("data, match", [
    ({"version": 2}, "version"),
    ({"version": 1, "axes": {"permutation": [0, 0, 2]}}, "permutation"),
    ({"version": 1, "axes": {"signs": [1, 2, 1]}}, "signs"),
    ({"version": 1, "scale": {"translation": -1.0}}, "translation_scale"),
    ({"version": 1, "limits": {"max_rotation": float("nan")}}, "max_rotation"),
    ({"version": 1, "gripper": {"input_open": 0.0, "input_closed": 0.0}}, "input_open"),
    ({"version": 1, "axis": {}}, "Did you mean .axes."),
    ({"version": 1, "scale": {"translations": 1.0}}, "scale.translations"),
])
def test_invalid_action_frames_name_the_field(tmp_path, data, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=match):
        load_action_frame(path)


def test_action_frame_cli_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "frame.yaml"
    assert main(["action-frame", "--out", str(out), "--permutation", "1,0,2", "--signs=-1,1,1",
                 "--gripper-invert"]) == 0
    assert main(["action-frame", "--check", str(out), "--action", "0.01,0,0,0,0,0,1"]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert report["linear_step"] == [0.0, 0.01, 0.0] and report["gripper"] == 0.0
    assert main(["action-frame", "--check", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_recording(tmp_path_factory):
    pytest.importorskip("pyrealsense2")
    from rlrc_runtime.camera import write_recording

    images = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(6)]
    path = tmp_path_factory.mktemp("calrec") / "scene.db3"
    write_recording(path, images, instruction="put the cup on the plate")
    return path, images


def test_intrinsics_from_a_recording(tmp_path, small_recording):
    path, _ = small_recording
    out = tmp_path / "camera.yaml"
    assert main(["intrinsics", "--recording", str(path), "--out", str(out)]) == 0
    info = yaml.safe_load(out.read_text())
    assert (info["image_width"], info["image_height"]) == (64, 48)
    assert info["camera_matrix"]["data"][2] == 32.0 and info["distortion_model"] == "plumb_bob"


def test_capture_calibration_set_from_a_recording(tmp_path, small_recording):
    from calibration.capture import read_calibration_set
    from rlrc_runtime.camera import read_recording, read_sidecar

    path, images = small_recording
    out = tmp_path / "calib"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("pick up the cup\n\nopen the drawer\n")
    assert main(["capture", "--recording", str(path), "--out", str(out), "--frames", "3", "--every", "2",
                 "--instructions-file", str(prompts), "--record"]) == 0
    pairs = read_calibration_set(out)
    assert [p[1] for p in pairs] == ["pick up the cup", "open the drawer", "pick up the cup"]
    for (image, _), source in zip(pairs, images[::2]):
        np.testing.assert_array_equal(image, source)
    frames = read_recording(out / "recording.db3")
    assert len(frames) == 3
    assert read_sidecar(out / "recording.db3")["instructions"] == ["pick up the cup", "open the drawer"]
    assert main(["capture", "--recording", str(path), "--out", str(out), "--instruction", "x"]) == 2  # not empty


def test_motion_fit_composes_with_the_declared_policy_axes_and_keeps_a_real_rotation():
    from calibration.action_frame import fit_motion, propose_action_frame, rpy_matrix
    from calibration.errors import CalibrationError

    rng = np.random.default_rng(0)
    commands = rng.normal(0.0, 0.02, (10, 3))
    driver = 1.25 * rpy_matrix((0.0, 0.0, math.radians(20.0)))  # commands turned 20 deg, 25% too far
    observed = commands @ driver.T + rng.normal(0.0, 2e-4, commands.shape)
    declared = ActionFrame(permutation=(1, 0, 2), signs=(-1, 1, 1), max_translation=1.0)
    frame, report = propose_action_frame(fit_motion(commands, observed), declared, snap_deg=3.0)
    assert not report["snapped"] and report["rotation_off_axes_deg"] == pytest.approx(20.0, abs=0.5)
    assert frame.translation_scale == pytest.approx(0.8, rel=0.01)
    a = np.array([0.01, 0.02, -0.01, 0, 0, 0, 1])
    lin, _, _ = frame.apply(a)
    np.testing.assert_allclose(driver @ lin, declared.matrix @ a[:3], atol=2e-4)  # moves as declared
    assert report["residual_written_mm"]["rms"] < 0.5
    with pytest.raises(CalibrationError, match="three directions"):
        fit_motion(np.tile([[0.02, 0.0, 0.0]], (5, 1)), np.tile([[0.0, 0.02, 0.0]], (5, 1)))


def test_camera_pose_file_round_trip_and_errors(tmp_path):
    from calibration.action_frame import rpy_matrix
    from calibration.extrinsics import CameraPose, load_camera_pose, pose_matrix

    matrix = pose_matrix(rpy_matrix((2.5, -0.3, 1.0)), np.array([0.1, -0.2, 0.6]))
    path = CameraPose(matrix, "base_link", "cam_optical").save(tmp_path / "pose.yaml")
    loaded = load_camera_pose(path)
    np.testing.assert_allclose(loaded.matrix, matrix, atol=1e-6)
    assert (loaded.parent_frame, loaded.child_frame) == ("base_link", "cam_optical")
    assert "--frame-id base_link --child-frame-id cam_optical" in loaded.static_transform_command()
    data = yaml.safe_load(path.read_text())
    data["rotation_xyzw"] = [0.0, 0.0, 0.0, 2.0]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unit length"):
        load_camera_pose(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_camera_pose(tmp_path / "missing.yaml")


def test_board_command_writes_a_detectable_print(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    from calibration.extrinsics import BoardSpec, detect_board

    out = tmp_path / "board.png"
    assert main(["board", "--out", str(out), "--dpi", "150", "--squares-x", "5", "--squares-y", "4"]) == 0
    assert "200 x 160 mm" in capsys.readouterr().out
    spec = BoardSpec(squares_x=5, squares_y=4)
    obj, _ = detect_board(spec.build(), spec, cv2.imread(str(out), cv2.IMREAD_GRAYSCALE))
    assert len(obj) == 4 * 3  # every inner chessboard corner
    assert main(["board", "--out", str(out), "--marker-size", "0.05"]) == 2
    assert "--marker-size 0.05" in capsys.readouterr().err
    assert main(["board", "--out", str(out), "--dictionary", "DICT_4x4_50"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_calibration_imports_point_down_to_rlrc_runtime_only():
    import subprocess
    import sys

    code = ("import sys, calibration.cli, calibration.motion, calibration.extrinsics, calibration.intrinsics;"
            "bad = [m for m in ('ros_nodes', 'rclpy', 'export', 'cv2', 'pyrealsense2', 'torch') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"importing calibration loaded {proc.stdout.strip()} {proc.stderr[-500:]}"
