"""The Policy: RGB frame + instruction -> 7-D robot action, with per-stage timings.

Policy = backend (the networks) + transforms (preprocess, prompt, action decode) + the model's
facts (config, norm_stats). It never imports torch itself; only the chosen backend may.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlrc_runtime.action import ActionStats, ActionTokenizer, action_stats, resolve_unnorm_key
from rlrc_runtime.backends import BUNDLE_BACKENDS, Backend, backend_class
from rlrc_runtime.checkpoint import image_stats, read_checkpoint
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import BackendError, NonFiniteOutputError
from rlrc_runtime.manifest import is_bundle, read_manifest
from rlrc_runtime.metrics import StageTimer
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer

log = logging.getLogger(__name__)

STAGES = ("preprocess", "vision", "llm", "decode", "total")


@dataclass(frozen=True)
class InferenceResult:
    """One control step's output."""

    action: np.ndarray
    """[D] float32, unnormalized (robot units), OpenVLA convention: the chunk's first action."""
    normalized_action: np.ndarray
    """[D] float32 in [-1, 1] before unnormalization."""
    action_tokens: np.ndarray
    """[K * D] int64 token ids the LLM generated."""
    unnorm_key: str
    """Dataset whose statistics unnormalized the action."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Wall-clock ms per stage: preprocess, vision, llm, decode, total."""
    chunk: np.ndarray | None = None
    """[K, D] float32: the K actions of one inference (K = 1 for autoregressive OpenVLA), robot units."""


