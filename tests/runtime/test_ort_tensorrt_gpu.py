"""GPU paths: onnxruntime's CUDA/TensorRT providers and the TensorRT engine backend.

These need an NVIDIA GPU with onnxruntime-gpu / tensorrt / cuda-python; they skip cleanly elsewhere.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _gpu_reason() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    for mod in ("tensorrt", "cuda"):
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} not installed (pip install 'rlrc_runtime[tensorrt]')"
    return None


REASON = _gpu_reason()


@pytest.fixture(scope="module")
def gpu_bundle(tiny_ckpt, tmp_path_factory):
    if REASON:
        pytest.skip(REASON)
    from export.engine import EngineConfig, build_engines
    from export.onnx_export import OnnxExportConfig, export_onnx

    b = export_onnx(tiny_ckpt, tmp_path_factory.mktemp("trt") / "b", OnnxExportConfig(exporter="torchscript", check=False))
    build_engines(b, EngineConfig(precision="fp32"))
    return b


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_tensorrt_engines_match_onnxruntime(gpu_bundle):
    import rlrc_runtime as r
    from rlrc_runtime.manifest import read_manifest

    m = read_manifest(gpu_bundle)
    assert set(m.engines) == {"vision", "prefill", "decode"} and m.engines["decode"].compute_capability
    trt_policy = r.load_policy(gpu_bundle, backend="tensorrt", device="cuda")
    ort_policy = r.load_policy(gpu_bundle, backend="onnxruntime")
    rng = np.random.default_rng(0)
    for i in range(5):
        img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        a, b = trt_policy.infer(img, "pick up the red block"), ort_policy.infer(img, "pick up the red block")
        assert a.action_tokens.tolist() == b.action_tokens.tolist()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_onnxruntime_cuda_provider(gpu_bundle):
    import onnxruntime as ort

    import rlrc_runtime as r

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu not installed")
    p = r.load_policy(gpu_bundle, backend="onnxruntime", device="cuda")
    assert "CUDAExecutionProvider" in p.describe()["providers"]
    assert p.predict_action(np.zeros((64, 64, 3), np.uint8), "go").shape == (7,)
