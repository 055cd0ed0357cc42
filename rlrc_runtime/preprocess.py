"""Image preprocessing exactly as OpenVLA's PrismaticImageProcessor does it (design.md §3).

RGB uint8 frame -> PIL bicubic resize (antialiased, 'resize-naive') -> [0, 1] -> per-tower
normalisation -> ``pixel_values`` [1, 3 * n_towers, S, S] float32. The division and the
normalisation run in float32 in the same order as torchvision's ``to_tensor`` + ``normalize``, so
the result is bit-identical to the official processor.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import InputError


@dataclass(frozen=True)
class ImageTransform:
    """Frame -> pixel_values for one model."""

    image_size: int
    """Square side the towers expect."""
    means: tuple[tuple[float, float, float], ...]
    """Per-tower channel means (one triple per tower)."""
    stds: tuple[tuple[float, float, float], ...]
    """Per-tower channel stds."""

    @classmethod
    def from_config(cls, config: VLAConfig) -> "ImageTransform":
        return cls(
            image_size=config.image_size,
            means=tuple(t.image_mean for t in config.towers),
            stds=tuple(t.image_std for t in config.towers),
        )

    def resize(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> SxSx3 uint8, PIL bicubic (what torchvision does on PIL images)."""
        check_image(image)
        if image.shape[0] == self.image_size and image.shape[1] == self.image_size:
            return np.ascontiguousarray(image)
        pil = Image.fromarray(np.ascontiguousarray(image))
        return np.asarray(pil.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> pixel_values [1, 3 * n_towers, S, S] float32."""
        return self.normalize(self.resize(image)[None])

    def normalize(self, frames: np.ndarray) -> np.ndarray:
        """Resized frames [B, S, S, 3] uint8 -> pixel_values [B, 3 * n_towers, S, S] float32.

        The arithmetic of torchvision's ``to_tensor`` + ``normalize``: x / 255, then (x - mean) / std,
        each in float32. A uint8 input has 256 values, so each output plane is a lookup into that
        arithmetic done once per value (`_levels`): the same float32 results, without the per-pixel work.
        """
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise InputError(f"frames are {frames.dtype} {frames.shape}; expected resized uint8 RGB [B, S, S, 3]")
        x = frames.transpose(0, 3, 1, 2)  # [B, 3, S, S] uint8
        levels = self._levels
        out = np.empty((frames.shape[0], levels.shape[0], *frames.shape[1:3]), np.float32)
        for k in range(levels.shape[0]):
            np.take(levels[k], x[:, k % 3], out=out[:, k])
        return out

    @cached_property
    def _levels(self) -> np.ndarray:
        """[3 * n_towers, 256] float32: output plane k's value for each uint8 input level."""
        x = np.arange(256, dtype=np.float32) / np.float32(255.0)
        means = np.asarray(self.means, dtype=np.float32).reshape(-1, 1)
        stds = np.asarray(self.stds, dtype=np.float32).reshape(-1, 1)
        return (x[None, :] - means) / stds


def check_image(image: object) -> None:
    """Raise InputError unless ``image`` is an HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image dtype is {image.dtype}; expected uint8 RGB (convert with np.clip(x*255,0,255).astype(np.uint8))")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image shape is {image.shape}; expected (H, W, 3) RGB")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image shape is {image.shape}; height and width must be >= 1")
