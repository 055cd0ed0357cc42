"""The sim's tabletop scene with a calibration board on the table, an ArUco marker on the hand and a
RealSense-like camera, all at known poses: ground truth for the calibration tools.

The scene is sim.scene.build_mjcf plus three additions (a textured plane per pattern and a camera).
MuJoCo maps a 2-D texture onto a plane with the image's columns along the plane's +x and its rows
along -y, so OpenCV's board frame (x right, y down, z into the board) is the plane frame turned by
180 degrees about x, with its origin at the pattern's top-left corner.

Camera conventions: a MuJoCo camera looks along its -z with y up; the optical frame OpenCV and
ROS use looks along +z with y down (R_optical = R_mujoco @ diag(1, -1, -1)). MuJoCo renders a
symmetric frustum with square pixels, so fx = fy = (H / 2) / tan(fovy / 2) and the principal
point is the image centre, (W - 1) / 2 and (H - 1) / 2 in OpenCV's pixel-centre coordinates.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from calibration.extrinsics import BoardSpec, pose_matrix  # noqa: E402
from sim.scene import build_mjcf  # noqa: E402

FLIP = np.diag([1.0, -1.0, -1.0])
MARKER_OFFSET = (0.0, 0.0, 0.125)  # marker centre in the hand frame: just above the wrist


@dataclass(frozen=True)
class CameraSpec:
    eye: tuple[float, float, float] = (-0.15, -0.25, 0.50)
    target: tuple[float, float, float] = (0.15, 0.0, 0.0)
    fovy_deg: float = 42.0
    width: int = 640
    height: int = 480

    @property
    def optical_rotation(self) -> np.ndarray:
        """R_world_optical [3, 3]: columns x right, y down, z forward."""
        forward = np.subtract(self.target, self.eye)
        forward = forward / np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward], axis=1)

    @property
    def world_from_camera(self) -> np.ndarray:
        return pose_matrix(self.optical_rotation, np.array(self.eye))

    @property
    def pinhole(self) -> tuple[float, float, float, float]:
        f = (self.height / 2.0) / math.tan(math.radians(self.fovy_deg) / 2.0)
        return f, f, (self.width - 1) / 2.0, (self.height - 1) / 2.0


@dataclass
class BoardScene:
    model: mujoco.MjModel
    data: mujoco.MjData
    renderer: mujoco.Renderer
    camera: CameraSpec
    world_from_board: np.ndarray

    def set_hand(self, position: np.ndarray) -> None:
        """Put the hand (and its marker) at ``position`` [3] in the world, upright; no physics."""
        adr = self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, "hand")]
        self.data.qpos[adr:adr + 3] = position
        self.data.qpos[adr + 3:adr + 7] = (1.0, 0.0, 0.0, 0.0)
        mujoco.mj_forward(self.model, self.data)

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera="calib")
        return self.renderer.render().copy()  # RGB uint8 [H, W, 3]

    def close(self) -> None:
        self.renderer.close()


def _texture(name: str, image: np.ndarray, folder: Path) -> str:
    # The file name carries the content's hash: MuJoCo caches assets by file name within a process.
    path = folder / f"{name}_{hashlib.sha256(image.tobytes()).hexdigest()[:16]}.png"
    Image.fromarray(image).convert("RGB").save(path)
    return (f'<texture name="{name}" type="2d" file="{path}"/>'
            f'<material name="{name}" texture="{name}" texrepeat="1 1" texuniform="false" specular="0" shininess="0"/>')


def build_board_scene(folder: Path, board: BoardSpec, board_center: tuple[float, float], board_yaw: float,
                      marker: tuple[str, int, float] | None = None, camera: CameraSpec = CameraSpec()) -> BoardScene:
    """The tabletop with ``board`` lying face up at ``board_center`` (x, y) turned by ``board_yaw`` rad,
    an optional ``marker`` = (dictionary, id, side m) on top of the hand, and the "calib" camera."""
    import cv2

    px_per_m = 2500.0
    margin = int(0.01 * px_per_m)
    pattern = board.image(px_per_m, margin_px=margin)
    w_m, h_m = board.size_m
    half = (pattern.shape[1] / px_per_m / 2.0, pattern.shape[0] / px_per_m / 2.0)
    assets = [_texture("board", pattern, folder)]
    cx, cy = board_center
    geoms = [f'<geom name="board" type="plane" size="{half[0]} {half[1]} 0.01" pos="{cx} {cy} 0.0005" '
             f'euler="0 0 {board_yaw}" material="board" contype="0" conaffinity="0"/>']
    r = camera.optical_rotation @ FLIP  # MuJoCo camera axes: x right, y up
    xyaxes = " ".join(f"{v:.9f}" for v in np.concatenate([r[:, 0], r[:, 1]]))
    ex, ey, ez = camera.eye
    geoms.append(f'<camera name="calib" pos="{ex} {ey} {ez}" xyaxes="{xyaxes}" fovy="{camera.fovy_deg}"/>')
    hand_geom = ""
    if marker is not None:
        dictionary, marker_id, side = marker
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
        cells = d.markerSize + 2
        px = cells * 40
        tag = np.pad(cv2.aruco.generateImageMarker(d, marker_id, px), px // cells, constant_values=255)
        assets.append(_texture("hand_marker", tag, folder))
        half_tag = side / 2.0 * tag.shape[0] / px
        mx, my, mz = MARKER_OFFSET
        hand_geom = (f'<geom name="hand_marker" type="box" size="{half_tag} {half_tag} 0.0005" pos="{mx} {my} {mz}" '
                     'material="hand_marker" contype="0" conaffinity="0" mass="0"/>')
    xml = build_mjcf(max(camera.width, camera.height))
    xml = xml.replace("<worldbody>", f"<asset>{''.join(assets)}</asset>\n  <worldbody>", 1)
    xml = xml.replace("</worldbody>", "".join(geoms) + "\n  </worldbody>", 1)
    if hand_geom:
        anchor = '<site name="pinch"'
        xml = xml.replace(anchor, hand_geom + anchor, 1)
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    c, s = math.cos(board_yaw), math.sin(board_yaw)
    world_from_plane = pose_matrix(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.array([cx, cy, 0.0005]))
    plane_from_board = pose_matrix(FLIP, np.array([-w_m / 2.0, h_m / 2.0, 0.0]))
    renderer = mujoco.Renderer(model, height=camera.height, width=camera.width)
    return BoardScene(model, data, renderer, camera, world_from_plane @ plane_from_board)
