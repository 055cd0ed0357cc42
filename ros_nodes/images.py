"""ROS image messages -> numpy frames, decoded with OpenCV (no cv_bridge: it is not installable here).

Colour frames become RGB uint8 [H, W, 3] arrays owned by the caller; depth frames become float32
metres [H, W]. OpenCV only decodes and converts colour spaces here: the resize into the policy
stays PIL bicubic inside `rlrc_runtime` (parity with OpenVLA's training pipeline).

`sensor_msgs/Image` encodings (names as in ROS's sensor_msgs/image_encodings.hpp):

    rgb8 bgr8 rgba8 bgra8 mono8                         8-bit colour / grey
    yuv422 = uyvy (U Y0 V Y1), yuv422_yuy2 = yuyv        4:2:2, BT.601 video range (width even)
    bayer_rggb8 bayer_bggr8 bayer_gbrg8 bayer_grbg8     raw sensor mosaics, bilinear demosaic
    16UC1 (millimetres), 32FC1 (metres)                  depth, through `depth_msg_to_metres` only

`sensor_msgs/CompressedImage` (image_transport's `compressed`): JPEG and PNG, recognised by their
signature bytes; truncated or corrupt data is rejected before and after decoding. `decode_compressed`
can decode a JPEG at 1/2, 1/4 or 1/8 of its size in the DCT domain (libjpeg's scaled IDCT) when the
policy's input still fits in what is left: the policy's bicubic resize would throw those pixels away
anyway, and skipping them roughly halves the cost of decoding plus resizing (the resized input differs
from the full decode's by under one level on average, less than the JPEG's own error;
`benchmarks/image_intake.py` measures both).

Every malformed message raises `rlrc_runtime.InputError` naming the field, the value received and
the value expected; the VLA node reports it in /diagnostics and acts on no frame it could not read.
"""
from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np

from rlrc_runtime.errors import ConfigError, InputError

# encoding -> (bytes per pixel, OpenCV conversion to RGB by constant name; None = already RGB)
COLOR_ENCODINGS: dict[str, tuple[int, str | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, "COLOR_BGR2RGB"),
    "rgba8": (4, "COLOR_RGBA2RGB"),
    "bgra8": (4, "COLOR_BGRA2RGB"),
    "mono8": (1, "COLOR_GRAY2RGB"),
    "yuv422": (2, "COLOR_YUV2RGB_UYVY"),
    "uyvy": (2, "COLOR_YUV2RGB_UYVY"),
    "yuv422_yuy2": (2, "COLOR_YUV2RGB_YUY2"),
    "yuyv": (2, "COLOR_YUV2RGB_YUY2"),
    # OpenCV's BayerXXXX names give the 2x2 pattern from the top-left pixel, as ROS's do.
    "bayer_rggb8": (1, "COLOR_BayerRGGB2RGB"),
    "bayer_bggr8": (1, "COLOR_BayerBGGR2RGB"),
    "bayer_gbrg8": (1, "COLOR_BayerGBRG2RGB"),
    "bayer_grbg8": (1, "COLOR_BayerGRBG2RGB"),
}
# encoding -> (numpy little-endian dtype, metres per unit)
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {
    "16uc1": ("<u2", 1e-3),
    "32fc1": ("<f4", 1.0),
}
SUPPORTED = sorted(COLOR_ENCODINGS)
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_SIGNATURE, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ConfigError("decoding this image needs OpenCV, which is not installed; "
                          "install it with: pip install 'rlrc_runtime[ros]' (opencv-python-headless)") from exc
    return cv2


def require_opencv() -> None:
    """Raise ConfigError now (e.g. at node activation) if OpenCV is missing."""
    _cv2()


def _check_size(h: int, w: int, max_side: int, what: str) -> None:
    if not (1 <= h <= max_side and 1 <= w <= max_side):
        raise InputError(f"{what} size {w}x{h} is outside 1..{max_side} pixels per side "
                         "(max_image_side); check the camera's resolution")


