"""Frames for the calibration tools, and the calibration set (frames + instructions) for quantization.

`SourceConfig` + `frames_from` give every tool the same camera choice: a live RealSense (by
serial) or a RealSense recording (.db3). `capture` writes a calibration set, a directory:

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import yaml
from PIL import Image

from rlrc_runtime.camera import (CameraError, Frame, FrameSlot, RealSenseCamera, RealSenseConfig, SoftwareCamera,
                                 color_intrinsics, read_recording, write_sidecar)
from rlrc_runtime.errors import ConfigError


@dataclass(frozen=True)
class SourceConfig:
    """Where frames and colour intrinsics come from: a recording, or a live RealSense."""

    recording: Path | None = field(default=None, metadata={
        "help": "read this RealSense recording (.db3) instead of a live camera"})
    serial: str = field(default="", metadata={"help": "RealSense serial number; empty = the first camera found"})
    width: int = field(default=640, metadata={"help": "live colour stream width, pixels"})
    height: int = field(default=480, metadata={"help": "live colour stream height, pixels"})
    fps: int = field(default=30, metadata={"help": "live colour stream frame rate"})
    timeout_s: float = field(default=30.0, metadata={"help": "give up when no frame arrives for this long, seconds"})

    def __post_init__(self) -> None:
        if self.recording is not None and self.serial:
            raise ConfigError(f"--recording {self.recording} and --serial {self.serial!r} both given; choose one source")
        for name in ("width", "height", "fps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} {getattr(self, name)}: must be >= 1")
        if not self.timeout_s > 0:
            raise ConfigError(f"--timeout-s {self.timeout_s}: must be > 0")

    def describe(self) -> str:
        return str(self.recording) if self.recording is not None else f"realsense:{self.serial or 'first'}"

    def intrinsics(self) -> Any:
        """rs.intrinsics of the colour stream (from the recording, or from the live device)."""
        return color_intrinsics(self.recording, serial=self.serial, width=self.width, height=self.height,
                                fps=self.fps)


def frames_from(source: SourceConfig) -> Iterator[Frame]:
    """Colour frames of the source in order; a live camera streams until the caller stops iterating."""
    if source.recording is not None:
        yield from read_recording(source.recording, timeout_s=source.timeout_s)
        return
    slot = FrameSlot()
    camera = RealSenseCamera(RealSenseConfig(serial=source.serial, width=source.width, height=source.height,
                                             fps=source.fps), slot)
    camera.start()
    try:
        last = time.monotonic()
        while True:
            frame = slot.take()
            if frame is None:
                if time.monotonic() - last > source.timeout_s:
                    raise CameraError(f"no frame from the camera for {source.timeout_s:.0f} s")
                time.sleep(0.005)
                continue
            last = time.monotonic()
            yield frame
    finally:
        camera.stop()


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture into a calibration set."""

    out: Path = field(metadata={"help": "output directory (created; must be empty or absent)"})
    instruction: str = field(default="", metadata={"help": "the instruction paired with every frame"})
    instructions_file: Path | None = field(default=None, metadata={
        "help": "text file with one instruction per line, paired with frames round-robin (instead of --instruction)"})
    frames: int = field(default=64, metadata={"help": "number of frames to keep"})
    every: int = field(default=1, metadata={"help": "keep every n-th frame (spreads a short set over a longer scene)"})
    record: bool = field(default=False, metadata={
        "help": "also write the kept frames as a RealSense recording (OUT/recording.db3 + instruction sidecar)"})

    def __post_init__(self) -> None:
        if bool(self.instruction.strip()) == (self.instructions_file is not None):
            raise ConfigError(f"--instruction {self.instruction!r} / --instructions-file {self.instructions_file}: "
                              "give exactly one (a non-empty instruction, or a file of them)")
        if self.instructions_file is not None and not Path(self.instructions_file).is_file():
            raise ConfigError(f"--instructions-file {self.instructions_file} does not exist")
        if self.frames < 1 or self.every < 1:
            raise ConfigError(f"--frames {self.frames}, --every {self.every}: both must be >= 1")
        if Path(self.out).exists() and any(Path(self.out).iterdir()):
            raise ConfigError(f"output directory {self.out} is not empty; choose a new one")

    def instructions(self) -> tuple[str, ...]:
        if self.instructions_file is None:
            return (self.instruction.strip(),)
        lines = tuple(line.strip() for line in Path(self.instructions_file).read_text().splitlines() if line.strip())
        if not lines:
            raise ConfigError(f"--instructions-file {self.instructions_file} has no non-empty line")
        return lines


def capture(config: CaptureConfig, source: SourceConfig) -> Path:
    """Run the capture; returns the output directory."""
    instructions = config.instructions()
    out = Path(config.out)
    kept: list[Frame] = []
    for seen, frame in enumerate(frames_from(source)):
        if seen % config.every == 0:
            kept.append(frame)
        if len(kept) >= config.frames:
            break
    if not kept:
        raise CameraError(f"no frames captured from {source.describe()}")
    (out / "frames").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, frame in enumerate(kept):
        name = f"frames/{i:06d}.png"
        Image.fromarray(frame.image).save(out / name)
        lines.append({"image": name, "instruction": instructions[i % len(instructions)],
                      "stamp_ns": int(frame.stamp_ns), "frame_number": int(frame.frame_number)})
    (out / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    h, w = kept[0].image.shape[:2]
    summary = {"instructions": list(instructions), "frames": len(kept), "image_size": [w, h],
               "source": source.describe(), "every": config.every}
    (out / "calibration_set.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    if config.record:
        with SoftwareCamera(out / "recording.db3", w, h, fps=source.fps) as cam:
            for frame in kept:
                cam.write(frame.image)
        write_sidecar(out / "recording.db3", instruction=instructions[0], instructions=list(instructions),
                      frames=len(kept), source=summary["source"])
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


__all__: Sequence[str] = ("CaptureConfig", "SourceConfig", "capture", "frames_from", "read_calibration_set")
