"""What the VLA node's image intake costs per frame, for every encoding it reads.

    python benchmarks/image_intake.py                  # 640x480, results to benchmarks/results/image_intake.*
    python benchmarks/image_intake.py --width 1280 --height 720 --rounds 100

Each encoding gets a real message of the frame size (sensor_msgs/Image with the encoding's byte
layout, or a CompressedImage holding a JPEG / PNG written by PIL) and is decoded by
ros_nodes.images exactly as the node decodes it. Every round times each encoding once, in turn
(interleaved, so a busy spell of a shared machine hits all of them alike); the table gives the
median and p90 per frame and the ratio to ``rgb8``, the layout that needs no conversion (a copy
out of the message). For scale it also times the policy's own preprocessing of the decoded frame
(rlrc_runtime's PIL bicubic resize to the model's input and normalisation), which follows the
intake on every step.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError

RAW = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_grbg8")
COMPRESSED = ("jpeg", "png")
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "yuv422": 2, "yuv422_yuy2": 2,
                   "bayer_rggb8": 1, "bayer_grbg8": 1}


@dataclass(frozen=True)
class IntakeConfig:
    width: int = field(default=640, metadata={"help": "frame width, pixels"})
    height: int = field(default=480, metadata={"help": "frame height, pixels"})
    rounds: int = field(default=200, metadata={"help": "timed decodes per encoding (interleaved rounds)"})
    preset: str = field(default="mid", metadata={"help": "model preset whose input side and preprocessing are used "
                                                          "(mid: OpenVLA's 224 px)"})
    out: str = field(default="benchmarks/results/image_intake", metadata={"help": "results stem: OUT.json, OUT.md"})

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2:
            raise ConfigError(f"--width {self.width} --height {self.height}: expected >= 16 and an even width "
                              "(4:2:2 packs pixel pairs)")
        if self.rounds < 10:
            raise ConfigError(f"--rounds {self.rounds}: expected >= 10")


def camera_like(h: int, w: int) -> np.ndarray:
    """A smooth image with texture and noise, so that JPEG and PNG are as large as a camera's."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([120 + 80 * np.sin(x / 37), 90 + 60 * np.cos(y / 23), 140 + 50 * np.sin((x + y) / 51)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def messages(cfg: IntakeConfig) -> dict[str, object]:
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage, Image

    rgb = camera_like(cfg.height, cfg.width)
    out: dict[str, object] = {}
    for enc in RAW:  # decode cost does not depend on the pixel values of a raw layout
        bpp = BYTES_PER_PIXEL[enc]
        payload = rgb.reshape(-1)[: cfg.height * cfg.width * bpp] if bpp <= 3 else np.concatenate(
            [rgb, np.full((cfg.height, cfg.width, 1), 255, np.uint8)], -1).reshape(-1)
        msg = Image(height=cfg.height, width=cfg.width, encoding=enc, is_bigendian=0, step=cfg.width * bpp)
        msg.data = np.ascontiguousarray(payload).tobytes()
        out[enc] = msg
    for fmt in COMPRESSED:
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
        out[fmt] = CompressedImage(format=fmt, data=buf.getvalue())
    return out


def run(cfg: IntakeConfig) -> str:
    from export.tiny import PRESETS, preset_config
    from rlrc_runtime.preprocess import ImageTransform
    from ros_nodes.images import decode_compressed, image_msg_to_rgb, require_opencv

    require_opencv()
    msgs = messages(cfg)
    transform = ImageTransform.from_config(preset_config(PRESETS[cfg.preset]))
    keep = transform.image_size
    # what the node does per encoding: raw layouts, PNG and jpeg_scaled_decode:=false decode at full size;
    # "jpeg" is the default (scaled down while the policy's input still fits)
    decode = {name: (lambda m: decode_compressed(m, keep=keep)[0]) if name == "jpeg" else
              (lambda m: decode_compressed(m)[0]) if name in COMPRESSED else image_msg_to_rgb for name in msgs}
    decode["jpeg_full_size"] = lambda m: decode_compressed(m)[0]
    msgs["jpeg_full_size"] = msgs["jpeg"]
    frame = image_msg_to_rgb(msgs["rgb8"])
    scaled = decode["jpeg"](msgs["jpeg"])
    prep = {"policy_preprocess": frame, "policy_preprocess_of_scaled_jpeg": scaled}
    times: dict[str, list[float]] = {name: [] for name in [*msgs, *prep]}
    for name in msgs:  # warm-up
        decode[name](msgs[name])
    load_before = os.getloadavg()
    for _ in range(cfg.rounds):
        for name, msg in msgs.items():
            t0 = time.perf_counter()
            decode[name](msg)
            times[name].append((time.perf_counter() - t0) * 1e3)
        for name, image in prep.items():
            t0 = time.perf_counter()
            transform(image)
            times[name].append((time.perf_counter() - t0) * 1e3)
    diff = np.abs(transform.resize(decode["jpeg_full_size"](msgs["jpeg"])).astype(np.int16)
                  - transform.resize(scaled).astype(np.int16))
    policy_input = {"decoded_jpeg_shape": list(scaled.shape), "policy_side": keep,
                    "mean_abs_diff_levels": float(diff.mean()), "max_abs_diff_levels": int(diff.max())}
    rows = {}
    ref = float(np.median(times["rgb8"]))
    for name, ts in times.items():
        med = float(np.median(ts))
        rows[name] = {"median_ms": med, "p90_ms": float(np.percentile(ts, 90)), "ratio_to_rgb8": med / ref,
                      "message_bytes": len(msgs[name].data) if name in msgs else None}
    result = {"config": asdict(cfg), "command": shlex.join(["python", "benchmarks/image_intake.py", *sys.argv[1:]]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_before": load_before,
                          "load_average_after": os.getloadavg()},
              "rows": rows, "scaled_jpeg_vs_full": policy_input}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    return markdown(result)


def markdown(result: dict) -> str:
    cfg, m = result["config"], result["machine"]
    lines = [f"# Image intake per frame, {cfg['width']}x{cfg['height']}", "",
             f"- command: `{result['command']}`", f"- date: {result['date']}",
             f"- machine: {m['platform']}, {m['cpus']} CPUs, load average {m['load_average_before'][0]:.2f} before, "
             f"{m['load_average_after'][0]:.2f} after",
             f"- {cfg['rounds']} interleaved rounds; decode = ros_nodes.images as the VLA node calls it; "
             f"policy_preprocess = rlrc_runtime's resize + normalisation ({cfg['preset']}, "
             f"{result['scaled_jpeg_vs_full']['policy_side']} px), for scale",
             f"- jpeg = the node's default (`jpeg_scaled_decode`): decoded at "
             f"{result['scaled_jpeg_vs_full']['decoded_jpeg_shape'][1]}x"
             f"{result['scaled_jpeg_vs_full']['decoded_jpeg_shape'][0]} in the DCT domain; jpeg_full_size = "
             f"`jpeg_scaled_decode:=false`. The policy's input from the scaled decode differs from the full "
             f"decode's by {result['scaled_jpeg_vs_full']['mean_abs_diff_levels']:.2f} of 255 levels on average (max "
             f"{result['scaled_jpeg_vs_full']['max_abs_diff_levels']})", "",
             "| input | message bytes | median ms | p90 ms | x rgb8 |", "|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        size = f"{r['message_bytes']:,}" if r["message_bytes"] is not None else "-"
        lines.append(f"| {name} | {size} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['ratio_to_rgb8']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command("image_intake", __doc__, IntakeConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
