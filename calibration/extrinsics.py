"""Camera-to-robot extrinsics from a ChArUco (or ArUco grid) board at a known pose in the robot frame.

Each frame: OpenCV's ArUco detector finds the board's markers (and, for ChArUco, the chessboard
corners between them, located to a fraction of a pixel); the pixels are undistorted with the
RealSense intrinsics (`CameraModel`) and `cv2.solvePnP` (IPPE, planar) + Levenberg-Marquardt
refinement gives the board's pose in the camera frame, T_cam_board. All frames are then refined
jointly (the camera and the board are still, so every frame measures the same pose), and

    T_robot_cam = T_robot_board @ inv(T_cam_board)

with T_robot_board given by the user (where the board lies in the robot frame). The spread of the
single-frame solutions around the joint one is reported next to the reprojection error.

Board frame (OpenCV's): origin at the board's top-left corner as printed by `rlrc-calib board`,
x along the top edge to the right, y down the left edge, z into the board. Camera frame: the
optical frame (x right, y down, z forward), as ROS's ``camera_color_optical_frame``.

cv2 is imported inside the functions that need it (the ROS side's optional dependency).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from calibration.action_frame import matrix_to_rpy, rotation_angle_deg, rpy_matrix
from calibration.capture import SourceConfig, frames_from
from calibration.errors import CalibrationError, read_yaml
from calibration.intrinsics import CameraModel
from rlrc_runtime.config import did_you_mean
from rlrc_runtime.errors import ConfigError

log = logging.getLogger(__name__)

BOARDS = ("charuco", "grid")
DICTIONARIES = tuple(f"DICT_{n}X{n}_{k}" for n in (4, 5, 6, 7) for k in (50, 100, 250, 1000)) + (
    "DICT_ARUCO_ORIGINAL", "DICT_APRILTAG_16h5", "DICT_APRILTAG_25h9", "DICT_APRILTAG_36h10", "DICT_APRILTAG_36h11")
POSE_VERSION = 1


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ConfigError("the calibration tools need OpenCV: pip install 'rlrc_runtime[ros]' "
                          "(opencv-python-headless)") from exc
    return cv2


def parse_floats(text: str, n: int, name: str) -> tuple[float, ...]:
    """'a,b,c' -> n floats; ConfigError naming the flag otherwise."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError as exc:
        raise ConfigError(f"{name} {text!r}: expected {n} comma-separated numbers") from exc
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{name} {text!r}: expected {n} comma-separated finite numbers, got {len(values)}")
    return values


def _dictionary(name: str) -> Any:
    cv2 = _cv2()
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


def _check_dictionary(name: str) -> None:
    if name not in DICTIONARIES:
        raise ConfigError(f"--dictionary {name!r} is not an OpenCV ArUco dictionary; expected one of "
                          f"{list(DICTIONARIES)}.{did_you_mean(name, list(DICTIONARIES))}")


