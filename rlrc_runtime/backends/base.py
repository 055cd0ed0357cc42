"""The backend interface (Polygraphy-style runner: activate, infer, deactivate)."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np

from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import NonFiniteOutputError


class Backend(abc.ABC):
    """Runs the networks of one model. Not thread-safe: one inference at a time per backend.

    Timing contract: each method returns only once its results are final (device work
    synchronised), so the Policy's wall-clock stage timers measure real latency.
    """

    name: str = "abstract"

    def __init__(self, path: Path, config: VLAConfig, device: str, dtype: str) -> None:
        self.path, self.config, self.device, self.dtype = path, config, device, dtype
        self.active = False

    def activate(self) -> None:
        """Allocate what inference needs (load weights, build sessions, warm up)."""
        self.active = True

    def deactivate(self) -> None:
        """Free what activate allocated."""
        self.active = False

    def __enter__(self) -> "Backend":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def encode_image(self, pixel_values: np.ndarray) -> Any:
        """pixel_values [1, 3 * n_towers, S, S] float32 -> projected patches (backend-native handle)."""

    @abc.abstractmethod
    def generate(self, patch_embeddings: Any, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        """Greedy decoding: patches + prompt ids [T] -> new token ids [max_new_tokens] int64, one token per
        pass (``config.decoding`` 'autoregressive') or all of them from one pass ('parallel')."""

    def describe(self) -> dict[str, Any]:
        """Facts for logs and diagnostics (backend name, device, dtype)."""
        return {"backend": self.name, "device": self.device, "dtype": self.dtype}


def require_finite(values: np.ndarray, what: str) -> None:
    """Raise NonFiniteOutputError when ``values`` holds NaN or Inf.

    An argmax over NaN logits still returns a token (id 0, which decodes to a full-scale action),
    so every backend checks the logits of every generated token before trusting the argmax.
    """
    finite = np.isfinite(values)
    if not finite.all():
        raise NonFiniteOutputError(
            f"{what}: {int(finite.size - finite.sum())} of {finite.size} values are NaN or Inf, so this step has no "
            "safe action; the model's weights or its input are damaged (re-export the bundle from a checkpoint "
            "that passes `rlrc-predict`)"
        )
