"""TensorRT backend: a bundle's engines (built on this device by `rlrc-export engine`).

UNVERIFIED here: no GPU was available when this was written; its tests are marked ``gpu`` and skip.

Design (Polygraphy-style runner): ``activate`` checks the manifest (TensorRT version and compute
capability of every engine against this machine), deserializes the three engines, allocates every
device buffer once (inputs, outputs, the KV cache [1, Hkv_i, S_max, D] per cache layer) and one
CUDA stream. Per control step: the vision engine writes patches on the device; prefill reads
[BOS, patches, prompt] embeddings assembled on the device; its keys/values are copied into the
cache rows [0, T) with a strided copy; each decode step reads the cache in place and returns one
row per layer, copied to row ``position``. Only the token ids (8 bytes per step) cross to the
host. The decode enqueue has fixed addresses, so it is captured once as a CUDA graph and replayed
(``use_cuda_graph``); position and the token embedding are written to device memory before each
launch.

Imports ``tensorrt`` and ``cuda-python`` lazily, inside ``activate``; ``check_engines`` is pure
Python so the manifest checks are testable without a GPU.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rlrc_runtime.backends.base import Backend, require_finite
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.embeddings import EmbeddingTable
from rlrc_runtime.errors import BackendError, InputError
from rlrc_runtime.manifest import Manifest, check_engine, read_manifest

log = logging.getLogger(__name__)

ENGINE_GRAPHS = ("vision", "prefill", "decode")


def check_engines(bundle: Path, manifest: Manifest, tensorrt_version: str, compute_capability: str) -> None:
    """Raise unless the bundle has an engine per graph, each built for this TensorRT version and GPU."""
    missing = [g for g in ENGINE_GRAPHS if g not in manifest.engines]
    if missing:
        raise BackendError(
            f"bundle {bundle} has no TensorRT engine for {missing}; build them on this device with "
            f"`rlrc-export engine --bundle {bundle}` (or use backend='onnxruntime')"
        )
    for g in ENGINE_GRAPHS:
        check_engine(manifest.engines[g], tensorrt_version, compute_capability, bundle)


def cudart_module() -> Any:
    """cuda-python's runtime bindings (new and old module layouts)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise BackendError("the tensorrt backend needs cuda-python; pip install 'rlrc_runtime[tensorrt]'") from exc
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (err, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call {what} failed with {err}")
    return values[0] if len(values) == 1 else values


def device_facts(index: int = 0) -> tuple[str, str]:
    """(compute capability 'major.minor', device name) of CUDA device ``index``."""
    cudart = cudart_module()
    props = _check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return f"{props.major}.{props.minor}", name


class _DeviceBuffer:
    """One device allocation, owned by the backend, freed at deactivate."""

    def __init__(self, cudart: Any, nbytes: int) -> None:
        self.cudart, self.nbytes = cudart, max(int(nbytes), 1)
        self.ptr = int(_check(cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            self.cudart.cudaFree(self.ptr)
            self.ptr = 0


class TensorRTBackend(Backend):
    """Three TensorRT engines, device-resident KV cache, one stream, CUDA graph for decode."""

    name = "tensorrt"

    def __init__(self, path: Path, config: VLAConfig, device: str = "cuda", dtype: str | None = None,
                 manifest: Manifest | None = None, verify: bool = True, use_cuda_graph: bool = True) -> None:
        self.manifest = manifest if manifest is not None else read_manifest(path, verify=verify)
        if self.manifest.llm.decoding == "parallel":
            raise BackendError(
                f"{path} is a parallel-decoding (action chunk) bundle; this backend's engines drive prefill + decode. "
                "Run it with backend='onnxruntime', device='tensorrt' (ONNX Runtime's TensorRT execution provider)"
            )
        super().__init__(Path(path), config, device, self.manifest.precision)
        kind, _, index = device.partition(":")
        if kind not in ("cuda", "cpu", "tensorrt"):
            raise BackendError(f"device={device!r}: the tensorrt backend runs on 'cuda[:i]'")
        if kind == "cpu":
            raise BackendError("device='cpu': TensorRT engines run on an NVIDIA GPU; use backend='onnxruntime' on the CPU")
        self.device_index = int(index) if index.isdigit() else 0
        self.use_cuda_graph = use_cuda_graph
        self.step_timings_ms: dict[str, float] = {}
        self.last_logits: list[np.ndarray] = []
        self._bufs: dict[str, _DeviceBuffer] = {}
        self._graph_exec = None

    # ------------------------------------------------------------------ lifecycle

    def activate(self) -> None:
        if self._bufs:
            return super().activate()
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError("backend 'tensorrt' needs the tensorrt package; pip install 'rlrc_runtime[tensorrt]'") from exc
        cudart = self.cudart = cudart_module()
        _check(cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
        cc, name = device_facts(self.device_index)
        check_engines(self.path, self.manifest, trt.__version__, cc)
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engines, self.contexts = {}, {}
        for g in ENGINE_GRAPHS:
            data = (self.path / self.manifest.engines[g].file).read_bytes()
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise BackendError(f"TensorRT could not deserialize {self.path / self.manifest.engines[g].file}; "
                                   f"rebuild it: rlrc-export engine --bundle {self.path}")
            self.engines[g] = engine
            self.contexts[g] = engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._allocate()
        log.info("tensorrt backend on %s (cc %s): engines %s", name, cc, [self.manifest.engines[g].file for g in ENGINE_GRAPHS])
        super().activate()

    def _allocate(self) -> None:
        m, llm, cfg = self.manifest, self.manifest.llm, self.config
        itemsize = np.dtype(llm.cache_dtype).itemsize
        H, P, S = cfg.llm.hidden_size, cfg.num_patches, llm.max_seq_len
        self._itemsize = itemsize
        vocab_out = m.graphs["prefill"].outputs[1].shape[1]
        sizes = {
            "pixel_values": int(np.prod(m.graphs["vision"].inputs[0].shape)) * 4,
            "patches": P * H * itemsize,
            "embeds": S * H * itemsize,  # prefill input, up to S_max positions
            "token": 8, "logits": int(vocab_out) * 4, "position": 8, "token_embeds": H * itemsize,
        }
        for i, kv in zip(llm.cache_layers, llm.kv_heads):
            for t in ("key", "value"):
                sizes[f"cache_{t}_{i}"] = kv * S * llm.head_dim * itemsize
                sizes[f"present_{t}_{i}"] = kv * S * llm.head_dim * itemsize
                sizes[f"new_{t}_{i}"] = kv * llm.head_dim * itemsize
        self._bufs = {k: _DeviceBuffer(self.cudart, n) for k, n in sizes.items()}
        self._logits_host = np.empty((1, int(vocab_out)), np.float32)  # checked for NaN/Inf every token
        b = {k: v.ptr for k, v in self._bufs.items()}
        ctx = self.contexts
        ctx["vision"].set_tensor_address("pixel_values", b["pixel_values"])
        ctx["vision"].set_tensor_address("patches", b["patches"])
        ctx["prefill"].set_tensor_address("inputs_embeds", b["embeds"])
        for c in ("prefill", "decode"):
            ctx[c].set_tensor_address("token", b["token"])
            ctx[c].set_tensor_address("logits", b["logits"])
        ctx["decode"].set_tensor_address("token_embeds", b["token_embeds"])
        ctx["decode"].set_tensor_address("position", b["position"])
        for i in llm.cache_layers:
            for t in ("key", "value"):
                ctx["prefill"].set_tensor_address(f"present_{t}_{i}", b[f"present_{t}_{i}"])
                ctx["decode"].set_tensor_address(f"past_{t}_{i}", b[f"cache_{t}_{i}"])
                ctx["decode"].set_tensor_address(f"{t}_{i}", b[f"new_{t}_{i}"])
        if llm.embeddings != "host":
            raise BackendError("the tensorrt backend expects a bundle exported with --embeddings host "
                               "(the embedding table stays off the GPU engines)")
        self.embed_table = EmbeddingTable.open(self.path, llm)

    def deactivate(self) -> None:
        for buf in self._bufs.values():
            buf.free()
        self._bufs = {}
        if self._graph_exec is not None:
            self.cudart.cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.contexts, self.engines = {}, {}
        super().deactivate()

    # ------------------------------------------------------------------ helpers

    def _h2d(self, dst: int, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        _check(self.cudart.cudaMemcpyAsync(dst, a.ctypes.data, a.nbytes,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "H2D")

    def _d2h(self, array: np.ndarray, src: int) -> None:
        _check(self.cudart.cudaMemcpyAsync(array.ctypes.data, src, array.nbytes,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "D2H")

    def _sync(self) -> None:
        _check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def _rows_to_cache(self, src_prefix: str, start: int, rows: int) -> None:
        """Copy [1, Hkv, rows, D] buffers into the caches at positions [start, start + rows)."""
        llm, item = self.manifest.llm, self._itemsize
        row = llm.head_dim * item
        for i, kv in zip(llm.cache_layers, llm.kv_heads):
            for t in ("key", "value"):
                dst = self._bufs[f"cache_{t}_{i}"].ptr + start * row
                src = self._bufs[f"{src_prefix}{t}_{i}"].ptr
                # kv heads are the rows of a 2-D copy: width rows*D elements, pitches S_max*D vs rows*D
                _check(self.cudart.cudaMemcpy2DAsync(dst, llm.max_seq_len * row, src, rows * row, rows * row, kv,
                                                     self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self.stream),
                       "cudaMemcpy2DAsync")

    def _run(self, graph: str) -> None:
        if not self.contexts[graph].execute_async_v3(self.stream):
            raise BackendError(f"TensorRT failed to enqueue the {graph} engine")

    def _decode_launch(self) -> None:
        if not self.use_cuda_graph:
            return self._run("decode")
        if self._graph_exec is None:
            cudart = self.cudart
            self._run("decode")  # TensorRT needs one plain enqueue before capture
            _check(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
                   "cudaStreamBeginCapture")
            self._run("decode")
            graph = _check(cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
            self._graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            return None
        _check(self.cudart.cudaGraphLaunch(self._graph_exec, self.stream), "cudaGraphLaunch")
        return None

    # ------------------------------------------------------------------ inference

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        """pixel_values [1, C, S, S] float32 -> patches [1, P, hidden] (host copy; the device copy stays)."""
        want = tuple(self.manifest.graphs["vision"].inputs[0].shape)
        if tuple(pixel_values.shape) != want:
            raise InputError(f"pixel_values has shape {tuple(pixel_values.shape)}; the vision engine expects {want}")
        self._h2d(self._bufs["pixel_values"].ptr, np.asarray(pixel_values, np.float32))
        self._run("vision")
        out = np.empty((1, self.config.num_patches, self.config.llm.hidden_size), self.manifest.llm.cache_dtype)
        self._d2h(out, self._bufs["patches"].ptr)
        self._sync()
        return out

    def generate(self, patch_embeddings: np.ndarray, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        import time

        llm = self.manifest.llm
        ids = np.asarray(input_ids, np.int64)
        P = patch_embeddings.shape[1]
        length = ids.shape[0] + P
        if length + max_new_tokens - 1 > llm.max_seq_len:
            raise InputError(f"the prompt needs {length} positions plus {max_new_tokens - 1}; the engines hold "
                             f"max_seq_len={llm.max_seq_len}; re-export with a larger --max-seq-len")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        H, item = self.config.llm.hidden_size, self._itemsize
        tok = self.embed_table[ids]  # [T_ids, H]
        embeds = self._bufs["embeds"].ptr
        self._h2d(embeds, tok[:1])
        # patches are already on the device from encode_image: device-to-device into rows 1..P
        _check(self.cudart.cudaMemcpyAsync(embeds + H * item, self._bufs["patches"].ptr, P * H * item,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self.stream), "D2D")
        self._h2d(embeds + (1 + P) * H * item, tok[1:])
        self.contexts["prefill"].set_input_shape("inputs_embeds", (1, length, H))
        self._run("prefill")
        self._rows_to_cache("present_", 0, length)
        token = np.zeros(1, np.int64)
        self._d2h(token, self._bufs["token"].ptr)
        self._d2h(self._logits_host, self._bufs["logits"].ptr)
        self._sync()
        require_finite(self._logits_host, "prefill engine logits")
        tokens = [int(token[0])]
        logits = [self._logits_host.copy()]
        timings["prefill"] = (time.perf_counter() - start) * 1e3
        position = np.zeros(1, np.int64)
        for step in range(1, max_new_tokens):
            start = time.perf_counter()
            pos = length + step - 1
            position[0] = pos
            self._h2d(self._bufs["position"].ptr, position)
            self._h2d(self._bufs["token_embeds"].ptr, self.embed_table[tokens[-1]])
            self._decode_launch()
            self._rows_to_cache("new_", pos, 1)
            self._d2h(token, self._bufs["token"].ptr)
            self._d2h(self._logits_host, self._bufs["logits"].ptr)
            self._sync()
            require_finite(self._logits_host, f"decode engine logits (token {step + 1})")
            tokens.append(int(token[0]))
            logits.append(self._logits_host.copy())
            timings[f"decode_{step}"] = (time.perf_counter() - start) * 1e3
        self.step_timings_ms = timings
        self.last_logits = logits
        return np.asarray(tokens, np.int64)

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "precision": self.manifest.precision}
        if self.manifest.engines:
            e = self.manifest.engines["decode"]
            out.update(tensorrt=e.tensorrt_version, compute_capability=e.compute_capability, engine_precision=e.precision)
        return out
