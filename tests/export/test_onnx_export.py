"""ONNX export: three graphs, parity with the PyTorch model (real ONNX Runtime, no mocks)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rlrc_runtime as r
from export.checkpoint import load_model, save_checkpoint
from export.onnx_export import OnnxExportConfig, export_onnx
from rlrc_runtime.errors import ConfigError, InputError
from rlrc_runtime.manifest import read_manifest

INSTRUCTIONS = [
    "pick up the red block", "push the blue block to the left", "open the top drawer",
    "put the green cup on the plate", "stack the small cube on the large cube", "close the microwave",
    "move the sponge next to the sink", "Lift The Bottle", "wipe the table with the cloth",
    "place the apple in the bowl and then push the bowl towards the back of the table",
]


def cases(n: int = 20, seed: int = 0):
    """n varied (image, instruction) pairs: sizes, contents, prompt lengths."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(32, 500)), int(rng.integers(32, 500))
        kind = i % 4
        if kind == 0:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            img = np.full((h, w, 3), int(rng.integers(0, 256)), np.uint8)
        elif kind == 2:
            img = np.linspace(0, 255, h * w * 3).reshape(h, w, 3).astype(np.uint8)
        else:
            img = (rng.random((h, w, 3)) > 0.5).astype(np.uint8) * 255
        yield img, INSTRUCTIONS[i % len(INSTRUCTIONS)]


