"""sensor_msgs/Image <-> numpy without cv_bridge (not installable here; numpy is enough).

Frames become RGB uint8 [H, W, 3] arrays owned by the caller. Malformed messages raise
`rlrc_runtime.InputError` naming the field, the value received and the value expected.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rlrc_runtime.errors import InputError

# encoding -> (channels, channel order taken to make RGB)
ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
}


def image_msg_to_rgb(msg: Any, max_side: int = 4096) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8) -> RGB uint8 [H, W, 3] (a copy)."""
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise InputError(f"image encoding {msg.encoding!r} is not supported; expected one of {sorted(ENCODINGS)} "
                         "(configure the camera for rgb8, e.g. realsense-ros rgb_camera.color_format:=RGB8)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if not (1 <= h <= max_side and 1 <= w <= max_side):
        raise InputError(f"image size {w}x{h} is outside 1..{max_side} pixels per side")
    channels, order = ENCODINGS[encoding]
    row = w * channels
    if step < row:
        raise InputError(f"image step {step} is smaller than width {w} x {channels} channels = {row} bytes")
    data = np.frombuffer(msg.data, dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if data.size != step * h:
        raise InputError(f"image data has {data.size} bytes; expected height {h} x step {step} = {step * h}")
    pixels = data.reshape(h, step)[:, :row].reshape(h, w, channels)
    return np.ascontiguousarray(pixels[..., list(order)])


def fill_image_msg(msg: Any, image: np.ndarray, encoding: str = "rgb8") -> Any:
    """Write RGB uint8 [H, W, 3] into ``msg`` (a sensor_msgs/Image) as rgb8 or bgr8."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image {image.shape} {image.dtype}; expected (H, W, 3) uint8 RGB")
    if encoding == "bgr8":
        image = image[..., ::-1]
    elif encoding != "rgb8":
        raise InputError(f"encoding {encoding!r}: expected rgb8 or bgr8")
    h, w = image.shape[:2]
    msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = h, w, encoding, 0, w * 3
    msg.data = np.ascontiguousarray(image).tobytes()
    return msg


def crop_image(image: np.ndarray, crop: Sequence[float]) -> np.ndarray:
    """Apply the node's ``crop`` [x, y, width, height] (width or height 0 = no crop)."""
    x, y, cw, ch = (int(round(v)) for v in crop)
    if cw <= 0 or ch <= 0:
        return image
    h, w = image.shape[:2]
    if x + cw > w or y + ch > h:
        raise InputError(f"crop [x={x}, y={y}, w={cw}, h={ch}] does not fit the {w}x{h} frame; "
                         "fix the crop parameter or the camera resolution")
    return image[y:y + ch, x:x + cw]