def _pixels(msg: Any, bytes_per_pixel: int, max_side: int) -> np.ndarray:
    """The message's pixel bytes without row padding: uint8 [H, W * bytes_per_pixel] (a view)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(h, w, max_side, "image")
    row = w * bytes_per_pixel
    if step < row:
        raise InputError(f"image step {step} is smaller than width {w} x {bytes_per_pixel} bytes per pixel "
                         f"({msg.encoding}) = {row} bytes")
    data = np.frombuffer(msg.data, dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if data.size != step * h:
        raise InputError(f"image data has {data.size} bytes; expected height {h} x step {step} = {step * h}")
    return data.reshape(h, step)[:, :row]


def image_msg_to_rgb(msg: Any, max_side: int = 4096) -> np.ndarray:
    """sensor_msgs/Image in any of `SUPPORTED` -> RGB uint8 [H, W, 3] (a new array)."""
    encoding = str(msg.encoding).lower()
    if encoding in DEPTH_ENCODINGS:
        raise InputError(f"image encoding {msg.encoding!r} is depth, not colour; image_topic must carry a colour "
                         f"stream in one of {SUPPORTED} (e.g. /camera/camera/color/image_raw)")
    if encoding not in COLOR_ENCODINGS:
        raise InputError(f"image encoding {msg.encoding!r} is not supported; expected one of {SUPPORTED} "
                         "(configure the camera for one, e.g. realsense-ros rgb_camera.color_format:=RGB8)")
    bpp, conversion = COLOR_ENCODINGS[encoding]
    h, w = int(msg.height), int(msg.width)
    if bpp == 2 and w % 2:
        raise InputError(f"image width {w} is odd; {encoding} packs two pixels per 4 bytes, so the width must be even")
    if encoding.startswith("bayer_") and (w < 2 or h < 2):
        raise InputError(f"image size {w}x{h}: a {encoding} mosaic needs at least 2x2 pixels")
    rows = _pixels(msg, bpp, max_side)
    if conversion is None:
        return rows.reshape(h, w, 3).copy()
    cv2 = _cv2()
    src = rows.reshape(h, w) if bpp == 1 else rows.reshape(h, w, bpp)
    return cv2.cvtColor(src, getattr(cv2, conversion))


def depth_msg_to_metres(msg: Any, max_side: int = 4096) -> np.ndarray:
    """sensor_msgs/Image 16UC1 (mm) or 32FC1 (m) -> float32 [H, W] metres; no reading = NaN."""
    encoding = str(msg.encoding).lower()
    if encoding not in DEPTH_ENCODINGS:
        raise InputError(f"depth encoding {msg.encoding!r} is not supported; expected 16UC1 (millimetres) "
                         "or 32FC1 (metres)")
    dtype, scale = DEPTH_ENCODINGS[encoding]
    if bool(msg.is_bigendian):
        dtype = ">" + dtype[1:]
    h, w = int(msg.height), int(msg.width)
    raw = _pixels(msg, np.dtype(dtype).itemsize, max_side)
    values = np.ascontiguousarray(raw).view(dtype).reshape(h, w).astype(np.float32)
    if scale != 1.0:
        values *= np.float32(scale)
    values[~np.isfinite(values) | (values <= 0)] = np.nan  # REP 118: 0 / NaN / Inf mean no reading
    return values


# After a JPEG's start of scan, 0xFF may only precede a stuffed 0x00, a restart marker, a fill byte, the
# end of image or the table / scan segments between the scans of a progressive JPEG.
_SCAN_FOLLOWERS = np.zeros(256, bool)
_SCAN_FOLLOWERS[[0x00, 0xC4, 0xD9, 0xDA, 0xDB, 0xDD, 0xFE, 0xFF, *range(0xD0, 0xD8)]] = True


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a JPEG after checking its marker structure: every header segment where its
    predecessor's length says, a frame header and quantisation tables before the scan, and no stray
    marker inside the scan. (A flipped bit inside the entropy-coded data is not detectable here.)"""
    i, size, tables = 2, None, False
    while True:
        while i < len(data) and data[i] == 0xFF and i + 1 < len(data) and data[i + 1] == 0xFF:
            i += 1  # fill bytes
        if i + 4 > len(data) or data[i] != 0xFF:
            found = f"0x{data[i]:02x}" if i < len(data) else "the end of the data"
            raise InputError(f"JPEG is corrupt: expected a marker at byte {i} of {len(data)}, found {found}")
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2 or i + 2 + length > len(data):
            raise InputError(f"JPEG is corrupt: segment 0x{marker:02x} at byte {i} has length {length}, "
                             f"beyond the {len(data)} bytes received")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if length < 8:
                raise InputError(f"JPEG is corrupt: frame header at byte {i} is {length} bytes long")
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            size = (width, height)
        tables |= marker == 0xDB
        if marker == 0xDA:
            break
        i += 2 + length
    if size is None or not tables:
        raise InputError("JPEG is corrupt: no frame header (SOF) or no quantisation table (DQT) before the "
                         "image data")
    scan = np.frombuffer(data, np.uint8, offset=i + 2 + length)
    ff = np.flatnonzero(scan[:-1] == 0xFF)
    bad = ff[~_SCAN_FOLLOWERS[scan[ff + 1]]]
    if bad.size:
        raise InputError(f"JPEG is corrupt: stray marker 0xff{scan[bad[0] + 1]:02x} inside the image data at byte "
                         f"{i + 2 + length + int(bad[0])}")
    return size


