"""Parallel decoding of action chunks (OpenVLA-OFT style): the model, the config, training, the Policy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.model import OpenVLA, init_weights, parallel_mask
from export.tiny import PRESETS, preset_config
from export.train.data import IGNORE, chunk_targets
from export.train.sft import TrainConfig, train
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import ConfigError


@pytest.fixture(scope="module")
def model() -> OpenVLA:
    m = OpenVLA(preset_config(PRESETS["tiny-128"]))
    init_weights(m, seed=0)
    return m.eval()


def test_mask_is_causal_except_within_the_slots():
    mask = parallel_mask(torch.tensor([2]), torch.tensor([3]), 6)[0, 0]
    want = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, want)


def test_one_pass_decoding_equals_the_training_forward(model):
    """generate_parallel (inference) and parallel_hidden_states (training, right-padded batch of two prompt
    lengths) give the same tokens; the prompt positions are the causal model's, untouched by the slots."""
    pv = torch.randn(2, 6, 128, 128, generator=torch.Generator().manual_seed(0))
    p1, p2, n = torch.tensor([1, 5, 9, 11, 29871]), torch.tensor([1, 7, 29871]), 14
    p = model.config.num_patches
    with torch.no_grad():
        patches = model.embed_image(pv)
        one = model.generate_parallel(patches[:1], p1[None], n)[0]
        two = model.generate_parallel(patches[1:], p2[None], n)[0]
        ids = torch.full((2, 5 + n + 2), 32000)  # two pads after the longer row's slots
        ids[0, :5], ids[1, :3] = p1, p2
        hidden = model.parallel_hidden_states(pv, ids, torch.tensor([5, 3]), torch.tensor([n, n]))
        head = model.language_model.lm_head
        assert torch.equal(head(hidden[0, p + 5 : p + 5 + n]).argmax(-1), one)
        assert torch.equal(head(hidden[1, p + 3 : p + 3 + n]).argmax(-1), two)
        torch.testing.assert_close(hidden[0, : p + 5], model.hidden_states(pv[:1], p1[None])[0], atol=1e-5, rtol=1e-5)
        # Slots see each other: changing the chunk length changes the first slot's output.
        shorter = model.parallel_hidden_states(pv[:1], ids[:1], torch.tensor([5]), torch.tensor([7]))
        assert not torch.allclose(shorter[0, p + 5], hidden[0, p + 5])


def test_config_round_trip_and_checks():
    config = preset_config(PRESETS["tiny-128"]).replace(action_chunk=8, decoding="parallel")
    back = VLAConfig.from_hf_dict(json.loads(json.dumps(config.to_hf_dict())))
    assert (back.action_chunk, back.decoding) == (8, "parallel")
    plain = preset_config(PRESETS["tiny-128"]).to_hf_dict()
    assert "rlrc_action_chunk" not in plain and VLAConfig.from_hf_dict(plain).decoding == "autoregressive"
    with pytest.raises(ConfigError, match="rlrc_action_chunk=8 needs rlrc_decoding='parallel'"):
        preset_config(PRESETS["tiny-128"]).replace(action_chunk=8)
    with pytest.raises(ConfigError, match="rlrc_action_chunk='8' must be an integer"):
        VLAConfig.from_hf_dict({**plain, "rlrc_action_chunk": "8", "rlrc_decoding": "parallel"})
    with pytest.raises(ConfigError, match="--action-chunk=4 needs --decoding parallel"):
        TrainConfig(data="x", out="y", action_chunk=4, decoding="autoregressive")


def test_empty_slots_are_alike_after_the_first_layer_and_learned_ones_are_not():
    """Why learned slots: a zero input gives q = k = v = 0 in the first layer, so every empty slot attends
    uniformly to the same keys and leaves it with the same state; only RoPE in later layers can tell the
    slots apart. Learned slots differ from the first layer on."""
    config = preset_config(PRESETS["tiny-128"]).replace(action_chunk=2, decoding="parallel")
    states = {}
    for slots in ("zero", "learned"):
        m = OpenVLA(config)
        init_weights(m, seed=0)
        if slots == "learned":
            m.learn_slot_embeddings(seed=0)
        out = []
        hook = m.language_model.model.layers[0].register_forward_hook(lambda mod, args, res: out.append(res))
        pv = torch.randn(1, 6, 128, 128, generator=torch.Generator().manual_seed(0))
        ids = torch.tensor([[1, 5, 9, 29871] + [32000] * 14])
        with torch.no_grad():
            m.parallel_hidden_states(pv, ids, torch.tensor([4]), torch.tensor([14]))
        hook.remove()
        first = m.config.num_patches + 4
        states[slots] = out[0][0, first:first + 14]
    zero, learned = states["zero"], states["learned"]
    torch.testing.assert_close(zero, zero[:1].expand_as(zero), atol=1e-6, rtol=0)
    assert (learned - learned[:1]).abs().max() > 1e-3


def test_learned_slots_round_trip_and_checks(ckpt_factory):
    from export.checkpoint import load_model

    config = preset_config(PRESETS["tiny-128"]).replace(action_chunk=2, decoding="parallel", slot_embeddings="learned")
    back = VLAConfig.from_hf_dict(json.loads(json.dumps(config.to_hf_dict())))
    assert back.slot_embeddings == "learned"
    assert "rlrc_slot_embeddings" not in config.replace(slot_embeddings="zero").to_hf_dict()
    with pytest.raises(ConfigError, match="rlrc_slot_embeddings='learned' needs rlrc_decoding='parallel'"):
        preset_config(PRESETS["tiny-128"]).replace(slot_embeddings="learned")
    model, info = load_model(ckpt_factory("tiny-128", action_chunk=2, slot_embeddings="learned"))
    hidden = info.config.llm.hidden_size
    assert info.config.slot_embeddings == "learned" and tuple(model.action_slots.shape) == (14, hidden)
    assert "action_slots" in info.tensors and model.action_slots.abs().sum() > 0
    with pytest.raises(ConfigError, match="14 learned action slots.*7 were asked for"):
        model.generate_parallel(torch.zeros(1, model.config.num_patches, hidden), torch.tensor([[1, 5]]), 7)