# -- the board ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoardSpec:
    """The calibration board as printed (all lengths in metres, measured on the print)."""

    board: str = field(default="charuco", metadata={
        "help": "charuco (chessboard with markers in the white squares; sub-pixel corners) or grid (ArUco grid)",
        "choices": BOARDS})
    squares_x: int = field(default=7, metadata={"help": "squares (grid: markers) along the board's x (width)"})
    squares_y: int = field(default=5, metadata={"help": "squares (grid: markers) along the board's y (height)"})
    square_size: float = field(default=0.04, metadata={
        "help": "chessboard square side (grid: marker pitch = marker side + gap), metres"})
    marker_size: float = field(default=0.03, metadata={"help": "ArUco marker side, metres"})
    dictionary: str = field(default="DICT_4X4_50", metadata={"help": "OpenCV ArUco dictionary of the markers"})
    legacy_pattern: bool = field(default=False, metadata={
        "help": "ChArUco boards made by OpenCV < 4.6 (or calib.io) with an even number of rows start with a "
                "marker square; set this for them"})

    def __post_init__(self) -> None:
        if self.board not in BOARDS:
            raise ConfigError(f"--board {self.board!r}: expected one of {list(BOARDS)}")
        if self.squares_x < 2 or self.squares_y < 2:
            raise ConfigError(f"--squares-x {self.squares_x} --squares-y {self.squares_y}: both must be >= 2")
        if not (0 < self.marker_size < self.square_size):
            raise ConfigError(f"--marker-size {self.marker_size} must be > 0 and smaller than --square-size "
                              f"{self.square_size} (metres, measured on the print)")
        _check_dictionary(self.dictionary)
        if self.markers > _dictionary(self.dictionary).bytesList.shape[0]:
            raise ConfigError(f"the board needs {self.markers} markers but {self.dictionary} has only "
                              f"{_dictionary(self.dictionary).bytesList.shape[0]}; choose a larger dictionary")

    @property
    def markers(self) -> int:
        n = self.squares_x * self.squares_y
        return n // 2 if self.board == "charuco" else n

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) of the printed pattern, metres."""
        if self.board == "charuco":
            return self.squares_x * self.square_size, self.squares_y * self.square_size
        gap = self.square_size - self.marker_size
        return self.squares_x * self.square_size - gap, self.squares_y * self.square_size - gap

    def build(self) -> Any:
        """The OpenCV board object (cv2.aruco.CharucoBoard or GridBoard)."""
        cv2 = _cv2()
        d = _dictionary(self.dictionary)
        if self.board == "charuco":
            board = cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_size, self.marker_size, d)
            board.setLegacyPattern(self.legacy_pattern)
            return board
        return cv2.aruco.GridBoard((self.squares_x, self.squares_y), self.marker_size,
                                   self.square_size - self.marker_size, d)

    def image(self, px_per_metre: float, margin_px: int = 0) -> np.ndarray:
        """The printable pattern, uint8 grey [H, W] with a white margin of ``margin_px`` on every side."""
        w_m, h_m = self.size_m
        w, h = int(round(w_m * px_per_metre)), int(round(h_m * px_per_metre))
        pattern = self.build().generateImage((w, h), marginSize=0, borderBits=1)
        return np.pad(pattern, margin_px, constant_values=255)


def detect_board(board: Any, spec: BoardSpec, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Board points seen in one grey uint8 [H, W] frame: (object points [N, 3] m, pixels [N, 2]); N may be 0."""
    cv2 = _cv2()
    if spec.board == "charuco":
        corners, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(gray)
    else:
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        corners, ids, _ = cv2.aruco.ArucoDetector(board.getDictionary(), params).detectMarkers(gray)
    if ids is None or len(ids) == 0:
        return np.zeros((0, 3)), np.zeros((0, 2))
    obj, img = board.matchImagePoints(corners, ids)
    if obj is None or len(obj) == 0:
        return np.zeros((0, 3)), np.zeros((0, 2))
    return np.asarray(obj, np.float64).reshape(-1, 3), np.asarray(img, np.float64).reshape(-1, 2)


# -- poses -------------------------------------------------------------------------------------
def pose_matrix(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """R [3, 3] and t [3] -> T [4, 4] (p_parent = R p_child + t)."""
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rotation, np.asarray(translation, np.float64).reshape(3)
    return t


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """R [3, 3] -> unit quaternion (x, y, z, w), w >= 0."""
    r = rotation
    w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2.0
    x = math.copysign(math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2.0, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2.0, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2.0, r[1, 0] - r[0, 1])
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return tuple(float(v) for v in q)  # type: ignore[return-value]


@dataclass(frozen=True)
class CameraPose:
    """The camera (optical) frame in a robot frame: p_parent = matrix @ [p_camera, 1]."""

    matrix: np.ndarray
    """T_parent_camera [4, 4] float64."""
    parent_frame: str = "base_link"
    child_frame: str = "camera_color_optical_frame"
    quality: dict[str, Any] = field(default_factory=dict, compare=False)
    source: str = field(default="<memory>", compare=False)

    def to_yaml_dict(self) -> dict[str, Any]:
        r, t = self.matrix[:3, :3], self.matrix[:3, 3]
        return {
            "version": POSE_VERSION,
            "parent_frame": self.parent_frame,
            "child_frame": self.child_frame,
            "translation": [round(float(v), 6) for v in t],
            "rotation_xyzw": [round(v, 8) for v in matrix_to_quaternion(r)],
            "rotation_rpy": [round(v, 8) for v in matrix_to_rpy(r)],
            "quality": self.quality,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# rlrc_runtime camera pose in the robot frame (rlrc-calib extrinsics)\n"
                        + yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))
        return path

    def static_transform_command(self) -> str:
        """The tf2_ros command that publishes this pose."""
        (x, y, z), (qx, qy, qz, qw) = self.matrix[:3, 3], matrix_to_quaternion(self.matrix[:3, :3])
        return (f"ros2 run tf2_ros static_transform_publisher --x {x:.6f} --y {y:.6f} --z {z:.6f} "
                f"--qx {qx:.8f} --qy {qy:.8f} --qz {qz:.8f} --qw {qw:.8f} "
                f"--frame-id {self.parent_frame} --child-frame-id {self.child_frame}")


