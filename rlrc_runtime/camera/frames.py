"""What every camera source hands the robot side: a `Frame`, through a thread-safe `FrameSlot`.

Sources (a live RealSense, a recording, a ROS image subscription) run on their own threads and
`put` frames; the consumer `take`s the latest one. Nothing here imports a camera library.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from rlrc_runtime.errors import RLRCError


class CameraError(RLRCError):
    """A camera or recording cannot be opened or read."""


@dataclass
class Frame:
    """One colour frame."""

    image: np.ndarray
    """[H, W, 3] uint8 RGB, owned by this object."""
    stamp_ns: int
    """Capture time for message headers, ns since the epoch."""
    arrival: float = field(default_factory=time.monotonic)
    """time.monotonic() when this process received the frame (frame age is measured from it)."""
    frame_number: int = -1
    depth: np.ndarray | None = None
    """[H, W] uint16 depth aligned to the colour image, when alignment was asked for."""
    scale: int = 1
    """The image is 1/scale of the camera's resolution (a JPEG decoded scaled down); crops are in camera pixels."""


class FrameSlot:
    """Holds the latest frame only. Thread-safe: producers `put`, the node `take`s.

    ``put(block=False)`` overwrites an untaken frame and counts it as dropped; ``put(block=True)``
    waits until the previous frame was taken (lossless playback), returning False once closed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self.received = 0
        self.dropped = 0
        self.closed = False

    def put(self, frame: Frame, block: bool = False) -> bool:
        with self._cond:
            if block:
                while self._frame is not None and not self.closed:
                    self._cond.wait(0.1)
            if self.closed:
                return False
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.received += 1
            self._cond.notify_all()
            return True

    def take(self) -> Frame | None:
        with self._cond:
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    @property
    def pending(self) -> bool:
        with self._cond:
            return self._frame is not None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._frame = None
            self._cond.notify_all()


