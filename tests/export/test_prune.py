"""Structured pruning (export.prune): bookkeeping, exactness, GQA groups, importance, CLI, errors."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from export.checkpoint import load_model
from export.model import OpenVLA, init_weights
from export.prune import (PruneConfig, format_report, importance, layer_counts, load_calibration_batches,
                          layer_shape, prune_checkpoint, prune_layer, prune_model)
from export.tiny import PRESETS, preset_config
from export.tokenizer_gen import write_tokenizer
from rlrc_runtime.errors import CheckpointError, ConfigError, MissingFileError

D = 16  # head_dim of the tiny presets


def _model(preset: str = "tiny-128", seed: int = 0, **dims) -> OpenVLA:
    model = OpenVLA(preset_config(dataclasses.replace(PRESETS[preset], **dims)))
    init_weights(model, seed=seed)
    return model.eval()


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from sim.data import DemoConfig, write_demos

    out = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    write_demos(DemoConfig(episodes=2, families=("pick",), image_size=32, seed=0), out, progress=False)
    return out


@pytest.fixture(scope="module")
def batches(demos, tmp_path_factory) -> list:
    tok = tmp_path_factory.mktemp("tok")
    write_tokenizer(tok)
    return load_calibration_batches(preset_config(PRESETS["tiny-128"]), tok, [str(demos)], n_batches=2, batch_size=2)


def _logits(model: OpenVLA, batch) -> torch.Tensor:
    """Logits [B, 8, vocab] of the last 8 positions (those that emit the action tokens and EOS):
    the full-sequence lm_head would dominate these tests' time."""
    with torch.no_grad():
        hidden = model.hidden_states(batch.pixel_values, batch.input_ids)
        return model.language_model.lm_head(hidden[:, -8:]).float()


def _layer(model: OpenVLA, i: int):
    return model.language_model.model.layers[i]


def _assert_config_matches_tensors(model: OpenVLA) -> None:
    llm = model.config.llm
    assert len(model.language_model.model.layers) == llm.num_layers
    for i, layer in enumerate(model.language_model.model.layers):
        h, kv, m = llm.num_attention_heads[i], llm.num_key_value_heads[i], llm.intermediate_size[i]
        attn = layer.self_attn
        assert attn.q_proj.weight.shape == (h * llm.head_dim, llm.hidden_size)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (kv * llm.head_dim, llm.hidden_size)
        assert attn.o_proj.weight.shape == (llm.hidden_size, h * llm.head_dim)
        assert layer.mlp.gate_proj.weight.shape == layer.mlp.up_proj.weight.shape == (m, llm.hidden_size)
        assert layer.mlp.down_proj.weight.shape == (llm.hidden_size, m)
        assert (attn.num_heads, attn.num_kv_heads, attn.layer) == (h, kv, i)


# --------------------------------------------------------------------------- checkpoints


def test_ratio_zero_reproduces_the_model_exactly(ckpt_factory, demos, batches, tmp_path):
    src = ckpt_factory("tiny-128")
    report = prune_checkpoint(src, tmp_path / "p0", PruneConfig(ratio=0.0, method="taylor", data=str(demos),
                                                                calib_batches=2, batch_size=2, progress=False))
    assert report["achieved_ratio"] == 0.0
    a, info_a = load_model(src)
    b, info_b = load_model(tmp_path / "p0")
    assert info_b.config == info_a.config
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert torch.equal(_logits(a, batches[0]), _logits(b, batches[0]))
    # In place too, and scoring leaves no gradients or requires_grad changes behind.
    flags = {n: p.requires_grad for n, p in a.named_parameters()}
    prune_model(a, PruneConfig(ratio=0.0, method="taylor", progress=False), batches)
    assert torch.equal(_logits(a, batches[0]), _logits(b, batches[0]))
    assert all(p.grad is None for p in a.parameters())
    assert {n: p.requires_grad for n, p in a.named_parameters()} == flags