def load_camera_pose(path: str | Path) -> CameraPose:
    """Read a camera pose YAML written by `rlrc-calib extrinsics`; errors name the file and the field."""
    path = Path(path)
    data = read_yaml(path, "camera pose", "measure one with `rlrc-calib extrinsics`")
    if not isinstance(data, dict) or data.get("version") != POSE_VERSION:
        raise ConfigError(f"camera pose file {path}: version={None if not isinstance(data, dict) else data.get('version')!r}; "
                          f"expected {POSE_VERSION} (write it with `rlrc-calib extrinsics`)")
    try:
        t = np.asarray(data["translation"], np.float64).reshape(3)
        q = np.asarray(data["rotation_xyzw"], np.float64).reshape(4)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"camera pose file {path}: translation [3] and rotation_xyzw [4] are required ({exc})") from exc
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and abs(np.linalg.norm(q) - 1.0) < 1e-3):
        raise ConfigError(f"camera pose file {path}: translation {t.tolist()} / rotation_xyzw {q.tolist()} must be "
                          "finite and the quaternion of unit length")
    x, y, z, w = q / np.linalg.norm(q)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return CameraPose(pose_matrix(r, t), str(data.get("parent_frame", "base_link")),
                      str(data.get("child_frame", "camera_color_optical_frame")), data.get("quality", {}), str(path))


