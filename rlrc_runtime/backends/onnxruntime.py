"""ONNX Runtime backend: runs a bundle's vision, prefill and decode graphs (numpy + onnxruntime only).

Execution providers follow ``device``: 'cpu' -> CPU; 'cuda' / 'cuda:i' -> CUDA (then CPU);
'tensorrt' / 'tensorrt:i' -> TensorRT EP (engine cache under the bundle's ``ort_trt_cache/``), then
CUDA, then CPU. ``providers=`` overrides the list. The CUDA and TensorRT providers need the
``onnxruntime-gpu`` wheel (``pip install 'rlrc_runtime[tensorrt]'``).

The backend owns the KV cache: one [1, Hkv_i, S_max, D] numpy buffer per cache layer, allocated
at ``activate``. Prefill's keys/values are copied into rows [0, T); each decode step reads the
whole buffer (positions >= ``position`` are masked inside the graph) and returns one row, which is
written at ``position``. Nothing is reallocated between control steps.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from rlrc_runtime.backends.base import Backend, require_finite
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.embeddings import EmbeddingTable
from rlrc_runtime.errors import BackendError, InputError
from rlrc_runtime.manifest import Manifest, read_manifest

log = logging.getLogger(__name__)


def providers_for(device: str) -> list[Any]:
    """Execution providers (with options) for a device string."""
    kind, _, index = device.partition(":")
    dev_id = int(index) if index.isdigit() else 0
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        return [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
    if kind == "tensorrt":
        return [("TensorrtExecutionProvider", {"device_id": dev_id, "trt_fp16_enable": True}),
                ("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
    raise BackendError(f"device={device!r} is not known to the onnxruntime backend; use 'cpu', 'cuda[:i]' or 'tensorrt[:i]'")


@dataclass(frozen=True)
class SessionConfig:
    """How the backend builds its onnxruntime sessions (``load_policy(..., intra_op_num_threads=2)``)."""

    providers: tuple[Any, ...] | None = None
    """Explicit onnxruntime providers list, overriding ``device``."""
    intra_op_num_threads: int | None = None
    """Threads per session (None: onnxruntime's default, all cores)."""
    allow_spinning: bool = True
    """Let idle intra-op threads spin: lower latency on a dedicated machine; turn it off when other
    work shares the cores (e.g. interleaved benchmarks)."""

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "SessionConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BackendError(f"unknown onnxruntime backend option(s) {unknown}; known: {sorted(known)}")
        if options.get("providers") is not None:
            options = {**options, "providers": tuple(options["providers"])}
        return cls(**options)


class OnnxRuntimeBackend(Backend):
    """A bundle's graphs in ONNX Runtime sessions."""

    name = "onnxruntime"

    def __init__(self, path: Path, config: VLAConfig, device: str = "cpu", manifest: Manifest | None = None,
                 verify: bool = True, **session: Any) -> None:
        """
        Args:
            path: bundle directory.
            config: the model config (from the manifest).
            device: 'cpu', 'cuda[:i]' or 'tensorrt[:i]' (chooses execution providers).
            manifest: the bundle's manifest if already read (else read and verified here).
            verify: check file checksums when the manifest is read here.
            session: SessionConfig fields (providers, intra_op_num_threads, allow_spinning).
        """
        self.session = SessionConfig.from_options(session)
        self.manifest = manifest if manifest is not None else read_manifest(path, verify=verify)
        super().__init__(Path(path), config, device, self.manifest.precision)
        self.providers = list(self.session.providers) if self.session.providers is not None else providers_for(device)
        available = ort.get_available_providers()
        for p in self.providers:
            pname = p[0] if isinstance(p, tuple) else p
            if pname not in available:
                raise BackendError(
                    f"onnxruntime execution provider {pname!r} (device={device!r}) is not available here; this "
                    f"onnxruntime {ort.__version__} offers {available}. For CUDA/TensorRT install onnxruntime-gpu "
                    "(pip install 'rlrc_runtime[tensorrt]'), or use device='cpu'"
                )
        self.sessions: dict[str, ort.InferenceSession] = {}
        self.cache: list[np.ndarray] = []
        self.embed_table: EmbeddingTable | None = None
        self.step_timings_ms: dict[str, float] = {}
        """Per-step wall-clock ms of the last ``generate``: 'prefill', 'decode_1', ..."""
        self.last_logits: list[np.ndarray] = []
        """Logits [1, V'] of each generated token of the last ``generate`` (V' = n_bins for the action head)."""

    # ------------------------------------------------------------------ lifecycle

    def activate(self) -> None:
        if self.sessions:
            return super().activate()
        m = self.manifest
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.session.intra_op_num_threads:
            opts.intra_op_num_threads = self.session.intra_op_num_threads
        if not self.session.allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if any((p[0] if isinstance(p, tuple) else p) == "TensorrtExecutionProvider" for p in self.providers):
            cache = self.path / "ort_trt_cache"
            self.providers = [(n, {**o, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                   "trt_timing_cache_enable": True}) if n == "TensorrtExecutionProvider" else (n, o)
                              for n, o in (p if isinstance(p, tuple) else (p, {}) for p in self.providers)]
        for name in ("vision", *m.llm_graphs):
            spec = m.graphs[name]
            start = time.perf_counter()
            try:
                sess = ort.InferenceSession(str(self.path / spec.file), sess_options=opts, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own untyped errors; name the graph
                raise BackendError(f"onnxruntime could not load {self.path / spec.file}: {exc}") from exc
            got = [i.name for i in sess.get_inputs()]
            want = [t.name for t in spec.inputs]
            if got != want:
                raise BackendError(f"{self.path / spec.file}: graph inputs {got} differ from manifest.json's {want}; "
                                   "the bundle's files and manifest come from different exports")
            self.sessions[name] = sess
            log.info("loaded %s (%s) in %.2f s", spec.file, spec.precision, time.perf_counter() - start)
        llm = m.llm
        dtype = np.dtype(llm.cache_dtype)
        self.cache = [np.zeros((1, kv, llm.max_seq_len, llm.head_dim), dtype) for kv in llm.kv_heads for _ in "kv"]
        self._past_names = [t.name for t in m.graphs["decode"].inputs[2:]] if "decode" in m.graphs else []
        if llm.embeddings == "host":
            self.embed_table = EmbeddingTable.open(self.path, llm)  # [vocab, hidden] rows on demand
        super().activate()

    def deactivate(self) -> None:
        self.sessions = {}
        self.cache = []
        self.embed_table = None
        super().deactivate()

    # ------------------------------------------------------------------ inference

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        """pixel_values [1, 3 * n_towers, S, S] float32 -> patches [1, P, hidden] (cache dtype)."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        want = tuple(self.manifest.graphs["vision"].inputs[0].shape)
        if pixel_values.shape != want:
            raise InputError(f"pixel_values has shape {pixel_values.shape}; the vision graph expects {want}")
        return self.sessions["vision"].run(["patches"], {"pixel_values": pixel_values})[0]

    def _prompt_feeds(self, ids: np.ndarray, patches: np.ndarray) -> dict[str, np.ndarray]:
        """The first LLM graph's inputs: embeddings of [BOS, patches, prompt], or ids + patches."""
        if self.manifest.llm.embeddings != "host":
            return {"input_ids": ids[None], "patches": patches}
        tok = self.embed_table[ids]  # [T_ids, hidden]
        embeds = np.concatenate([tok[:1], patches[0].astype(tok.dtype), tok[1:]])[None]  # [1, T, hidden]
        return {"inputs_embeds": np.ascontiguousarray(embeds)}

    def generate(self, patch_embeddings: np.ndarray, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        """Greedy: patches [1, P, hidden] + ids [T_ids] -> new ids [max_new_tokens] int64."""
        llm = self.manifest.llm
        ids = np.asarray(input_ids, dtype=np.int64)
        patches = np.asarray(patch_embeddings)
        length = ids.shape[0] + patches.shape[1]  # BOS + patches + rest of the prompt
        if length + max_new_tokens - 1 > llm.max_seq_len:
            raise InputError(
                f"the prompt needs {length} positions plus {max_new_tokens - 1} generated ones, but this bundle's cache "
                f"holds max_seq_len={llm.max_seq_len}; shorten the instruction or re-export with a larger --max-seq-len"
            )
        if llm.decoding == "parallel":
            return self._generate_chunk(ids, patches, max_new_tokens)
        timings: dict[str, float] = {}
        logits: list[np.ndarray] = []
        start = time.perf_counter()
        out = self.sessions["prefill"].run(None, self._prompt_feeds(ids, patches))
        for buf, present in zip(self.cache, out[2:]):  # present [1, Hkv, T, D]
            buf[:, :, :length] = present
        require_finite(out[1], f"{self.manifest.graphs['prefill'].file} logits")
        token = int(out[0][0])
        tokens = [token]
        logits.append(out[1])
        timings["prefill"] = (time.perf_counter() - start) * 1e3
        decode = self.sessions["decode"]
        position = np.zeros(1, np.int64)
        for step in range(1, max_new_tokens):
            start = time.perf_counter()
            pos = length + step - 1
            position[0] = pos
            if llm.embeddings == "host":
                feeds = {"token_embeds": np.ascontiguousarray(self.embed_table[token][None, None])}
            else:
                feeds = {"token_id": np.array([[token]], np.int64)}
            feeds["position"] = position
            feeds.update(zip(self._past_names, self.cache))
            out = decode.run(None, feeds)
            for buf, new in zip(self.cache, out[2:]):  # new [1, Hkv, 1, D]
                buf[:, :, pos : pos + 1] = new
            require_finite(out[1], f"{self.manifest.graphs['decode'].file} logits (token {step + 1})")
            token = int(out[0][0])
            tokens.append(token)
            logits.append(out[1])
            timings[f"decode_{step}"] = (time.perf_counter() - start) * 1e3
        self.step_timings_ms = timings
        self.last_logits = logits
        return np.asarray(tokens, dtype=np.int64)

    def _generate_chunk(self, ids: np.ndarray, patches: np.ndarray, n_tokens: int) -> np.ndarray:
        """Parallel decoding: every token of the chunk from one pass of the chunk graph."""
        if n_tokens != self.manifest.llm.chunk_tokens:
            raise InputError(f"asked for {n_tokens} tokens; this bundle's chunk graph emits "
                             f"{self.manifest.llm.chunk_tokens} per pass (its K x action dimensions)")
        start = time.perf_counter()
        tokens, logits = self.sessions["chunk"].run(None, self._prompt_feeds(ids, patches))
        require_finite(logits, f"{self.manifest.graphs['chunk'].file} logits")
        self.step_timings_ms = {"chunk": (time.perf_counter() - start) * 1e3}
        self.last_logits = [logits]
        return np.asarray(tokens[0], dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        providers = self.sessions[self.manifest.llm_graphs[0]].get_providers() if self.sessions else [
            p[0] if isinstance(p, tuple) else p for p in self.providers]
        return {**super().describe(), "precision": self.manifest.precision, "onnxruntime": ort.__version__,
                "providers": providers, "embeddings": self.manifest.llm.embeddings, "head": self.manifest.llm.head}
