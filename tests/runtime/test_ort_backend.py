"""The onnxruntime backend: load_policy on bundles, errors, quantized graphs (real ONNX Runtime)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import rlrc_runtime as r
from export.quantize_deploy import QuantizeConfig, quantize_bundle
from rlrc_runtime.errors import BackendError, ConfigError
from rlrc_runtime.manifest import read_manifest


@pytest.fixture(scope="module")
def quantized(tiny_bundle, tmp_path_factory):
    base = tmp_path_factory.mktemp("ortq")
    return {p: quantize_bundle(tiny_bundle, base / p, QuantizeConfig(precision=p)) for p in ("int8", "int4")}


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    texts = ["pick up the red block", "open the drawer", "push the cup to the left", "stack the blocks"]
    for i in range(n):
        yield rng.integers(0, 256, (int(rng.integers(40, 300)), int(rng.integers(40, 300)), 3), dtype=np.uint8), texts[i % 4]


def test_backend_choice_and_errors(tiny_bundle, tiny_ckpt):
    with pytest.raises(BackendError, match="runs bundles.*rlrc-export pipeline"):
        r.load_policy(tiny_ckpt, backend="onnxruntime")
    with pytest.raises(BackendError, match="backend 'torch' cannot run the bundle"):
        r.load_policy(tiny_bundle, backend="torch")
    with pytest.raises(BackendError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        r.load_policy(tiny_bundle, device="cuda")
    with pytest.raises(BackendError, match="device='npu'"):
        r.load_policy(tiny_bundle, device="npu")
    p = r.load_policy(tiny_bundle, backend="onnxruntime", intra_op_num_threads=1)
    d = p.describe()
    assert d["backend"] == "onnxruntime" and d["providers"] == ["CPUExecutionProvider"] and d["precision"] == "fp32"
    res = p.infer(np.zeros((30, 40, 3), np.uint8), "go")
    assert set(p.backend.step_timings_ms) == {"prefill", *(f"decode_{i}" for i in range(1, 7))}
    assert res.timings_ms["llm"] >= sum(p.backend.step_timings_ms.values()) * 0.99


def test_bundle_runtime_path_is_torch_free(tiny_bundle):
    code = (
        "import sys, numpy as np, rlrc_runtime as r;"
        f"p = r.load_policy({str(tiny_bundle)!r});"
        "a = p.predict_action(np.zeros((48, 64, 3), np.uint8), 'go');"
        "heavy = [m for m in ('torch', 'export', 'onnx') if m in sys.modules];"
        "print(a.shape, heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(7,) []"


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_bundles_load_run_and_agree(tiny_bundle, quantized, precision):
    m = read_manifest(quantized[precision])
    fp32 = read_manifest(tiny_bundle)
    assert m.precision == precision and m.graphs["vision"].precision == "fp32"
    assert m.graphs["decode"].weight_bytes < fp32.graphs["decode"].weight_bytes / 3
    if precision == "int4":  # 4-bit decoder, 8-bit head: below the all-int8 bundle
        assert m.graphs["decode"].weight_bytes < read_manifest(quantized["int8"]).graphs["decode"].weight_bytes
    assert [s["stage"] for s in m.stages] == ["onnx", "quantize"]
    ops = {n.op_type for n in __import__("onnx").load(str(quantized[precision] / "decode.onnx"), load_external_data=False).graph.node}
    assert ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops) if precision == "int8" else "MatMulNBits" in ops
    ref, q = r.load_policy(tiny_bundle), r.load_policy(quantized[precision])
    same_seq = same_tok = 0
    n = 6
    for img, text in frames(n):
        a, b = ref.infer(img, text), q.infer(img, text)
        assert b.action.shape == (7,) and np.all(np.isfinite(b.action))
        same_seq += a.action_tokens.tolist() == b.action_tokens.tolist()
        same_tok += int((a.action_tokens == b.action_tokens).sum())
    print(f"{precision} agreement with fp32: {same_tok}/{7 * n} tokens, {same_seq}/{n} sequences")
    # The first token of each case comes from prefill alone; a random tiny model has near-ties, so only
    # a loose floor is asserted (the benchmark reports the exact agreement).
    assert same_tok >= (7 * n) // 4


def test_quantize_needs_an_fp32_bundle(quantized, tmp_path):
    with pytest.raises(ConfigError, match="starts from an fp32 bundle"):
        quantize_bundle(quantized["int8"], tmp_path / "x", QuantizeConfig(precision="int4"))
    with pytest.raises(ConfigError, match="block_size=24"):
        QuantizeConfig(precision="int4", block_size=24)


def test_int4_keeps_the_head_at_8_bits(tiny_bundle, quantized, tmp_path):
    from export.quantize_deploy import _head_nodes

    import onnx

    head = _head_nodes(onnx.load(str(tiny_bundle / "decode.onnx"), load_external_data=False))
    assert head
    nodes = onnx.load(str(quantized["int4"] / "decode.onnx"), load_external_data=False).graph.node
    kinds = {n.op_type for n in nodes if any(n.name.startswith(h + "_") for h in head)}
    assert "MatMulInteger" in kinds and "MatMulNBits" not in kinds  # the head: dynamic int8
    assert any(n.op_type == "MatMulNBits" for n in nodes)  # the decoder: 4-bit
    all4 = quantize_bundle(tiny_bundle, tmp_path / "all4", QuantizeConfig(precision="int4", head_bits=4))
    nodes4 = onnx.load(str(all4 / "decode.onnx"), load_external_data=False).graph.node
    assert {n.op_type for n in nodes4 if any(n.name.startswith(h + "_") for h in head)} == {"MatMulNBits"}
    with pytest.raises(ConfigError, match="head_bits=6"):
        QuantizeConfig(precision="int4", head_bits=6)