def solve_pnp(obj: np.ndarray, normalized: np.ndarray, rvec: np.ndarray | None = None,
              tvec: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Pose of planar object points [N, 3] seen at normalised coordinates [N, 2]: (rvec [3], tvec [3], rms).

    With ``rvec``/``tvec`` it only refines them (Levenberg-Marquardt); rms is in normalised units.
    """
    cv2 = _cv2()
    k, dist = np.eye(3), np.zeros(5)
    o, n = obj.reshape(-1, 1, 3).astype(np.float64), normalized.reshape(-1, 1, 2).astype(np.float64)
    if rvec is None or tvec is None:
        ok, rvec, tvec = cv2.solvePnP(o, n, k, dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            raise CalibrationError(f"solvePnP found no pose for {len(obj)} board points")
    rvec, tvec = cv2.solvePnPRefineLM(o, n, k, dist, np.asarray(rvec, np.float64).reshape(3, 1),
                                      np.asarray(tvec, np.float64).reshape(3, 1))
    proj, _ = cv2.projectPoints(o, rvec, tvec, k, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - n.reshape(-1, 2)) ** 2, axis=1))))
    return rvec.reshape(3), tvec.reshape(3), rms


# -- the command -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtrinsicsConfig:
    """What `rlrc-calib extrinsics` measures and where it writes it."""

    out: Path = field(metadata={"help": "camera pose YAML to write"})
    board_pose: str = field(metadata={
        "help": "the board frame in the robot frame as x,y,z,roll,pitch,yaw (metres, radians; R = Rz Ry Rx); "
                "board frame: origin at the printed top-left corner, x right, y down, z into the board "
                "(write --board-pose=-0.1,... when the first value is negative)"})
    robot_frame: str = field(default="base_link", metadata={"help": "the robot frame board_pose is given in"})
    camera_frame: str = field(default="camera_color_optical_frame", metadata={
        "help": "name of the camera's optical frame (child frame of the result)"})
    frames: int = field(default=30, metadata={"help": "use at most this many frames that show the board"})
    min_points: int = field(default=8, metadata={"help": "ignore frames with fewer board points than this"})

    def __post_init__(self) -> None:
        parse_floats(self.board_pose, 6, "--board-pose")
        if self.frames < 1 or self.min_points < 4:
            raise ConfigError(f"--frames {self.frames} must be >= 1 and --min-points {self.min_points} >= 4")
        if not self.robot_frame or not self.camera_frame:
            raise ConfigError("--robot-frame and --camera-frame must be non-empty frame names")

    @property
    def robot_from_board(self) -> np.ndarray:
        x, y, z, roll, pitch, yaw = parse_floats(self.board_pose, 6, "--board-pose")
        return pose_matrix(rpy_matrix((roll, pitch, yaw)), np.array([x, y, z]))


def board_views(images: Iterable[np.ndarray], spec: BoardSpec, camera: CameraModel, frames: int,
                min_points: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(object points [N, 3], normalised points [N, 2]) of up to ``frames`` RGB frames showing the board."""
    cv2 = _cv2()
    board = spec.build()
    views, seen = [], 0
    for image in images:
        seen += 1
        camera.check_frame(image)
        obj, px = detect_board(board, spec, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        if len(obj) < min_points:
            log.debug("frame %d: %d board points < %d, skipped", seen - 1, len(obj), min_points)
            continue
        views.append((obj, camera.normalize(px)))
        if len(views) >= frames:
            break
    if not views:
        raise CalibrationError(f"none of {seen} frames shows at least {min_points} points of the {spec.board} board "
                               f"({spec.squares_x}x{spec.squares_y}, {spec.dictionary}); check the board flags "
                               "(dictionary, squares, --legacy-pattern), lighting and focus")
    return views


def estimate_camera_pose(views: list[tuple[np.ndarray, np.ndarray]], config: ExtrinsicsConfig,
                         camera: CameraModel) -> CameraPose:
    """T_robot_cam from the board views (see the module docstring)."""
    cv2 = _cv2()
    singles = [solve_pnp(obj, norm) for obj, norm in views]
    # Start the joint refinement from the single-frame solution with the median distance (robust to one bad view).
    start = singles[int(np.argsort([np.linalg.norm(t) for _, t, _ in singles])[len(singles) // 2])]
    all_obj = np.concatenate([obj for obj, _ in views])
    all_norm = np.concatenate([norm for _, norm in views])
    rvec, tvec, rms = solve_pnp(all_obj, all_norm, start[0], start[1])
    cam_from_board = pose_matrix(cv2.Rodrigues(rvec)[0], tvec)
    spread_t = max(float(np.linalg.norm(t - tvec)) for _, t, _ in singles)
    spread_r = max(rotation_angle_deg(cv2.Rodrigues(r)[0].T @ cam_from_board[:3, :3]) for r, _, _ in singles)
    fx = float(camera.matrix[0, 0])
    quality = {
        "frames_used": len(views),
        "points_per_frame": round(float(np.mean([len(obj) for obj, _ in views])), 1),
        "reprojection_rms_px": round(rms * fx, 4),
        "spread_translation_mm": round(spread_t * 1e3, 3),
        "spread_rotation_deg": round(spread_r, 4),
        "board_distance_m": round(float(np.linalg.norm(tvec)), 4),
        "intrinsics": camera.describe(),
    }
    robot_from_cam = config.robot_from_board @ np.linalg.inv(cam_from_board)
    return CameraPose(robot_from_cam, config.robot_frame, config.camera_frame, quality)


def measure_extrinsics(config: ExtrinsicsConfig, board: BoardSpec, source: SourceConfig) -> CameraPose:
    """The whole `rlrc-calib extrinsics`: intrinsics and frames from ``source``, pose written to ``config.out``."""
    camera = CameraModel.from_realsense(source.intrinsics())
    views = board_views((f.image for f in frames_from(source)), board, camera, config.frames, config.min_points)
    pose = estimate_camera_pose(views, config, camera)
    pose.quality["source"] = source.describe()
    pose.quality["board"] = {"board": board.board, "squares": [board.squares_x, board.squares_y],
                             "square_size": board.square_size, "marker_size": board.marker_size,
                             "dictionary": board.dictionary, "pose_in_robot_frame": config.board_pose}
    pose.save(config.out)
    return pose


__all__ = ["BoardSpec", "CalibrationError", "CameraPose", "ExtrinsicsConfig", "board_views", "detect_board",
           "estimate_camera_pose", "load_camera_pose", "matrix_to_quaternion", "matrix_to_rpy", "measure_extrinsics",
           "parse_floats", "pose_matrix", "solve_pnp"]
