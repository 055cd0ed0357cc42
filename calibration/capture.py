"""Capture a calibration set (frames + instructions) from a RealSense camera or a recording.

The set feeds INT8/FP8 calibration of the engines (the engine issue) and is a directory:

    out/
      frames/000000.png ...     RGB frames as the policy would see them (before its resize)
      index.jsonl               one line per frame: {"image", "instruction", "stamp_ns", "frame_number"}
      calibration_set.yaml      instructions, source, frame count, image size
      recording.db3 (+ .yaml)   optional (--record): the same frames as a RealSense recording,
                                with the instruction(s) in its sidecar, replayable by the VLA node

Instructions are paired with frames round-robin, so several prompts share one camera session.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from PIL import Image

from rlrc_runtime.errors import ConfigError
from ros_nodes.realsense import (CameraError, Frame, FrameSlot, RealSenseCamera, RealSenseConfig, SoftwareCamera,
                                 read_recording, write_sidecar)


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture."""

    out: Path
    """Output directory (created; must be empty or absent)."""
    instructions: tuple[str, ...]
    """Instructions paired with frames round-robin (at least one, non-empty)."""
    frames: int = 64
    """Number of frames to keep."""
    every: int = 1
    """Keep every n-th frame (spreads a short set over a longer scene)."""
    recording: Path | None = None
    """Read from this RealSense recording instead of a live camera."""
    serial: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    record: bool = False
    """Also write the kept frames as a RealSense recording (out/recording.db3 + sidecar)."""
    timeout_s: float = 30.0
    """Give up when no frame arrives for this long."""

    def __post_init__(self) -> None:
        if not self.instructions or any(not i.strip() for i in self.instructions):
            raise ConfigError(f"instructions={list(self.instructions)}: give at least one non-empty instruction")
        if self.frames < 1 or self.every < 1:
            raise ConfigError(f"frames={self.frames}, every={self.every}: both must be >= 1")
        if Path(self.out).exists() and any(Path(self.out).iterdir()):
            raise ConfigError(f"output directory {self.out} is not empty; choose a new one")


def capture(config: CaptureConfig) -> Path:
    """Run the capture; returns the output directory."""
    out = Path(config.out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    kept: list[Frame] = []
    seen = 0

    def offer(frame: Frame) -> bool:
        nonlocal seen
        if seen % config.every == 0 and len(kept) < config.frames:
            kept.append(frame)
        seen += 1
        return len(kept) >= config.frames

    if config.recording is not None:
        for frame in read_recording(config.recording, timeout_s=config.timeout_s):
            if offer(frame):
                break
    else:
        slot = FrameSlot()
        camera = RealSenseCamera(RealSenseConfig(serial=config.serial, width=config.width, height=config.height,
                                                 fps=config.fps), slot)
        camera.start()
        try:
            last = time.monotonic()
            while True:
                frame = slot.take()
                if frame is None:
                    if time.monotonic() - last > config.timeout_s:
                        raise CameraError(f"no frame from the camera for {config.timeout_s:.0f} s")
                    time.sleep(0.005)
                    continue
                last = time.monotonic()
                if offer(frame):
                    break
        finally:
            camera.stop()
    if not kept:
        raise CameraError(f"no frames captured from {config.recording or 'the camera'}")
    lines = []
    for i, frame in enumerate(kept):
        name = f"frames/{i:06d}.png"
        Image.fromarray(frame.image).save(out / name)
        lines.append({"image": name, "instruction": config.instructions[i % len(config.instructions)],
                      "stamp_ns": int(frame.stamp_ns), "frame_number": int(frame.frame_number)})
    (out / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    h, w = kept[0].image.shape[:2]
    summary = {"instructions": list(config.instructions), "frames": len(kept), "image_size": [w, h],
               "source": str(config.recording) if config.recording else f"realsense:{config.serial or 'first'}",
               "every": config.every}
    (out / "calibration_set.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    if config.record:
        with SoftwareCamera(out / "recording.db3", w, h, fps=config.fps) as cam:
            for frame in kept:
                cam.write(frame.image)
        write_sidecar(out / "recording.db3", instruction=config.instructions[0],
                      instructions=list(config.instructions), frames=len(kept), source=summary["source"])
    return out


def read_calibration_set(path: str | Path) -> list[tuple[np.ndarray, str]]:
    """(RGB uint8 [H, W, 3], instruction) pairs of a calibration set directory, in order."""
    path = Path(path)
    index = path / "index.jsonl"
    if not index.is_file():
        raise ConfigError(f"{path} is not a calibration set (no index.jsonl); make one with `rlrc-calib capture`")
    pairs = []
    for line in index.read_text().splitlines():
        row = json.loads(line)
        pairs.append((np.asarray(Image.open(path / row["image"]).convert("RGB")), row["instruction"]))
    return pairs


__all__: Sequence[str] = ("CaptureConfig", "capture", "read_calibration_set")
