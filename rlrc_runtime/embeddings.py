"""The host-side text embedding table of a bundle: plain, or quantized per row to int8 / int4.

With ``llm.embeddings = 'host'`` the runtime looks up the prompt's ~20 token rows itself and feeds
embeddings to the graphs, so the [vocab, hidden] table never sits in an engine. At 7B it is 3.5 %
of the weights; in a small model it is most of them (32064 rows), so quantized bundles may store
it quantized too:

- ``none``: ``embed_file`` is a [vocab, hidden] .npy in the cache dtype.
- ``int8``: ``embed_file`` is int8 [vocab, hidden], ``embed_scale_file`` float32 [vocab]; row r is
  ``q[r] * scale[r]`` (symmetric, scale = max|row| / 127).
- ``int4``: ``embed_file`` is uint8 [vocab, hidden / 2], two signed 4-bit values per byte (low
  nibble = even column), scale = max|row| / 7.

Only the looked-up rows are ever dequantized (the files are memory-mapped), so a lookup costs
microseconds whatever the format. numpy only: this is on the robot's import path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rlrc_runtime.errors import BackendError, ConfigError

EMBED_QUANT = ("none", "int8", "int4")
QMAX = {"int8": 127, "int4": 7}


def quantize_rows(table: np.ndarray, quant: str) -> tuple[np.ndarray, np.ndarray]:
    """[vocab, hidden] float table -> (stored array, float32 scales [vocab]) in format `quant`."""
    if quant not in QMAX:
        raise ConfigError(f"embedding quantization {quant!r}; expected one of {sorted(QMAX)}")
    t = np.asarray(table, dtype=np.float32)
    if t.ndim != 2:
        raise ConfigError(f"embedding table must be [vocab, hidden], got shape {t.shape}")
    qmax = QMAX[quant]
    amax = np.abs(t).max(axis=1)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(t / scale[:, None]), -qmax, qmax).astype(np.int8)
    if quant == "int8":
        return q, scale
    if t.shape[1] % 2:
        raise ConfigError(f"int4 embeddings need an even hidden size, got {t.shape[1]}")
    nib = q.astype(np.uint8) & 0x0F
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8), scale


def dequantize_rows(stored: np.ndarray, scale: np.ndarray, quant: str) -> np.ndarray:
    """Rows in format `quant` -> float32 [n, hidden]."""
    if quant == "int8":
        q = stored.astype(np.float32)
    else:
        b = stored.astype(np.int16)
        lo = ((b & 0x0F) ^ 8) - 8  # sign-extend the 4-bit two's complement value
        hi = ((b >> 4) ^ 8) - 8
        q = np.empty((b.shape[0], b.shape[1] * 2), np.float32)
        q[:, 0::2], q[:, 1::2] = lo, hi
    return q * np.asarray(scale, np.float32)[:, None]


class EmbeddingTable:
    """Row lookup over a bundle's table in any of the formats; index it like the [vocab, hidden] array."""

    def __init__(self, path: Path, quant: str = "none", scale_path: Path | None = None,
                 dtype: np.dtype | str = np.float32) -> None:
        if quant not in EMBED_QUANT:
            raise ConfigError(f"llm.embed_quant={quant!r}; expected one of {list(EMBED_QUANT)}")
        self.quant = quant
        self.dtype = np.dtype(dtype)
        self.path = Path(path)
        self.table = np.load(self.path, mmap_mode="r")
        self.scale = None
        if quant != "none":
            if scale_path is None:
                raise ConfigError(f"llm.embed_quant={quant!r} needs llm.embed_scale_file")
            self.scale = np.load(scale_path, mmap_mode="r")
            want = np.int8 if quant == "int8" else np.uint8
            if self.table.dtype != want or self.scale.shape != (self.table.shape[0],):
                raise BackendError(
                    f"{self.path}: a {quant} embedding table must be {np.dtype(want)} [vocab, ...] with {Path(scale_path).name} "
                    f"float32 [vocab]; found {self.table.dtype} {self.table.shape} and scales {self.scale.shape}. "
                    "The bundle's files and manifest come from different exports: re-run rlrc-export quantize")

    @classmethod
    def open(cls, bundle: Path, llm: object) -> "EmbeddingTable":
        """The table a manifest's ``llm`` section names (embed_file, embed_quant, embed_scale_file)."""
        quant = getattr(llm, "embed_quant", "none")
        scale_file = getattr(llm, "embed_scale_file", None)
        return cls(Path(bundle) / llm.embed_file, quant, Path(bundle) / scale_file if scale_file else None,
                   llm.cache_dtype)

    @property
    def shape(self) -> tuple[int, int]:
        width = self.table.shape[1] * (2 if self.quant == "int4" else 1)
        return int(self.table.shape[0]), int(width)

    @property
    def nbytes(self) -> int:
        """Bytes stored (table and scales)."""
        return int(self.table.nbytes + (self.scale.nbytes if self.scale is not None else 0))

    def __getitem__(self, ids: int | np.ndarray) -> np.ndarray:
        """Rows ``ids`` ([n] -> [n, hidden]; an int -> [hidden]) in the cache dtype."""
        single = np.ndim(ids) == 0
        rows = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        if self.quant == "none":
            out = np.asarray(self.table[rows])
        else:
            out = dequantize_rows(np.asarray(self.table[rows]), np.asarray(self.scale[rows]), self.quant)
        out = out.astype(self.dtype, copy=False)
        return out[0] if single else out
