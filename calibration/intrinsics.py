"""RealSense colour intrinsics: to a ROS camera_info YAML, and as the camera model the pose solvers use.

`CameraModel` turns detected pixels into normalised image coordinates (x/z, y/z) the way the
intrinsics mean them: OpenCV's plumb-bob model when librealsense's model is Brown-Conrady (the
same polynomial) or the coefficients are all zero, librealsense's own deprojection for its other
models (inverse / modified Brown-Conrady, Kannala-Brandt), so no model is silently approximated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calibration.capture import SourceConfig
from rlrc_runtime.camera import camera_info_dict
from rlrc_runtime.errors import ConfigError


@dataclass(frozen=True)
class IntrinsicsConfig:
    """Where the camera_info YAML goes."""

    out: Path = field(metadata={"help": "camera_info YAML to write"})
    camera_name: str = field(default="camera", metadata={"help": "camera_name field of the YAML"})

    def __post_init__(self) -> None:
        if not self.camera_name:
            raise ConfigError("--camera-name is empty; give the camera's name, e.g. camera")


def export_intrinsics(config: IntrinsicsConfig, source: SourceConfig) -> dict[str, Any]:
    """Write the colour stream's intrinsics to ``config.out`` (ROS camera_info layout); return them."""
    info = camera_info_dict(source.intrinsics(), camera_name=config.camera_name)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(info, sort_keys=False))
    return info


@dataclass(frozen=True)
class CameraModel:
    """A colour camera's intrinsics, from a RealSense device or recording."""

    width: int
    height: int
    matrix: np.ndarray
    """K [3, 3] float64: fx, fy on the diagonal, principal point (ppx, ppy) in the last column."""
    coeffs: tuple[float, ...]
    """librealsense's five distortion coefficients."""
    model: str
    """librealsense's distortion model name, e.g. brown_conrady."""
    rs_intrinsics: Any = field(default=None, compare=False, repr=False)
    """The rs.intrinsics it came from (librealsense deprojection for non-OpenCV models)."""

    @classmethod
    def from_realsense(cls, intr: Any) -> "CameraModel":
        k = np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]], np.float64)
        return cls(width=int(intr.width), height=int(intr.height), matrix=k,
                   coeffs=tuple(float(c) for c in intr.coeffs), model=str(intr.model).split(".")[-1],
                   rs_intrinsics=intr)

    @property
    def opencv_compatible(self) -> bool:
        return self.model in ("brown_conrady", "none") or not any(self.coeffs)

    def check_frame(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if (w, h) != (self.width, self.height):
            raise ConfigError(f"frame is {w}x{h} but the colour intrinsics are for {self.width}x{self.height}; "
                              "take frames and intrinsics from the same stream")

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel coordinates [N, 2] -> undistorted normalised coordinates [N, 2] (float64)."""
        import cv2

        pts = np.asarray(pixels, np.float64).reshape(-1, 2)
        if self.opencv_compatible:
            dist = np.asarray(self.coeffs if any(self.coeffs) else (0.0,) * 5, np.float64)
            return cv2.undistortPoints(pts.reshape(-1, 1, 2), self.matrix, dist).reshape(-1, 2)
        import pyrealsense2 as rs

        out = [rs.rs2_deproject_pixel_to_point(self.rs_intrinsics, [float(u), float(v)], 1.0) for u, v in pts]
        return np.asarray(out, np.float64)[:, :2]

    def describe(self) -> dict[str, Any]:
        k = self.matrix
        return {"width": self.width, "height": self.height, "fx": float(k[0, 0]), "fy": float(k[1, 1]),
                "ppx": float(k[0, 2]), "ppy": float(k[1, 2]), "model": self.model, "coeffs": list(self.coeffs)}


__all__ = ["CameraModel", "IntrinsicsConfig", "export_intrinsics"]
