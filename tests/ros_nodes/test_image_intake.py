"""Image intake: real sensor_msgs messages carrying really encoded frames, decoded by ros_nodes.images.

Each encoding's bytes are made by an encoder independent of the decoder under test (numpy for the
raw layouts, BT.601 for YUV, PIL/libjpeg/libpng for CompressedImage), so a swapped channel, a wrong
Bayer phase or a wrong chroma order fails.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

pytest.importorskip("cv2")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from rlrc_runtime.errors import InputError  # noqa: E402
from rlrc_runtime.preprocess import ImageTransform  # noqa: E402
from ros_nodes.images import (COLOR_ENCODINGS, compressed_msg_to_rgb, crop_image, decode_compressed,  # noqa: E402
                              depth_msg_to_metres, fill_image_msg, image_msg_to_rgb, jpeg_scale)

H, W = 24, 32
PAD = 8  # bytes of row padding, as some drivers add


def smooth_rgb(h: int = H, w: int = W) -> np.ndarray:
    """A smooth colour image whose channels differ everywhere (so any channel swap shows)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 170 + 60 * np.sin(x / 9.0)
    g = 40 + 3 * x + 2 * y
    b = 200 - 4 * y + 20 * np.cos(x / 7.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8)


def bt601(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB -> video-range Y, Cb, Cr (ITU-R BT.601), float."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, cb, cr


def encode(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(payload uint8 [H, row bytes], expected RGB, tolerance) for ``encoding``."""
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        order = [0, 1, 2] if encoding.startswith("rgb") else [2, 1, 0]
        pixels = rgb[..., order]
        if encoding.endswith("a8"):
            pixels = np.concatenate([pixels, np.full((*rgb.shape[:2], 1), 77, np.uint8)], -1)
        return pixels.reshape(rgb.shape[0], -1), rgb, 0
    if encoding == "mono8":
        grey = rgb[..., 1]
        return grey, np.repeat(grey[..., None], 3, -1), 0
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        pairs = np.repeat(rgb[:, ::2], 2, axis=1)  # one colour per pixel pair: 4:2:2 loses nothing else
        y, cb, cr = (np.round(c).astype(np.uint8) for c in bt601(pairs))
        out = np.zeros((rgb.shape[0], rgb.shape[1] * 2), np.uint8)
        if encoding in ("yuv422", "uyvy"):  # U Y0 V Y1
            out[:, 0::4], out[:, 1::2], out[:, 2::4] = cb[:, ::2], y, cr[:, ::2]
        else:  # Y0 U Y1 V
            out[:, 0::2], out[:, 1::4], out[:, 3::4] = y, cb[:, ::2], cr[:, ::2]
        return out, pairs, 3
    pattern = encoding[len("bayer_"):-1]  # e.g. "rggb": colours at (0,0) (0,1) (1,0) (1,1)
    mosaic = np.zeros(rgb.shape[:2], np.uint8)
    for colour, (dy, dx) in zip(pattern, [(0, 0), (0, 1), (1, 0), (1, 1)]):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return mosaic, rgb, 6


def raw_msg(payload: np.ndarray, encoding: str, width: int, pad: int = PAD) -> Image:
    rows = np.pad(payload, ((0, 0), (0, pad)), constant_values=0xEE)
    msg = Image(height=payload.shape[0], width=width, encoding=encoding, step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding", sorted(COLOR_ENCODINGS))
def test_every_raw_encoding_decodes_to_the_encoded_colours(encoding):
    rgb = smooth_rgb()
    payload, expected, tol = encode(rgb, encoding)
    out = image_msg_to_rgb(raw_msg(payload, encoding, W))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    border = 2 if encoding.startswith("bayer_") else 0  # demosaicing extrapolates at the edge
    region = (slice(border, H - border), slice(border, W - border))
    error = np.abs(out[region].astype(int) - expected[region].astype(int)).max()
    assert error <= tol, f"{encoding}: max error {error} > {tol}"


def test_bayer_phases_are_not_interchangeable():
    rgb = smooth_rgb()
    mosaic, _, _ = encode(rgb, "bayer_rggb8")
    wrong = image_msg_to_rgb(raw_msg(mosaic, "bayer_gbrg8", W))
    assert np.abs(wrong[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).max() > 50


def test_a_sensor_msgs_image_round_trip():
    rgb = smooth_rgb()
    for encoding in ("rgb8", "bgr8"):
        np.testing.assert_array_equal(image_msg_to_rgb(fill_image_msg(Image(), rgb, encoding)), rgb)


def _jpeg(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def compressed(data: bytes, fmt: str = "rgb8; jpeg compressed bgr8") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def test_compressed_jpeg_and_png_decode():
    rgb = smooth_rgb(48, 64)
    data = _jpeg(rgb)
    out = compressed_msg_to_rgb(compressed(data))
    reference = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - reference).max() <= 2  # two libjpeg builds, same file
    assert np.abs(out.astype(int) - rgb).mean() < 3
    progressive = _jpeg(rgb, progressive=True, optimize=True)
    assert np.abs(compressed_msg_to_rgb(compressed(progressive)).astype(int) - rgb).mean() < 3
    np.testing.assert_array_equal(compressed_msg_to_rgb(compressed(_png(rgb), "bgr8; png compressed bgr8")), rgb)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(compressed_msg_to_rgb(compressed(_png(grey), "png")),
                                  np.repeat(grey[..., None], 3, -1))
    rgba = np.concatenate([rgb, np.full((48, 64, 1), 9, np.uint8)], -1)
    np.testing.assert_array_equal(compressed_msg_to_rgb(compressed(_png(rgba), "png")), rgb)


def _bad_compressed() -> list[tuple[bytes, str, str]]:
    rgb = smooth_rgb(48, 64)
    jpeg, png = _jpeg(rgb), _png(rgb)
    no_sof = bytearray(jpeg)
    i = no_sof.find(b"\xff\xc0")
    no_sof[i + 1] = 0xFE  # the frame header becomes a comment: no image size anywhere
    huge = bytearray(jpeg)
    huge[i + 5:i + 9] = (20000).to_bytes(2, "big") * 2  # claims 20000 x 20000 pixels
    garbled = bytearray(jpeg)
    garbled[i + 20:i + 400] = bytes(380)  # tables and scan data overwritten, markers intact at both ends
    return [
        (jpeg[: len(jpeg) // 2], "jpeg", "truncated"),
        (bytes(no_sof), "jpeg", "no frame header"),
        (bytes(huge), "jpeg", "outside 1..4096"),
        (bytes(garbled), "jpeg", "corrupt"),
        (png[:-30], "png", "truncated or corrupt"),
        (b"", "jpeg", "neither JPEG"),
        (np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(), "jpeg", "neither JPEG"),
        (png, "16UC1; compressedDepth png", "compressedDepth"),
    ]


@pytest.mark.parametrize("data, fmt, match", _bad_compressed(),
                         ids=["truncated", "no-sof", "huge", "garbled", "png-cut", "empty", "noise", "depth"])
def test_corrupt_compressed_images_raise_input_errors(data, fmt, match):
    with pytest.raises(InputError, match=match):
        compressed_msg_to_rgb(compressed(data, fmt))


def _raw(h=4, w=6, encoding="rgb8", step=None, nbytes=None) -> Image:
    bpp = {"rgb8": 3, "yuyv": 2, "bayer_rggb8": 1}.get(encoding, 3)
    step = w * bpp if step is None else step
    msg = Image(height=h, width=w, encoding=encoding, step=step)
    msg.data = bytes(h * step if nbytes is None else nbytes)
    return msg


@pytest.mark.parametrize("msg, match", [
    (_raw(encoding="mono16"), "not supported"),
    (_raw(encoding="16UC1"), "depth, not colour"),
    (_raw(encoding="32FC1"), "depth, not colour"),
    (_raw(h=0), "size 6x0"),
    (_raw(w=100_000, step=10), "size 100000x4"),
    (_raw(step=2), "step 2"),
    (_raw(nbytes=10), "10 bytes"),
    (_raw(w=5, encoding="yuyv", step=10), "odd"),
    (_raw(h=1, w=1, encoding="bayer_rggb8"), "2x2"),
], ids=["mono16", "16UC1", "32FC1", "zero-height", "too-wide", "short-step", "short-data", "odd-yuyv", "tiny-bayer"])
def test_malformed_raw_images_raise_input_errors(msg, match):
    with pytest.raises(InputError, match=match):
        image_msg_to_rgb(msg)


def test_depth_in_millimetres_and_metres_becomes_metres():
    mm = np.array([[0, 500, 1234], [65535, 1, 2000]], np.uint16)
    for big in (False, True):
        payload = mm.astype(">u2" if big else "<u2").view(np.uint8).reshape(2, -1)
        msg = raw_msg(payload, "16UC1", 3, pad=2)
        msg.is_bigendian = big
        depth = depth_msg_to_metres(msg)
        assert depth.dtype == np.float32 and np.isnan(depth[0, 0])
        np.testing.assert_allclose(depth[~np.isnan(depth)], [0.5, 1.234, 65.535, 0.001, 2.0], rtol=1e-6)
    metres = np.array([[1.5, np.nan, 0.0, 2.25]], np.float32)
    depth = depth_msg_to_metres(raw_msg(metres.view(np.uint8).reshape(1, -1), "32FC1", 4))
    np.testing.assert_array_equal(np.isnan(depth), [[False, True, True, False]])
    assert depth[0, 3] == 2.25
    with pytest.raises(InputError, match="depth encoding 'rgb8'"):
        depth_msg_to_metres(_raw())


def test_crop():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    assert crop_image(image, [0, 0, 0, 0]) is image
    np.testing.assert_array_equal(crop_image(image, [2, 1, 4, 3]), image[1:4, 2:6])
    with pytest.raises(InputError, match="crop"):
        crop_image(image, [6, 0, 4, 4])


def test_jpeg_scaled_decode_keeps_the_policy_input():
    """A JPEG decoded in the DCT domain at the largest scale-down that still leaves the policy's side: the
    policy's resized input matches the full decode's to within the JPEG's own error; PNG stays full size."""
    rgb = smooth_rgb(480, 640)
    msg = compressed(_jpeg(rgb))
    full, one = decode_compressed(msg)
    assert one == 1 and full.shape == (480, 640, 3)
    for keep, scale in ((0, 1), (300, 1), (224, 2), (100, 4), (60, 8), (16, 8)):
        image, got = decode_compressed(msg, keep=keep)
        assert got == scale and image.shape == (-(-480 // scale), -(-640 // scale), 3), (keep, got, image.shape)
    transform = ImageTransform(image_size=224, means=((0.5, 0.5, 0.5),), stds=((0.5, 0.5, 0.5),))
    scaled, _ = decode_compressed(msg, keep=224)
    diff = np.abs(transform.resize(full).astype(int) - transform.resize(scaled).astype(int))
    jpeg_error = np.abs(transform.resize(full).astype(int) - transform.resize(rgb).astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8 and diff.mean() <= jpeg_error.mean() + 0.5
    odd, scale = decode_compressed(compressed(_jpeg(smooth_rgb(481, 641))), keep=100)
    assert scale == 4 and odd.shape == (121, 161, 3)  # libjpeg rounds scaled sizes up
    png, scale = decode_compressed(compressed(_png(rgb), "png"), keep=100)
    assert scale == 1 and png.shape == (480, 640, 3)


def test_scaled_decode_respects_the_crop():
    """With a crop, the crop region (not the frame) must keep the policy's side, and the crop, given in
    camera pixels, lands on the same region of the scaled-down frame."""
    assert jpeg_scale(640, 480, 128) == 2 and jpeg_scale(640, 480, 128, (160, 0, 200, 200)) == 1
    assert jpeg_scale(640, 480, 100, (160, 0, 320, 480)) == 2 and jpeg_scale(1280, 960, 100, (0, 0, 800, 800)) == 8
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, 160:480] = smooth_rgb(480, 320)  # the crop region; black left, white right of it
    rgb[:, 480:] = 255
    msg = compressed(_jpeg(rgb))
    crop = (160, 0, 320, 480)
    image, scale = decode_compressed(msg, keep=100, crop=crop)
    assert scale == 2
    region = crop_image(image, crop, scale)
    assert region.shape == (240, 160, 3)
    reference = crop_image(decode_compressed(msg)[0], crop)
    small = np.asarray(PILImage.fromarray(reference).resize((160, 240), PILImage.Resampling.BOX)).astype(int)
    assert np.abs(region.astype(int) - small).mean() < 3  # the same region: black or white edges would show
    with pytest.raises(InputError, match="does not fit the 640x480 frame"):
        crop_image(image, (400, 0, 320, 480), scale)
