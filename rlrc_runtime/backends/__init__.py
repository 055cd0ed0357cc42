"""Inference backends behind one interface, chosen by name and imported only when chosen.

Each backend runs the neural parts (vision towers + projector, and greedy decoding of the LLM);
the Policy does everything else (preprocessing, prompt, action decoding) in numpy so every backend
shares one implementation of the OpenVLA conventions.
"""
from __future__ import annotations

import importlib

from rlrc_runtime.backends.base import Backend
from rlrc_runtime.config import did_you_mean
from rlrc_runtime.errors import BackendError

# name -> (module, class, the pip extra that provides its dependencies)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("rlrc_runtime.backends.torch_ref", "TorchBackend", "export"),
    "onnxruntime": ("rlrc_runtime.backends.onnxruntime", "OnnxRuntimeBackend", "onnx"),
    "tensorrt": ("rlrc_runtime.backends.tensorrt", "TensorRTBackend", "tensorrt"),
}

# Backends that run bundles (manifest.json + graphs/engines); 'torch' runs checkpoint directories.
BUNDLE_BACKENDS = ("onnxruntime", "tensorrt")


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name``, importing its module now."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; available: {sorted(BACKENDS)}.{did_you_mean(name, sorted(BACKENDS))}")
    module, cls, extra = BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} needs packages that are not installed here ({exc.name or exc}); "
            f"install them with: pip install 'rlrc_runtime[{extra}]'"
        ) from exc


__all__ = ["BACKENDS", "BUNDLE_BACKENDS", "Backend", "backend_class"]