def torch_logits(model, pixels: np.ndarray, ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Teacher-forced logits [N, vocab] of the N generated positions (full forward, no cache)."""
    full = np.concatenate([ids, tokens[:-1]])
    with torch.inference_mode():
        logits = model(torch.from_numpy(pixels), torch.from_numpy(full)[None])[0]
    return logits[-len(tokens):].float().numpy()


def parity_report(ckpt, bundle, n: int = 20, logits_every: int = 4) -> dict:
    """Tokens (ORT vs the torch Policy) over n cases; max-abs errors of patches (every case) and of the
    logits of all generated positions (every ``logits_every``-th case: a full teacher-forced forward)."""
    model, _ = load_model(ckpt)
    ref = r.load_policy(ckpt, backend="torch")
    ort_policy = r.load_policy(bundle, backend="onnxruntime")
    off = ort_policy.backend.manifest.llm.head_offset
    same, vis_err, logit_err = 0, 0.0, 0.0
    for i, (img, text) in enumerate(cases(n)):
        a = ref.infer(img, text)
        b = ort_policy.infer(img, text)
        same += a.action_tokens.tolist() == b.action_tokens.tolist()
        pixels = ort_policy.image_transform(img)
        with torch.inference_mode():
            ref_patches = model.embed_image(torch.from_numpy(pixels)).float().numpy()
        got = ort_policy.backend.encode_image(pixels).astype(np.float32)
        vis_err = max(vis_err, float(np.abs(got - ref_patches).max()))
        if i % logits_every:
            continue
        ref_logits = torch_logits(model, pixels, ort_policy.tokenizer(text), b.action_tokens)
        got_logits = np.concatenate(ort_policy.backend.last_logits)  # [N, V']
        logit_err = max(logit_err, float(np.abs(got_logits - ref_logits[:, off:off + got_logits.shape[1]]).max()))
    return {"cases": n, "same_tokens": same, "vision_max_abs": vis_err, "logits_max_abs": logit_err}


@pytest.fixture(scope="module")
def fp32_bundle(tiny_ckpt, tmp_path_factory):
    """The default export (dynamo exporter, host embeddings, full head, with its own check)."""
    return export_onnx(tiny_ckpt, tmp_path_factory.mktemp("onnx") / "fp32")


def test_bundle_has_three_graphs_and_a_complete_manifest(fp32_bundle, tiny_ckpt):
    m = read_manifest(fp32_bundle)
    assert set(m.graphs) == {"vision", "prefill", "decode"}
    assert m.precision == "fp32" and m.llm.embeddings == "host" and m.llm.head == "full"
    P = m.vla_config().num_patches
    assert [t.name for t in m.graphs["vision"].inputs] == ["pixel_values"]
    assert m.graphs["vision"].outputs[0].shape == (1, P, 64)
    assert [t.name for t in m.graphs["prefill"].inputs] == ["inputs_embeds"]
    assert m.graphs["prefill"].outputs[0].name == "token" and m.graphs["prefill"].outputs[0].dtype == "int64"
    dec_in = [t.name for t in m.graphs["decode"].inputs]
    assert dec_in[:2] == ["token_embeds", "position"] and dec_in[2:4] == ["past_key_0", "past_value_0"]
    assert m.graphs["decode"].inputs[2].shape == (1, 2, m.llm.max_seq_len, 16)  # static S_max, GQA: 2 kv heads
    check = m.stages[0]["check"]
    assert check["tokens_equal"] and check["prefill_logits_max_abs"] < 1e-4 and check["vision_max_abs"] < 1e-4
    assert m.stages[0]["stage"] == "onnx" and "rlrc-export onnx" in m.stages[0]["command"]
    assert m.vla_config().llm == r.load_policy(tiny_ckpt).config.llm


def test_fp32_parity_20_cases(tiny_ckpt, fp32_bundle):
    rep = parity_report(tiny_ckpt, fp32_bundle, n=20)
    print("fp32 parity", json.dumps(rep))
    assert rep["same_tokens"] == 20
    assert rep["vision_max_abs"] < 1e-4 and rep["logits_max_abs"] < 1e-4


def test_hetero_layers_and_gqa_parity(ckpt_factory, tmp_path):
    ckpt = ckpt_factory("tiny-hetero")
    bundle = export_onnx(ckpt, tmp_path / "b", OnnxExportConfig(exporter="torchscript", check=False))
    m = read_manifest(bundle)
    assert m.llm.kv_heads == (2, 1, 2, 2)
    assert m.model_config["text_config"]["layer_intermediate_size"] == [128, 48, 96, 128]
    assert [t.shape[1] for t in m.graphs["decode"].inputs[2::2]] == [2, 1, 2, 2]
    rep = parity_report(ckpt, bundle, n=3, logits_every=2)
    assert rep["same_tokens"] == 3 and rep["logits_max_abs"] < 1e-4


@pytest.fixture(scope="module")
def fp16_bundle(tiny_ckpt, tmp_path_factory):
    cfg = OnnxExportConfig(precision="fp16", exporter="torchscript", check=False)
    return export_onnx(tiny_ckpt, tmp_path_factory.mktemp("onnx") / "fp16", cfg)


@pytest.mark.slow
def test_fp16_parity_20_cases(tiny_ckpt, fp16_bundle):
    rep = parity_report(tiny_ckpt, fp16_bundle, n=20, logits_every=1)
    print("fp16 parity", json.dumps(rep))
    assert rep["vision_max_abs"] < 5e-3 and rep["logits_max_abs"] < 5e-2 and rep["same_tokens"] >= 15


def test_fp16_errors_are_small_and_reported(tiny_ckpt, fp16_bundle):
    bundle = fp16_bundle
    m = read_manifest(bundle)
    assert m.precision == "fp16" and m.llm.cache_dtype == "float16"
    assert m.graphs["prefill"].inputs[0].dtype == "float16" and m.graphs["vision"].inputs[0].dtype == "float32"
    rep = parity_report(tiny_ckpt, bundle, n=4, logits_every=2)
    print("fp16 parity", json.dumps(rep))
    # fp16 rounding (~1e-3 relative) on logits of magnitude ~0.1-1; the tiny random model has near-ties,
    # so tokens may differ: the agreement is reported, not required.
    assert rep["vision_max_abs"] < 5e-3 and rep["logits_max_abs"] < 5e-2
    assert rep["same_tokens"] >= 2


@pytest.fixture(scope="module")
def acting_ckpt(tiny_ckpt, tmp_path_factory):
    """lm_head's action rows scaled up so greedy decoding emits action tokens, as a trained OpenVLA does."""
    model, _ = load_model(tiny_ckpt)
    with torch.no_grad():
        model.language_model.lm_head.weight[31744:32000] *= 40.0
    return save_checkpoint(model, tmp_path_factory.mktemp("acting") / "ckpt", tokenizer_dir=tiny_ckpt)


def test_action_head_equals_full_argmax_when_the_model_emits_action_tokens(acting_ckpt, tmp_path):
    cfg = OnnxExportConfig(head="action", embeddings="graph", exporter="torchscript", check=False)
    bundle = export_onnx(acting_ckpt, tmp_path / "act", cfg)
    m = read_manifest(bundle)
    assert m.llm.head == "action" and m.llm.head_offset == 31744 and m.llm.embed_file is None
    assert m.graphs["prefill"].outputs[1].shape == (1, 256)  # logits over the 256 action rows only
    assert [t.name for t in m.graphs["prefill"].inputs] == ["input_ids", "patches"]
    ref = r.load_policy(acting_ckpt, backend="torch")
    pol = r.load_policy(bundle)
    for img, text in cases(8, seed=3):
        a, b = ref.infer(img, text), pol.infer(img, text)
        assert np.all((a.action_tokens >= 31744) & (a.action_tokens < 32000))  # full argmax is an action token ...
        assert a.action_tokens.tolist() == b.action_tokens.tolist()  # ... so the sliced head agrees
        np.testing.assert_array_equal(a.action, b.action)


def test_action_head_on_a_model_that_prefers_text_tokens(tiny_ckpt, tmp_path):
    """Random weights: the full argmax is usually a text token; the action head still returns the best action token."""
    bundle = export_onnx(tiny_ckpt, tmp_path / "act", OnnxExportConfig(head="action", exporter="torchscript", check=False))
    model, _ = load_model(tiny_ckpt)
    pol = r.load_policy(bundle)
    img, text = next(cases(1, seed=5))
    res = pol.infer(img, text)
    assert np.all((res.action_tokens >= 31744) & (res.action_tokens < 32000))
    ids = pol.tokenizer(text)
    logits = torch_logits(model, pol.image_transform(img), ids, res.action_tokens)
    np.testing.assert_array_equal(res.action_tokens, logits[:, 31744:32000].argmax(-1) + 31744)
    assert not np.all((logits.argmax(-1) >= 31744) & (logits.argmax(-1) < 32000))


def test_host_and_graph_embeddings_agree(tiny_ckpt, fp32_bundle, tmp_path):
    graph = export_onnx(tiny_ckpt, tmp_path / "g", OnnxExportConfig(embeddings="graph", exporter="torchscript", check=False))
    a, b = r.load_policy(fp32_bundle), r.load_policy(graph)
    assert read_manifest(graph).graphs["prefill"].weight_bytes > read_manifest(fp32_bundle).graphs["prefill"].weight_bytes
    for img, text in cases(4, seed=9):
        assert a.infer(img, text).action_tokens.tolist() == b.infer(img, text).action_tokens.tolist()


def test_prompt_longer_than_the_static_cache_is_an_input_error(tiny_ckpt, tmp_path):
    bundle = export_onnx(tiny_ckpt, tmp_path / "short", OnnxExportConfig(max_seq_len=290, exporter="torchscript", check=False))
    pol = r.load_policy(bundle)
    assert pol.predict_action(np.zeros((8, 8, 3), np.uint8), "go").shape == (7,)
    with pytest.raises(InputError, match="max_seq_len=290"):
        pol.infer(np.zeros((8, 8, 3), np.uint8), "pick up " + "the red block and " * 5)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="int8"):
        OnnxExportConfig(precision="int8")
    with pytest.raises(ConfigError, match="embeddings='gpu'"):
        OnnxExportConfig(embeddings="gpu")