def test_chunk_targets_ignore_steps_past_the_episode():
    tokens = np.arange(4 * 2).reshape(4, 2)  # 4 steps of 2-D actions
    chunks = chunk_targets(tokens, 3)
    assert chunks.shape == (4, 6)
    assert chunks[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert chunks[3].tolist() == [6, 7, IGNORE, IGNORE, IGNORE, IGNORE]


def test_chunked_training_and_policy(tmp_path):
    from sim.data import DemoConfig, write_demos

    import rlrc_runtime

    demos = tmp_path / "demos.hdf5"
    write_demos(DemoConfig(episodes=2, families=("pick",), image_size=64, seed=0), demos, progress=False)
    cfg = TrainConfig(data=str(demos), out=str(tmp_path / "run"), preset="tiny-128", steps=6, batch_size=8,
                      warmup_steps=1, lr=3e-3, save_every=6, log_every=1, progress=False, action_chunk=3,
                      head_rows="targets", label_sigma=2.0)
    final = train(cfg)
    saved = json.loads((final / "config.json").read_text())
    assert saved["rlrc_action_chunk"] == 3 and saved["rlrc_decoding"] == "parallel"
    assert saved["rlrc_slot_embeddings"] == "learned"  # the default when a run makes a model parallel
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["losses/action_ce"] < rows[0]["losses/action_ce"]
    with rlrc_runtime.load_policy(final) as policy:
        res = policy.infer(np.zeros((64, 64, 3), np.uint8), "pick up the red block")
        assert policy.action_chunk == 3 and res.chunk.shape == (3, 7) and res.action_tokens.shape == (21,)
        assert np.array_equal(res.action, res.chunk[0])
        assert np.array_equal(policy.predict_chunk(np.zeros((64, 64, 3), np.uint8), "pick up the red block"),
                              res.chunk)


def test_chunked_bundle_has_one_llm_graph_and_matches_pytorch(ckpt_factory, tmp_path):
    """ONNX export of a K = 4 model: vision + one chunk graph (no decode loop), token-exact with the PyTorch
    policy; int8 quantization keeps the layout; the TensorRT engine path refuses it with the alternative."""
    import rlrc_runtime
    from export.onnx_export import OnnxExportConfig, export_onnx
    from export.quantize_deploy import QuantizeConfig, quantize_bundle
    from rlrc_runtime.backends.tensorrt import TensorRTBackend
    from rlrc_runtime.errors import BackendError
    from rlrc_runtime.manifest import read_manifest

    ckpt = ckpt_factory("tiny", action_chunk=4)
    bundle = export_onnx(ckpt, tmp_path / "b", OnnxExportConfig(exporter="torchscript"))
    m = read_manifest(bundle)
    assert set(m.graphs) == {"vision", "chunk"} and (m.llm.decoding, m.llm.chunk_tokens) == ("parallel", 28)
    assert m.model_config["rlrc_action_chunk"] == 4 and m.stages[0]["check"]["tokens_equal"] is True
    assert [t.name for t in m.graphs["chunk"].outputs] == ["tokens", "logits"]
    img = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    with rlrc_runtime.load_policy(ckpt) as ref, rlrc_runtime.load_policy(bundle) as got:
        want = ref.infer(img, "pick up the red block")
        res = got.infer(img, "pick up the red block")
        assert res.chunk.shape == (4, 7) and res.action_tokens.tolist() == want.action_tokens.tolist()
        assert set(got.backend.step_timings_ms) == {"chunk"}
    q = read_manifest(quantize_bundle(bundle, tmp_path / "q", QuantizeConfig(precision="int8")))
    assert q.precision == "int8" and set(q.graphs) == {"vision", "chunk"}
    with pytest.raises(BackendError, match="parallel-decoding .* backend='onnxruntime', device='tensorrt'"):
        TensorRTBackend(bundle, m.vla_config(), device="cuda", manifest=m)


def test_a_bundle_with_learned_slots_matches_pytorch_token_for_token(ckpt_factory, tmp_path):
    """The learned slots are a constant of the chunk graph; with the head biased to action tokens and the
    slots scaled up, the 28 tokens differ from each other, so a slot out of place would show."""
    import rlrc_runtime
    from export.checkpoint import load_model, save_checkpoint
    from export.onnx_export import OnnxExportConfig, export_onnx

    base = ckpt_factory("tiny-128", action_chunk=4, slot_embeddings="learned")
    model, _ = load_model(base)
    with torch.no_grad():
        model.language_model.lm_head.weight[31744:32000] *= 40.0
        model.action_slots.mul_(50.0)
    ckpt = save_checkpoint(model, tmp_path / "ckpt", tokenizer_dir=base)
    bundle = export_onnx(ckpt, tmp_path / "b", OnnxExportConfig(exporter="torchscript", head="action"))
    img = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    with rlrc_runtime.load_policy(ckpt) as ref, rlrc_runtime.load_policy(bundle) as got:
        want, res = ref.infer(img, "stack the blocks"), got.infer(img, "stack the blocks")
    assert len(set(want.action_tokens.tolist())) > 10
    assert res.action_tokens.tolist() == want.action_tokens.tolist()
