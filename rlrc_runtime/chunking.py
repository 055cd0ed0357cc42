"""Executing action chunks: one inference gives K actions, the robot needs one per control step.

Two ways, both from the action-chunking literature:

- ``open_loop`` (OpenVLA-OFT): execute the chunk's actions in order, re-plan when ``replan`` of them
  (default all K) have been sent;
- ``ensemble`` (ACT's temporal ensembling): re-plan every ``replan`` steps (default every step) and
  send, for each step, the weighted mean of every prediction made for it, weight ``exp(-decay * i)``
  for the i-th oldest (ACT: decay 0.01, older predictions weigh slightly more), which smooths the
  motion at chunk boundaries.

``ChunkExecutor`` keeps the predictions with the control step they are for; ``action()`` returns
None when nothing covers the current step (the caller must plan first). It never invents an action:
a step no chunk covers is the caller's to hold. A caller that keeps sending planned actions while
the next inference runs (as the VLA node does) passes the step the inference's observation was
taken at to ``add``, so the new chunk lines up with the robot's motion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlrc_runtime.errors import ConfigError

MODES = ("open_loop", "ensemble")


@dataclass(frozen=True)
class ChunkExecution:
    """How chunks become per-step actions."""

    mode: str = "open_loop"
    """'open_loop' (OFT) or 'ensemble' (ACT temporal ensembling)."""
    replan: int = 0
    """Control steps between inferences; 0 = the mode's default (open loop: K, ensemble: 1)."""
    decay: float = 0.01
    """ensemble: weight exp(-decay * i) of the i-th oldest prediction for a step."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"chunk execution mode={self.mode!r}: expected one of {list(MODES)}")
        if self.replan < 0 or not math.isfinite(self.decay) or self.decay < 0:
            raise ConfigError(f"chunk execution replan={self.replan} must be >= 0 and decay={self.decay} >= 0")

    def period(self, k: int) -> int:
        """Control steps between inferences for chunks of ``k`` actions."""
        period = self.replan or (k if self.mode == "open_loop" else 1)
        if period > k:
            raise ConfigError(f"re-planning every {period} steps leaves steps no chunk of {k} actions covers; use "
                              f"a replan of at most {k}")
        return period


class ChunkExecutor:
    """Chunks in, one action per control step out."""

    def __init__(self, k: int, execution: ChunkExecution = ChunkExecution()) -> None:
        self.k = k
        self.execution = execution
        self.period = execution.period(k)
        self.reset()

    def reset(self) -> None:
        """Forget every prediction (a new episode or instruction)."""
        self.step = 0
        self._last_plan: int | None = None
        self._chunks: list[tuple[int, np.ndarray]] = []  # (step of its first action, [K, D])

    def needs_plan(self) -> bool:
        """True when the current step calls for an inference."""
        return self._last_plan is None or self.step - self._last_plan >= self.period

    def add(self, chunk: np.ndarray, start: int | None = None) -> bool:
        """A chunk [K, D] whose first action is for control step ``start`` (default: the current step).

        A chunk planned from an observation at step ``start`` that arrives while older actions kept the
        robot moving (``start`` < the current step) is aligned to its observation: its first
        ``step - start`` actions are already past and never sent. Returns False, adding nothing, for a
        chunk that no longer covers the current step."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.k:
            raise ConfigError(f"a chunk of shape {chunk.shape} was given; this executor runs [{self.k}, D] chunks")
        start = self.step if start is None else int(start)
        if start > self.step:
            raise ConfigError(f"a chunk for step {start} was given at step {self.step}; plans start at or before now")
        if start + self.k <= self.step:
            return False
        self._last_plan = start
        self._chunks.append((start, chunk))
        if self.execution.mode == "open_loop":
            self._chunks = self._chunks[-1:]
        else:  # drop chunks that no longer cover the current step
            self._chunks = [(s, c) for s, c in self._chunks if s + self.k > self.step]
        return True

    def action(self) -> np.ndarray | None:
        """The action [D] for the current step, or None when no chunk covers it; advances the step."""
        preds = [c[self.step - s] for s, c in self._chunks if 0 <= self.step - s < self.k]
        if not preds:
            return None
        self.step += 1
        if self.execution.mode == "open_loop":
            return preds[-1].copy()
        w = np.exp(-self.execution.decay * np.arange(len(preds)))  # oldest first
        return (np.stack(preds) * (w / w.sum())[:, None]).sum(0).astype(np.float32)
