"""`rlrc-calib action-frame --from-motion`: the action frame measured from a short recorded motion.

The motion is a RealSense recording (.db3) whose sidecar (`<name>.yaml`) lists the commanded
deltas: ``commands: [[dx, dy, dz], ...]`` (or full 7-D actions; the first three are used), one per
step, so a recording of N + 1 frames holds N commands: frame 0 before the first step, frame i
after step i. The robot translates only (no rotation commands) with a square ArUco marker fixed to
the gripper in view. Each frame's marker pose comes from `cv2.solvePnP` on its four corners
(RealSense intrinsics of the recording), its centre goes into the robot frame through the camera
pose of `rlrc-calib extrinsics`, and consecutive centres are the observed motion that
`calibration.action_frame.fit_motion` compares with the commands.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from calibration.action_frame import ActionFrame, fit_motion, propose_action_frame
from calibration.capture import SourceConfig, frames_from
from calibration.errors import CalibrationError
from calibration.extrinsics import DICTIONARIES, _check_dictionary, _cv2, load_camera_pose, solve_pnp
from calibration.intrinsics import CameraModel
from rlrc_runtime.camera import read_sidecar, sidecar_path
from rlrc_runtime.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionConfig:
    """The recorded motion and the marker on the gripper."""

    from_motion: Path | None = field(default=None, metadata={
        "help": "RealSense recording (.db3) of the motion; its sidecar lists the commanded deltas under `commands`"})
    extrinsics: Path | None = field(default=None, metadata={
        "help": "camera pose YAML from `rlrc-calib extrinsics` (the robot frame the motion is measured in)"})
    marker_id: int = field(default=0, metadata={"help": "ArUco id of the marker on the gripper"})
    marker_size: float = field(default=0.04, metadata={"help": "side of the gripper marker's black square, metres"})
    marker_dictionary: str = field(default="DICT_4X4_50", metadata={
        "help": f"ArUco dictionary of the gripper marker (one of {', '.join(DICTIONARIES[:4])}, ...)"})
    snap_deg: float = field(default=3.0, metadata={
        "help": "write an exact axis permutation when the fitted map is within this many degrees of one"})

    def __post_init__(self) -> None:
        if self.from_motion is None or self.extrinsics is None:
            raise ConfigError(f"--from-motion {self.from_motion} needs --extrinsics CAMERA_POSE.yaml "
                              "(measure it first with `rlrc-calib extrinsics`)")
        if not Path(self.from_motion).is_file():
            raise ConfigError(f"--from-motion {self.from_motion} does not exist")
        if not self.marker_size > 0 or self.marker_id < 0:
            raise ConfigError(f"--marker-size {self.marker_size} must be > 0 and --marker-id {self.marker_id} >= 0")
        if not 0.0 <= self.snap_deg <= 45.0:
            raise ConfigError(f"--snap-deg {self.snap_deg}: expected 0..45 degrees")
        _check_dictionary(self.marker_dictionary)


def read_commands(recording: Path) -> np.ndarray:
    """The commanded deltas [N, 3] of a motion recording's sidecar."""
    sidecar = read_sidecar(recording)
    raw = sidecar.get("commands")
    try:
        commands = np.asarray(raw, np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{sidecar_path(recording)}: commands must be a list of [dx, dy, dz] lists ({exc})") from exc
    if raw is None or commands.ndim != 2 or commands.shape[1] not in (3, 7) or not np.all(np.isfinite(commands)):
        raise ConfigError(f"{sidecar_path(recording)}: expected `commands: [[dx, dy, dz], ...]` (or 7-D actions), "
                          f"one per step; found {raw!r:.200}")
    return commands[:, :3]


def marker_centres(images: Iterable[np.ndarray], camera: CameraModel, config: MotionConfig) -> np.ndarray:
    """The marker's centre [N, 3] in the camera's optical frame, metres, one row per frame."""
    cv2 = _cv2()
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.ArucoDetector(
        cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, config.marker_dictionary)), params)
    h = config.marker_size / 2.0
    square = np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])  # ArUco corner order
    centres = []
    for index, image in enumerate(images):
        camera.check_frame(image)
        corners, ids, _ = detector.detectMarkers(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        found = [c for c, i in zip(corners, [] if ids is None else ids.ravel()) if int(i) == config.marker_id]
        if len(found) != 1:
            seen = [] if ids is None else sorted(int(i) for i in ids.ravel())
            raise CalibrationError(f"frame {index} of {config.from_motion}: marker id {config.marker_id} "
                                   f"({config.marker_dictionary}) seen {len(found)} times (ids seen: {seen}); keep "
                                   "exactly one such marker on the gripper in view during the whole motion")
        _, tvec, _ = solve_pnp(square, camera.normalize(found[0].reshape(4, 2)))
        centres.append(tvec)
    return np.asarray(centres)


def propose_from_motion(config: MotionConfig, declared: ActionFrame) -> tuple[ActionFrame, dict[str, Any]]:
    """The whole `--from-motion`: returns the proposed frame and the residual report (not yet saved)."""
    commands = read_commands(config.from_motion)
    pose = load_camera_pose(config.extrinsics)
    source = SourceConfig(recording=config.from_motion)
    camera = CameraModel.from_realsense(source.intrinsics())
    centres = marker_centres((f.image for f in frames_from(source)), camera, config)
    if len(centres) != len(commands) + 1:
        raise CalibrationError(f"{config.from_motion} has {len(centres)} frames for {len(commands)} commands; "
                               "expected one frame more than commands (before the first step, after each step)")
    in_robot = centres @ pose.matrix[:3, :3].T + pose.matrix[:3, 3]
    fit = fit_motion(commands, np.diff(in_robot, axis=0))
    frame, report = propose_action_frame(fit, declared, config.snap_deg)
    report.update({"recording": str(config.from_motion), "extrinsics": str(config.extrinsics),
                   "measured_in": pose.parent_frame})
    return frame, report


__all__ = ["MotionConfig", "marker_centres", "propose_from_motion", "read_commands"]
