"""Action tokens <-> continuous actions, OpenVLA's convention (design.md §3).

The last ``n_bins`` ids of the 32000-token vocabulary are action tokens (31744..31999 for 256
bins). A generated id maps to bin ``clip(vocab - id - 1, 0, n_bins - 2)`` and the bin to its
centre in [-1, 1]; unnormalisation then maps [-1, 1] to [q01, q99] on the dimensions the mask
selects. Arithmetic is float64 like the official numpy code; the result is cast to float32 last.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from rlrc_runtime.errors import NormStatsError, UnnormKeyError


@dataclass(frozen=True)
class ActionTokenizer:
    """Discretises actions in [-1, 1] into the top ``n_bins`` token ids and back."""

    vocab_size: int = 32000
    """Tokenizer vocabulary without padding (OpenVLA: 32064 - 64)."""
    n_bins: int = 256
    """Bin edges per dimension (OpenVLA: 256 edges -> 255 centres)."""
    bins: np.ndarray = field(init=False, repr=False, compare=False)
    bin_centers: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bins = np.linspace(-1.0, 1.0, self.n_bins)  # float64, as np.linspace gives
        object.__setattr__(self, "bins", bins)
        object.__setattr__(self, "bin_centers", (bins[:-1] + bins[1:]) / 2.0)

    @property
    def first_action_token(self) -> int:
        return self.vocab_size - self.n_bins

    @property
    def action_token_ids(self) -> np.ndarray:
        """The ids that are action tokens, ascending ([31744..31999] for OpenVLA)."""
        return np.arange(self.first_action_token, self.vocab_size)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids [..., D] -> normalised actions [..., D] float64 (bin centres)."""
        ids = np.asarray(token_ids, dtype=np.int64)
        discretized = np.clip(self.vocab_size - ids - 1, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[discretized]

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions [..., D] in [-1, 1] -> token ids [..., D] (OpenVLA's training map)."""
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return self.vocab_size - np.digitize(a, self.bins)


@dataclass(frozen=True)
class ActionStats:
    """The action statistics of one dataset (``norm_stats[key]['action']``)."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    @property
    def action_dim(self) -> int:
        return int(self.q01.shape[0])

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        """[-1, 1] actions [..., D] -> robot actions [..., D] float64 (masked dims pass through)."""
        return np.where(self.mask, 0.5 * (normalized + 1) * (self.q99 - self.q01) + self.q01, normalized)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Robot actions -> [-1, 1] (clipped), the inverse used when building training targets."""
        a = np.asarray(actions, dtype=np.float64)
        span = np.where(self.q99 - self.q01 == 0, 1.0, self.q99 - self.q01)
        scaled = np.clip(2.0 * (a - self.q01) / span - 1.0, -1.0, 1.0)
        return np.where(self.mask, scaled, a)


def resolve_unnorm_key(norm_stats: Mapping[str, Any] | None, unnorm_key: str | None) -> str:
    """Pick the dataset whose statistics unnormalize actions; errors list the valid keys."""
    if not norm_stats:
        raise NormStatsError(
            "this model has no norm_stats, so actions cannot be unnormalized; write dataset statistics into "
            "config.json 'norm_stats' (rlrc-sim norm-stats computes them from demonstrations)"
        )
    keys = sorted(norm_stats)
    if unnorm_key is None:
        if len(keys) != 1:
            raise UnnormKeyError(
                f"unnorm_key is required: this model was trained on {len(keys)} datasets; "
                f"pass one of {keys}"
            )
        return keys[0]
    if unnorm_key not in norm_stats:
        raise UnnormKeyError(f"unnorm_key={unnorm_key!r} is not in norm_stats; valid keys: {keys}")
    return unnorm_key


def action_stats(norm_stats: Mapping[str, Any] | None, unnorm_key: str | None) -> ActionStats:
    """Validated ``ActionStats`` for ``unnorm_key`` (see resolve_unnorm_key)."""
    key = resolve_unnorm_key(norm_stats, unnorm_key)
    entry = norm_stats[key]  # type: ignore[index]
    if not isinstance(entry, Mapping) or "action" not in entry:
        raise NormStatsError(f"norm_stats[{key!r}] has no 'action' entry; expected {{'action': {{q01, q99, mask, ...}}}}")
    act = entry["action"]
    for name in ("q01", "q99"):
        if name not in act:
            raise NormStatsError(f"norm_stats[{key!r}]['action'] lacks {name!r}; it needs q01, q99 (and optionally mask)")
    try:
        q01 = np.asarray(act["q01"], dtype=np.float64)
        q99 = np.asarray(act["q99"], dtype=np.float64)
        mask = np.asarray(act.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
    except (TypeError, ValueError) as exc:
        raise NormStatsError(f"norm_stats[{key!r}]['action']: q01/q99/mask must be lists of numbers ({exc})") from exc
    if q01.ndim != 1 or q01.shape != q99.shape or mask.shape != q01.shape or q01.size == 0:
        raise NormStatsError(
            f"norm_stats[{key!r}]['action']: q01 {q01.shape}, q99 {q99.shape} and mask {mask.shape} "
            "must be equal-length, non-empty 1-D lists"
        )
    if not (np.all(np.isfinite(q01)) and np.all(np.isfinite(q99))):
        raise NormStatsError(f"norm_stats[{key!r}]['action']: q01/q99 contain NaN or Inf")
    if np.any(q99 < q01):
        bad = np.flatnonzero(q99 < q01).tolist()
        raise NormStatsError(f"norm_stats[{key!r}]['action']: q99 < q01 on dimensions {bad}")
    with np.errstate(over="ignore"):
        span = q99 - q01
    if not np.all(np.isfinite(span)):
        bad = np.flatnonzero(~np.isfinite(span)).tolist()
        raise NormStatsError(f"norm_stats[{key!r}]['action']: q99 - q01 overflows on dimensions {bad}; "
                             "the statistics are not in the robot's action units")
    return ActionStats(q01=q01, q99=q99, mask=mask)