class Policy:
    """An OpenVLA-format policy behind a backend. Use ``load_policy`` to build one."""

    def __init__(self, path: Path, config: VLAConfig, backend: Backend, tokenizer: PromptTokenizer,
                 image_transform: ImageTransform) -> None:
        self.path = path
        self.config = config
        self.backend = backend
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.action_tokenizer = ActionTokenizer(vocab_size=config.token_vocab_size, n_bins=config.n_action_bins)
        self._stats: dict[str, ActionStats] = {}

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.config.norm_stats or {}

    def stats(self, unnorm_key: str | None = None) -> ActionStats:
        key = resolve_unnorm_key(self.norm_stats, unnorm_key)
        if key not in self._stats:
            self._stats[key] = action_stats(self.norm_stats, key)
        return self._stats[key]

    def action_dim(self, unnorm_key: str | None = None) -> int:
        """Action dimensions (OpenVLA: the length of the dataset's q01)."""
        return self.stats(unnorm_key).action_dim

    def infer(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> InferenceResult:
        """image HxWx3 uint8 RGB (any size) + instruction -> InferenceResult."""
        if not self.backend.active:
            raise BackendError("the policy's backend is closed; load the policy again")
        start = time.perf_counter()
        timer = StageTimer()
        key = resolve_unnorm_key(self.norm_stats, unnorm_key)
        stats = self.stats(key)
        with timer.stage("preprocess"):
            pixel_values = self.image_transform(image)  # [1, 3 * n_towers, S, S]
            input_ids = self.tokenizer(instruction)  # [T]
        with timer.stage("vision"):
            patches = self.backend.encode_image(pixel_values)
        k = self.config.action_chunk
        with timer.stage("llm"):
            tokens = self.backend.generate(patches, input_ids, k * stats.action_dim)  # [K * D]
        with timer.stage("decode"):
            normalized = self.action_tokenizer.decode(tokens).reshape(k, stats.action_dim)  # [K, D]
            chunk = stats.unnormalize(normalized).astype(np.float32)
        if not np.all(np.isfinite(chunk)):  # a last guard: a robot must never see it
            raise NonFiniteOutputError(f"non-finite action {chunk.tolist()} from tokens {tokens.tolist()}")
        action, normalized = chunk[0], normalized[0]
        timer.ms["total"] = (time.perf_counter() - start) * 1e3
        return InferenceResult(
            action=action,
            normalized_action=normalized.astype(np.float32),
            action_tokens=tokens,
            unnorm_key=key,
            timings_ms=dict(timer.ms),
            chunk=chunk,
        )

    def predict_action(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        """image + instruction -> unnormalized action [D] float32 (OpenVLA's predict_action)."""
        return self.infer(image, instruction, unnorm_key).action

    def predict_chunk(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        """image + instruction -> the next K unnormalized actions [K, D] float32 (K = config.action_chunk)."""
        return self.infer(image, instruction, unnorm_key).chunk

    @property
    def action_chunk(self) -> int:
        """Actions per inference (K)."""
        return self.config.action_chunk

    def close(self) -> None:
        self.backend.deactivate()

    def __enter__(self) -> "Policy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "vision_backbone_id": self.config.vision_backbone_id,
                "llm_layers": self.config.llm.num_layers, **self.backend.describe()}


def load_policy(path: str | Path, backend: str = "auto", device: str = "cpu", dtype: str = "float32",
                **backend_options: Any) -> Policy:
    """Load a checkpoint directory or a bundle directory as a ready-to-run Policy.

    Args:
        path: checkpoint directory (config.json, safetensors, tokenizer) or bundle directory
            (manifest.json, graphs/engines, tokenizer; written by ``rlrc-export``).
        backend: 'auto' (checkpoints: 'torch'; bundles: 'tensorrt' when the bundle has engines
            and TensorRT is installed, else 'onnxruntime'), 'torch', 'onnxruntime' or 'tensorrt'.
        device: 'cpu' or 'cuda[:i]' (torch, onnxruntime); 'tensorrt[:i]' selects onnxruntime's
            TensorRT execution provider.
        dtype: compute dtype of the torch backend ('float32', 'bfloat16', 'float16'); a bundle's
            precision is fixed by its manifest, so bundles ignore it.
        backend_options: passed to the backend (e.g. onnxruntime's ``providers``,
            ``intra_op_num_threads``).
    """
    path = Path(path)
    if is_bundle(path):
        return _load_bundle(path, backend, device, dtype, backend_options)
    if backend == "auto":
        backend = "torch"
    if backend in BUNDLE_BACKENDS:
        raise BackendError(
            f"backend {backend!r} runs bundles, but {path} is a checkpoint directory (no manifest.json); export one "
            f"with `rlrc-export pipeline --checkpoint {path} --out BUNDLE`, or use backend='torch'"
        )
    info = read_checkpoint(path, require_norm_stats=True)
    for key in info.config.norm_stats:  # fail at load, not at the first control step
        action_stats(info.config.norm_stats, key)
    means, stds = image_stats(path, info.config)
    transform = ImageTransform(image_size=info.config.image_size, means=means, stds=stds)
    tokenizer = PromptTokenizer.from_dir(path)
    runner = backend_class(backend)(path, info.config, device=device, dtype=dtype, **backend_options)
    runner.activate()
    log.info("loaded policy %s with backend %s", path, backend)
    return Policy(path, info.config, runner, tokenizer, transform)


def _load_bundle(path: Path, backend: str, device: str, dtype: str, options: dict[str, Any]) -> Policy:
    """A Policy from a bundle: every fact (config, prompt, image stats, norm_stats) from manifest.json."""
    manifest = read_manifest(path, verify=options.pop("verify", True))
    if backend == "auto":
        backend = "onnxruntime"
        if manifest.engines:
            try:
                import tensorrt  # noqa: F401

                backend = "tensorrt"
            except ImportError:
                log.info("bundle %s has TensorRT engines but tensorrt is not installed; using onnxruntime", path)
    if backend not in BUNDLE_BACKENDS:
        raise BackendError(
            f"backend {backend!r} cannot run the bundle {path} (it holds ONNX graphs/engines, not PyTorch weights); "
            f"use one of {list(BUNDLE_BACKENDS)} or 'auto', or point backend='torch' at the source checkpoint"
        )
    config = manifest.vla_config()
    for key in config.norm_stats or {}:
        action_stats(config.norm_stats, key)
    image = manifest.image
    transform = ImageTransform(image_size=int(image["size"]), means=tuple(tuple(m) for m in image["means"]),
                               stds=tuple(tuple(s) for s in image["stds"]))
    tokenizer = PromptTokenizer.from_dir(path)
    tokenizer.template = manifest.prompt.get("template", tokenizer.template)
    if dtype not in ("float32", manifest.precision):
        log.info("dtype=%s ignored: bundle %s is %s (its manifest decides)", dtype, path, manifest.precision)
    runner = backend_class(backend)(path, config, device=device, manifest=manifest, **options)
    runner.activate()
    log.info("loaded bundle %s (%s) with backend %s", path, manifest.precision, backend)
    return Policy(path, config, runner, tokenizer, transform)
