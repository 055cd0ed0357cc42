"""What a 640x480 JPEG costs to decode, by quality and DCT-domain scale, each timed on its own.

    python research/jpeg_decode.py [--qualities 80,90,95] [--repeats 300]

The frame is `benchmarks/image_intake.py`'s camera-like image, encoded by PIL at each quality;
OpenCV (`cv2.imdecode`, libjpeg-turbo) decodes it at full size, 1/2 and 1/8 (colour) and 1/8 grey.
At 1/8 the inverse DCT, upsampling and colour conversion are nearly gone, so that column is close
to the cost of entropy decoding alone, the floor of any software decoder of that stream.
Back-to-back repeats of one decode keep its tables and buffers in cache; the benchmark's interleaved
figures (the node's situation, between inferences) are higher.
"""
from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@dataclass(frozen=True)
class DecodeConfig:
    qualities: str = field(default="80,90,95", metadata={"help": "comma-separated JPEG qualities (1-100)"})
    repeats: int = field(default=300, metadata={"help": "timed decodes per cell (after 20 untimed)"})

    def __post_init__(self) -> None:
        try:
            qualities = [int(q) for q in self.qualities.split(",")]
        except ValueError:
            raise ConfigError(f"--qualities {self.qualities!r} must be comma-separated integers, e.g. 80,90") from None
        if not qualities or not all(1 <= q <= 100 for q in qualities):
            raise ConfigError(f"--qualities {self.qualities!r}: each must be 1..100")
        if self.repeats < 1:
            raise ConfigError(f"--repeats {self.repeats} must be >= 1")


def run(cfg: DecodeConfig) -> str:
    from PIL import Image

    from image_intake import camera_like
    from ros_nodes.images import require_opencv

    require_opencv()
    import cv2

    modes = {"full": cv2.IMREAD_COLOR, "1/2": cv2.IMREAD_REDUCED_COLOR_2, "1/8": cv2.IMREAD_REDUCED_COLOR_8,
             "1/8 grey": cv2.IMREAD_REDUCED_GRAYSCALE_8}
    rgb = camera_like(480, 640)
    lines = [f"# 640x480 JPEG decode, OpenCV {cv2.__version__}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.2f} before", "", "| quality | bytes | " + " | ".join(f"{m} ms" for m in modes) + " |",
             "|---" * (len(modes) + 2) + "|"]
    for quality in (int(q) for q in cfg.qualities.split(",")):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
        data = np.frombuffer(buf.getvalue(), np.uint8)
        cells = []
        for flag in modes.values():
            for _ in range(20):
                cv2.imdecode(data, flag)
            ts = []
            for _ in range(cfg.repeats):
                t0 = time.perf_counter()
                cv2.imdecode(data, flag)
                ts.append((time.perf_counter() - t0) * 1e3)
            cells.append(f"{np.median(ts):.3f}")
        lines.append(f"| {quality} | {data.size:,} | " + " | ".join(cells) + " |")
    lines.append(f"\nload average {os.getloadavg()[0]:.2f} after")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_command("jpeg_decode", __doc__, DecodeConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
