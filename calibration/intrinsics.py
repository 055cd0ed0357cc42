"""RealSense colour intrinsics -> ROS camera_info YAML (the camera_calibration_parsers layout)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ros_nodes.realsense import camera_info_dict, color_intrinsics


def export_intrinsics(out: str | Path, recording: str | Path | None = None, serial: str = "", width: int = 640,
                      height: int = 480, fps: int = 30, camera_name: str = "camera") -> dict[str, Any]:
    """Write the colour stream's intrinsics (from a recording or a live camera) to ``out``; return them."""
    intr = color_intrinsics(recording, serial=serial, width=width, height=height, fps=fps)
    info = camera_info_dict(intr, camera_name=camera_name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(info, sort_keys=False))
    return info


def load_intrinsics(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())