def test_pruned_checkpoint_round_trips_and_runs(ckpt_factory, demos, tmp_path):
    import rlrc_runtime as r

    src = ckpt_factory("tiny-128")
    out = tmp_path / "pruned"
    cfg = PruneConfig(ratio=0.5, method="taylor", data=str(demos), calib_batches=2, batch_size=2, progress=False)
    report = prune_checkpoint(src, out, cfg)
    model, info = load_model(out)
    _assert_config_matches_tensors(model)
    llm = info.config.llm
    assert llm.num_attention_heads == (4, 2, 2, 4) and llm.num_key_value_heads == (2, 1, 1, 2)
    assert llm.intermediate_size == (128, 64, 64, 128) and llm.head_dim == D and llm.hidden_size == 64
    raw = json.loads((out / "config.json").read_text())["text_config"]
    assert raw["layer_intermediate_size"] == [128, 64, 64, 128] and raw["head_dim"] == D
    # norm_stats, tokenizer and the vision side come through untouched.
    src_model, src_info = load_model(src)
    assert info.config.norm_stats == src_info.config.norm_stats
    assert (out / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    for name, t in src_model.state_dict().items():
        if not name.startswith("language_model.model.layers"):
            assert torch.equal(t, model.state_dict()[name]), name
    # The report: on disk, with sizes, per-layer widths, calibration and timings.
    saved = json.loads((out / "prune_report.json").read_text())
    assert saved["config"]["ratio"] == 0.5 and saved["method"] == "taylor"
    assert saved["calibration"]["files"] == [str(demos)] and saved["calibration"]["batches"] == 2
    assert saved["calibration"]["loss_before"] > 0 and saved["calibration"]["loss_after"] > 0
    p, b = saved["params"], saved["bytes"]
    assert p["llm_params_after"] == sum(t.numel() for t in model.language_model.parameters())
    assert p["llm_params_before"] - p["llm_params_after"] == p["prunable_before"] - p["prunable_after"]
    assert b["llm_bytes_after"] == 4 * p["llm_params_after"] and b["total_bytes_before"] > b["total_bytes_after"]
    assert saved["layers"][1]["heads"] == [4, 2] and saved["layers"][0]["status"] == "kept"
    assert abs(report["achieved_ratio"] - 0.5) < 0.01 and saved["wall_time_s"]["total"] > 0
    table = format_report(report)
    assert "achieved 50.0%" in table and "calibration  2 batches, 4 samples" in table
    with r.load_policy(out) as policy:
        assert policy.predict_action(np.zeros((32, 32, 3), np.uint8), "pick up the red block").shape == (7,)
    with pytest.raises(CheckpointError, match="exists and is not empty"):
        prune_checkpoint(src, out, PruneConfig(ratio=0.5, method="magnitude", progress=False))


def test_heterogeneous_input_and_bf16_storage(ckpt_factory, tmp_path):
    src = ckpt_factory("tiny-hetero", dtype="bfloat16")
    report = prune_checkpoint(src, tmp_path / "h", PruneConfig(ratio=0.5, method="magnitude", keep_first=0,
                                                               keep_last=0, progress=False))
    model, info = load_model(tmp_path / "h", dtype="bfloat16")
    _assert_config_matches_tensors(model)
    # Layer 1 has a single kv group: its attention stays, the MLP takes the whole cut.
    assert info.config.llm.num_key_value_heads == (1, 1, 1, 1)
    assert info.config.llm.num_attention_heads == (2, 2, 1, 2)
    assert report["stored_dtype"] == "bfloat16" and report["bytes"]["llm_bytes_after"] == 2 * report["params"]["llm_params_after"]
    assert all(abs(row["achieved_ratio"] - 0.5) < 0.02 for row in report["layers"])


# --------------------------------------------------------------------------- structures


@pytest.mark.parametrize("kv", [2, 4], ids=["gqa", "mha"])
def test_group_pruning_equals_masking_the_group(kv, batches):
    model = _model(num_key_value_heads=(kv,) * 4)
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    g = 4 // kv  # query heads per kv head
    # Remove kv group 0 of layer 1: query heads 0..g-1 with it. Masking = zero its o_proj columns.
    with torch.no_grad():
        _layer(masked, 1).self_attn.o_proj.weight[:, : g * D] = 0
    prune_layer(_layer(pruned, 1), [0], [])
    attn, ref = _layer(pruned, 1).self_attn, _layer(model, 1).self_attn
    assert (attn.num_heads, attn.num_kv_heads) == (4 - g, kv - 1)
    assert torch.equal(attn.q_proj.weight, ref.q_proj.weight[g * D :])
    assert torch.equal(attn.k_proj.weight, ref.k_proj.weight[D:]) and torch.equal(attn.v_proj.weight, ref.v_proj.weight[D:])
    assert torch.equal(attn.o_proj.weight, ref.o_proj.weight[:, g * D :])
    torch.testing.assert_close(_logits(pruned, batches[0]), _logits(masked, batches[0]), rtol=1e-5, atol=1e-5)
    # MLP channels: gate/up rows and down columns go together; equals zeroing down_proj columns.
    with torch.no_grad():
        _layer(masked, 2).mlp.down_proj.weight[:, [3, 70]] = 0
    prune_layer(_layer(pruned, 2), [], [3, 70])
    torch.testing.assert_close(_logits(pruned, batches[0]), _logits(masked, batches[0]), rtol=1e-5, atol=1e-5)


def test_layer_counts_hit_the_ratio():
    gqa = layer_shape(_layer(_model(), 1))
    assert layer_counts(gqa, 0.0) == (0, 0) and layer_counts(gqa, 0.5) == (1, 64)
    kg, kc = layer_counts(gqa, 0.3)
    assert abs(kg * gqa.group_params + kc * gqa.channel_params - 0.3 * gqa.prunable) <= gqa.channel_params / 2
    assert layer_counts(gqa, 0.9) == (1, 127)  # the most it may take: one group and one channel stay


# --------------------------------------------------------------------------- importance


def test_taylor_scores_a_silent_head_and_channel_zero_and_prunes_them_first(batches):
    model = _model()
    with torch.no_grad():
        _layer(model, 1).self_attn.o_proj.weight[:, 2 * D : 4 * D] = 0  # kv group 1 (query heads 2, 3) is silent
        _layer(model, 2).mlp.down_proj.weight[:, 5] = 0  # channel 5 is silent
    reference = copy.deepcopy(model)
    scores, loss = importance(model, "taylor", [1, 2], batches)
    assert loss > 0
    assert scores[1].attn[1].item() == 0.0 and scores[1].attn[0].item() > 0
    assert scores[2].mlp[5].item() == 0.0 and (scores[2].mlp > 0).sum().item() == 127
    prune_model(model, PruneConfig(ratio=0.5, method="taylor", progress=False), batches)
    assert torch.equal(_layer(model, 1).self_attn.k_proj.weight, _layer(reference, 1).self_attn.k_proj.weight[:D])
    kept = _layer(model, 2).mlp.down_proj.weight
    assert not any(torch.equal(kept[:, j], _layer(reference, 2).mlp.down_proj.weight[:, 5]) for j in range(kept.shape[1]))


def test_magnitude_prunes_the_smallest_structures():
    model = _model()
    with torch.no_grad():
        attn = _layer(model, 2).self_attn
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight[: proj.weight.shape[0] // 2] *= 1e-3  # kv group 0 and its query heads
        attn.o_proj.weight[:, : 2 * D] *= 1e-3
    reference = copy.deepcopy(model)
    norms = [(reference.language_model.model.layers[1].mlp.gate_proj.weight[c].pow(2).sum()
              + reference.language_model.model.layers[1].mlp.up_proj.weight[c].pow(2).sum()
              + reference.language_model.model.layers[1].mlp.down_proj.weight[:, c].pow(2).sum()).item() for c in range(128)]
    prune_model(model, PruneConfig(ratio=0.5, method="magnitude", progress=False))
    assert torch.equal(_layer(model, 2).self_attn.k_proj.weight, _layer(reference, 2).self_attn.k_proj.weight[D:])
    keep = sorted(np.argsort(norms, kind="stable")[64:].tolist())
    assert torch.equal(_layer(model, 1).mlp.gate_proj.weight, _layer(reference, 1).mlp.gate_proj.weight[keep])


def test_random_is_seeded():
    def run(seed: int) -> torch.Tensor:
        model = _model()
        prune_model(model, PruneConfig(ratio=0.5, method="random", seed=seed, progress=False))
        return _layer(model, 1).mlp.gate_proj.weight

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_global_scope_prunes_the_weaker_layer_more():
    model = _model()
    with torch.no_grad():
        for w in _layer(model, 2).parameters():
            if w.ndim == 2:
                w *= 0.1
    report = prune_model(model, PruneConfig(ratio=0.4, method="magnitude", scope="global", progress=False))
    assert abs(report["achieved_ratio"] - 0.4) < 0.01
    rows = report["layers"]
    assert rows[2]["achieved_ratio"] > 0.6 and rows[1]["achieved_ratio"] < 0.2
    _assert_config_matches_tensors(model)


# --------------------------------------------------------------------------- ratios and layers


def test_first_and_last_layers_stay_whole():
    model = _model()
    reference = copy.deepcopy(model)
    prune_model(model, PruneConfig(ratio=0.5, method="magnitude", progress=False))
    for i in (0, 3):
        for (name, a), b in zip(_layer(model, i).state_dict().items(), _layer(reference, i).state_dict().values()):
            assert torch.equal(a, b), (i, name)
    model = _model()
    report = prune_model(model, PruneConfig(ratio=0.5, method="magnitude", keep_first=2, keep_last=0, progress=False))
    assert [row["status"] for row in report["layers"]] == ["kept", "kept", "pruned", "pruned"]
    assert model.config.llm.intermediate_size == (128, 128, 64, 64)


def test_ratio_0_9(caplog):
    # Eight 8-wide MHA heads: fine enough structures for 90 % to be reachable.
    model = _model(head_dim=8, num_attention_heads=(8,) * 4, num_key_value_heads=(8,) * 4)
    report = prune_model(model, PruneConfig(ratio=0.9, method="magnitude", progress=False))
    assert abs(report["achieved_ratio"] - 0.9) < 0.01
    _assert_config_matches_tensors(model)
    for scope in ("layer", "global"):  # two kv groups: one group and one channel must stay, so ~83 % at most
        model = _model()
        with caplog.at_level(logging.WARNING, logger="export.prune"):
            report = prune_model(model, PruneConfig(ratio=0.9, method="random", scope=scope, progress=False))
        assert model.config.llm.num_key_value_heads == (2, 1, 1, 2) and model.config.llm.intermediate_size == (128, 1, 1, 128)
        assert "short of the 90.0% asked" in caplog.text
    ids = torch.tensor([[1, 100, 200, 29871]])
    out = model.generate(model.embed_image(torch.zeros(1, 6, 128, 128)), ids, 7)
    assert out.shape == (1, 7)


def test_per_layer_ratios():
    model = _model()
    report = prune_model(model, PruneConfig(layer_ratios="0,0.5,0.25,0", method="magnitude", progress=False))
    got = [row["achieved_ratio"] for row in report["layers"]]
    assert got[0] == got[3] == 0.0 and abs(got[1] - 0.5) < 0.01 and abs(got[2] - 0.25) < 0.01
    assert report["ratio"] == pytest.approx(0.375)
    _assert_config_matches_tensors(model)


def test_depth_pruning(ckpt_factory, batches, tmp_path):
    import rlrc_runtime as r

    model = _model()
    skipped = copy.deepcopy(model)
    _layer(skipped, 2).has_attn = _layer(skipped, 2).has_mlp = False  # the reference: layer 2 skipped
    report = prune_model(model, PruneConfig(drop_layers="2", method="magnitude", progress=False), batches)
    assert report["layers"][2]["status"] == "dropped" and report["params"]["dropped_layer_params"] > 0
    assert model.config.llm.num_layers == 3
    _assert_config_matches_tensors(model)
    assert torch.equal(_logits(model, batches[0]), _logits(skipped, batches[0]))
    # Width and depth together, through a checkpoint that loads and acts.
    out = tmp_path / "deep"
    prune_checkpoint(ckpt_factory("tiny-128"), out, PruneConfig(ratio=0.5, drop_layers=(1,), method="magnitude", progress=False))
    loaded, info = load_model(out)
    assert info.config.llm.intermediate_size == (128, 64, 128) and info.config.llm.num_attention_heads == (4, 2, 4)
    with r.load_policy(out) as policy:
        assert policy.predict_action(np.zeros((32, 32, 3), np.uint8), "push the cube").shape == (7,)


def test_cli(ckpt_factory, demos, tmp_path, capsys):
    from export.cli import main

    out = tmp_path / "cli"
    code = main(["prune", "--checkpoint", str(ckpt_factory("tiny-128")), "--out", str(out), "--ratio", "0.5",
                 "--method", "taylor", "--data", str(demos), "--calib-batches", "1", "--batch-size", "2",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "achieved 50.0%" in text and "kv heads" in text
    assert json.loads((out / "prune_report.json").read_text())["calibration"]["samples"] == 2
    code = main(["prune", "--checkpoint", str(ckpt_factory("tiny-128")), "--out", str(tmp_path / "x"), "--ratio", "0.5"])
    assert code == 2 and "--data" in capsys.readouterr().err


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(ratio=-0.1), "ratio=-0.1 is out of range"),
    (dict(ratio=0.95), r"ratio=0.95 is out of range.*\[0, 0.9\]"),
    (dict(ratio=0.5, method="tayler"), "Did you mean 'taylor'"),
    (dict(ratio=0.5, scope="globl"), "Did you mean 'global'"),
    (dict(), "no pruning asked for"),
    (dict(ratio=0.5, layer_ratios="0,0.5"), "both set"),
    (dict(layer_ratios="0,x"), "not a comma-separated list"),
    (dict(layer_ratios="0,0.5,0.5,0", scope="global"), "need --scope layer"),
    (dict(drop_layers="1,1"), "repeats a layer"),
    (dict(ratio=0.5, calib_batches=0), "calib_batches=0 must be an int >= 1"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PruneConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ratio=0.5), "method='taylor' needs calibration batches"),
    (dict(layer_ratios="0,0.5", method="magnitude"), "has 2 values but the model has 4 decoder layers"),
    (dict(layer_ratios="0.5,0.5,0.5,0", method="magnitude"), r"layer_ratios\[0\]=0.5 but layer 0 is kept whole"),
    (dict(drop_layers="0", method="magnitude"), "keep whole"),
    (dict(drop_layers="4", method="magnitude"), "do not exist"),
    (dict(drop_layers="0,1,2,3", method="magnitude", keep_first=0, keep_last=0), "removes all 4"),
    (dict(ratio=0.5, method="magnitude", keep_first=2, keep_last=2), "no decoder layer is left to prune"),
])
def test_bad_input_for_the_model(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        prune_model(_model(), PruneConfig(progress=False, **kwargs))


def test_bad_input_for_checkpoints(ckpt_factory, tmp_path):
    src = ckpt_factory("tiny-128")
    with pytest.raises(ConfigError, match="--method taylor needs calibration data"):
        prune_checkpoint(src, tmp_path / "a", PruneConfig(ratio=0.5))
    with pytest.raises(MissingFileError, match="nope.hdf5"):
        prune_checkpoint(src, tmp_path / "b", PruneConfig(ratio=0.5, data=str(tmp_path / "nope.hdf5"), progress=False))
    with pytest.raises(ConfigError, match="is the source checkpoint"):
        prune_checkpoint(src, src, PruneConfig(ratio=0.5, method="magnitude"))
