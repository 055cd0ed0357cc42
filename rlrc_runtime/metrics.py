"""Latency measurement: per-stage timers for one inference and rolling percentiles over many."""
from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

import numpy as np


class StageTimer:
    """Accumulates wall-clock milliseconds per named stage of one inference."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


class LatencyWindow:
    """The last ``size`` samples of each stage, for p50/p95/p99 in diagnostics and benchmarks."""

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"LatencyWindow size={size} must be >= 1")
        self.size = size
        self.samples: dict[str, deque[float]] = {}

    def add(self, timings_ms: dict[str, float]) -> None:
        for name, value in timings_ms.items():
            self.samples.setdefault(name, deque(maxlen=self.size)).append(float(value))

    def summary(self, percentiles: tuple[float, ...] = (50, 95, 99)) -> dict[str, dict[str, float]]:
        """stage -> {'p50': ..., 'p95': ..., 'p99': ..., 'max': ..., 'n': ...} in ms."""
        out = {}
        for name, values in self.samples.items():
            arr = np.fromiter(values, dtype=np.float64)
            stats = {f"p{p:g}": float(np.percentile(arr, p)) for p in percentiles}
            stats["max"] = float(arr.max())
            stats["n"] = float(arr.size)
            out[name] = stats
        return out