def _compressed_size(data: bytes) -> tuple[str, int, int]:
    """('jpeg' | 'png', width, height) from the header; InputError for anything else or truncated data."""
    if data.startswith(_JPEG_SOI):
        if not data.rstrip(b"\x00").endswith(_JPEG_EOI):
            raise InputError(f"JPEG of {len(data)} bytes is truncated (no end-of-image marker FFD9); "
                             "check the network link or the publisher's QoS")
        return ("jpeg", *_jpeg_size(data))
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 33 or data[12:16] != b"IHDR" or not data.endswith(_PNG_IEND):
            raise InputError(f"PNG of {len(data)} bytes is truncated or corrupt (no IHDR header or IEND chunk)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    raise InputError(f"compressed image of {len(data)} bytes starting {data[:4].hex() or 'with nothing'} is neither "
                     "JPEG (ffd8ff) nor PNG (89504e47); expected image_transport's compressed format "
                     "(format 'rgb8; jpeg compressed bgr8' or png)")


# libjpeg scaled decoding: factor -> OpenCV's reduced-colour flag (BGR); the RGB variant is built from it
_JPEG_REDUCE = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def jpeg_scale(width: int, height: int, keep: int, crop: Sequence[float] = (0, 0, 0, 0)) -> int:
    """The largest scale-down (1, 2, 4 or 8) that leaves the frame, or its ``crop`` [x, y, w, h] in frame
    pixels (w or h 0 = none), at least ``keep`` pixels on each side; ``keep`` 0 = 1 (full size)."""
    cw, ch = (int(round(crop[2])), int(round(crop[3]))) if crop[2] > 0 and crop[3] > 0 else (width, height)
    scale = 1
    while keep > 0 and scale < 8 and min(cw, ch) // (scale * 2) >= keep:
        scale *= 2
    return scale


def compressed_msg_to_rgb(msg: Any, max_side: int = 4096) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> RGB uint8 [H, W, 3] at full size (a new array)."""
    return decode_compressed(msg, max_side)[0]


def decode_compressed(msg: Any, max_side: int = 4096, keep: int = 0,
                      crop: Sequence[float] = (0, 0, 0, 0)) -> tuple[np.ndarray, int]:
    """sensor_msgs/CompressedImage -> (RGB uint8 [H/s, W/s, 3], s). A JPEG is decoded at the scale-down s
    of `jpeg_scale` (``keep`` = the policy's input side, ``crop`` the node's crop); PNG always at s = 1."""
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise InputError(f"compressed image format {msg.format!r} is compressedDepth; image_topic must carry "
                         "colour (image_transport 'compressed': JPEG or PNG)")
    data = bytes(msg.data)
    codec, w, h = _compressed_size(data)
    _check_size(h, w, max_side, f"{codec.upper()} image")
    cv2 = _cv2()
    scale = jpeg_scale(w, h, keep, crop) if codec == "jpeg" else 1
    flag = cv2.IMREAD_COLOR if scale == 1 else getattr(cv2, _JPEG_REDUCE[scale])
    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB
    if rgb is not None:
        flag = (flag & ~cv2.IMREAD_COLOR) | rgb
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None or image.shape[:2] != (-(-h // scale), -(-w // scale)):
        raise InputError(f"{codec.upper()} image ({w}x{h} in its header, {len(data)} bytes) is corrupt: "
                         "OpenCV could not decode it")
    if rgb is None:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image, scale


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


def crop_image(image: np.ndarray, crop: Sequence[float], scale: int = 1) -> np.ndarray:
    """Apply the node's ``crop`` [x, y, width, height] in camera pixels (width or height 0 = no crop) to a
    frame decoded at 1/``scale`` of the camera's size."""
    x, y, cw, ch = (int(round(v)) for v in crop)
    if cw <= 0 or ch <= 0:
        return image
    h, w = image.shape[:2]
    if x + cw > w * scale or y + ch > h * scale:
        raise InputError(f"crop [x={x}, y={y}, w={cw}, h={ch}] does not fit the {w * scale}x{h * scale} frame; "
                         "fix the crop parameter or the camera resolution")
    x0, y0 = x // scale, y // scale
    return image[y0:y0 + max(1, ch // scale), x0:x0 + max(1, cw // scale)]
