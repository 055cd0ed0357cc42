"""Host embedding tables: per-row int8 / int4 storage, lookups, and quantized bundles (real ONNX Runtime)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import rlrc_runtime as r
from export.onnx_export import OnnxExportConfig, export_onnx
from export.quantize_deploy import QuantizeConfig, quantize_bundle
from rlrc_runtime.embeddings import EmbeddingTable, dequantize_rows, quantize_rows
from rlrc_runtime.errors import BackendError, ConfigError
from rlrc_runtime.manifest import BundleError, read_manifest


@pytest.mark.parametrize("quant,qmax", [("int8", 127), ("int4", 7)])
def test_row_quantization_error_is_half_a_step(quant, qmax):
    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.02, (300, 64)).astype(np.float32)
    table[7] = 0.0  # an all-zero row must survive (scale 1, not 0/0)
    stored, scale = quantize_rows(table, quant)
    assert stored.shape == (300, 64 if quant == "int8" else 32) and scale.shape == (300,)
    back = dequantize_rows(stored, scale, quant)
    step = np.abs(table).max(axis=1) / qmax
    assert np.all(np.abs(back - table) <= step[:, None] / 2 + 1e-9)
    assert np.all(back[7] == 0)
    # The largest entry of each row is exact up to float rounding (symmetric scale = max / qmax).
    i = np.abs(table).argmax(axis=1)
    np.testing.assert_allclose(back[np.arange(300), i], table[np.arange(300), i], rtol=1e-6)


def test_int4_packing_round_trips_every_value():
    q = np.array([[-7, -6, -1, 0, 1, 5, 6, 7]], np.float32)  # already on the grid with scale 1
    stored, scale = quantize_rows(q, "int4")
    assert stored.dtype == np.uint8 and scale[0] == 1.0
    np.testing.assert_array_equal(dequantize_rows(stored, scale, "int4"), q)
    with pytest.raises(ConfigError, match="even hidden size"):
        quantize_rows(np.ones((2, 3)), "int4")
    with pytest.raises(ConfigError, match="int2"):
        quantize_rows(np.ones((2, 4)), "int2")


def test_table_lookup_matches_the_dense_rows(tmp_path):
    rng = np.random.default_rng(1)
    table = rng.normal(0, 0.02, (50, 16)).astype(np.float32)
    np.save(tmp_path / "dense.npy", table)
    stored, scale = quantize_rows(table, "int8")
    np.save(tmp_path / "q.npy", stored)
    np.save(tmp_path / "s.npy", scale)
    dense = EmbeddingTable(tmp_path / "dense.npy")
    q = EmbeddingTable(tmp_path / "q.npy", "int8", tmp_path / "s.npy", np.float16)
    ids = np.array([3, 3, 49, 0])
    np.testing.assert_array_equal(dense[ids], table[ids])
    assert q[ids].dtype == np.float16 and q[ids].shape == (4, 16) and q[5].shape == (16,)
    np.testing.assert_allclose(q[ids], table[ids], atol=float(np.abs(table).max()) / 127)
    assert q.shape == dense.shape == (50, 16) and q.nbytes == 50 * 16 + 50 * 4
    with pytest.raises(BackendError, match="re-run rlrc-export quantize"):
        EmbeddingTable(tmp_path / "dense.npy", "int8", tmp_path / "s.npy")
    with pytest.raises(ConfigError, match="needs llm.embed_scale_file"):
        EmbeddingTable(tmp_path / "q.npy", "int8")


@pytest.fixture(scope="module")
def bundles(tiny_ckpt, tmp_path_factory):
    base = tmp_path_factory.mktemp("emb")
    fp32 = export_onnx(tiny_ckpt, base / "fp32", OnnxExportConfig(exporter="torchscript", check=False))
    out = {"fp32": fp32}
    for name, cfg in {"int8": QuantizeConfig(precision="int8"),
                      "int4": QuantizeConfig(precision="int4"),
                      "int8_dense_embed": QuantizeConfig(precision="int8", embed_precision="none"),
                      "int4_vision": QuantizeConfig(precision="int4", quantize_vision=True)}.items():
        out[name] = quantize_bundle(fp32, base / name, cfg)
    return out


def test_quantized_bundles_store_a_quantized_table(bundles):
    fp32 = read_manifest(bundles["fp32"])
    dense_bytes = (bundles["fp32"] / fp32.llm.embed_file).stat().st_size
    for name, quant, factor in (("int8", "int8", 3.5), ("int4", "int4", 6.5)):
        m = read_manifest(bundles[name])
        assert m.llm.embed_quant == quant and m.llm.embed_file == f"embed_tokens.{quant}.npy"
        assert not (bundles[name] / "embed_tokens.npy").exists()
        assert set(m.files) >= {m.llm.embed_file, m.llm.embed_scale_file}  # checksummed like everything else
        stored = sum((bundles[name] / f).stat().st_size for f in (m.llm.embed_file, m.llm.embed_scale_file))
        assert stored * factor < dense_bytes
    keep = read_manifest(bundles["int8_dense_embed"])
    assert keep.llm.embed_quant == "none" and keep.llm.embed_file == fp32.llm.embed_file


def test_quantized_table_changes_only_the_embeddings(bundles):
    """Same int8 graphs, dense vs int8 table: the prefill inputs differ by at most half a quantization step."""
    dense, q = r.load_policy(bundles["int8_dense_embed"]), r.load_policy(bundles["int8"])
    ids = np.arange(0, 32000, 997)
    a, b = dense.backend.embed_table[ids], q.backend.embed_table[ids]
    step = np.abs(a).max(axis=1) / 127
    assert np.all(np.abs(a - b) <= step[:, None] / 2 + 1e-7)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for text in ("pick up the red block", "stack the blocks"):
        rb = q.infer(img, text)
        assert np.all(np.isfinite(rb.action)) and rb.action.shape == (7,)


def test_tampered_or_inconsistent_table_is_refused(bundles, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundles["int4"], bad)
    m = read_manifest(bad)
    scales = np.load(bad / m.llm.embed_scale_file)
    np.save(bad / m.llm.embed_scale_file, scales * 2)
    with pytest.raises(BundleError, match="sha256"):
        r.load_policy(bad)
    raw = json.loads((bad / "manifest.json").read_text())
    raw["llm"]["embed_quant"] = "int3"
    (bad / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises((BundleError, ConfigError), match="int3"):
        read_manifest(bad, verify=False)


def test_vision_graph_quantized_on_request(bundles):
    import onnx

    fp32, q = read_manifest(bundles["fp32"]), read_manifest(bundles["int4_vision"])
    assert read_manifest(bundles["int4"]).graphs["vision"].precision == "fp32"
    assert q.graphs["vision"].precision == "int4" and q.graphs["vision"].data_files == ("vision.onnx.data",)
    assert q.graphs["vision"].weight_bytes < 0.6 * fp32.graphs["vision"].weight_bytes  # convs, norms, pos stay float
    ops = {n.op_type for n in onnx.load(str(bundles["int4_vision"] / "vision.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops and "Conv" in ops  # patch embeddings stay float
    p = r.load_policy(bundles["int4_vision"])
    res = p.infer(np.full((64, 64, 3), 90, np.uint8), "pick up the red block")
    assert res.action.shape == (7,) and np.all(np.isfinite(res.action))
