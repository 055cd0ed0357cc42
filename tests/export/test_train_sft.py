import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export.checkpoint import load_model
from export.model import OpenVLA, init_weights
from export.tiny import PRESETS, preset_config
from export.tokenizer_gen import write_tokenizer
from export.train import (ActionDataset, ActionLoss, TrainConfig, load_dataset, lr_factor, make_batch,
                          target_head_rows, train)
from rlrc_runtime.action import ActionTokenizer
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from sim.data import DemoConfig, write_demos

    out = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    write_demos(DemoConfig(episodes=4, families=("pick", "push"), image_size=64, seed=0), out, progress=False)
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> PromptTokenizer:
    d = tmp_path_factory.mktemp("tok")
    write_tokenizer(d)
    return PromptTokenizer.from_dir(d)


def _cfg(demos: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(demos), out=str(out), preset="tiny-128", steps=4, batch_size=4, warmup_steps=1,
                save_every=2, log_every=1, progress=False, seed=0, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_batch_labels_are_the_action_tokens_and_eos(demos, tokenizer):
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tokenizer, ActionTokenizer(), None)
    assert ds.images.shape[1:] == (128, 128, 3) and ds.tokens.shape[1] == 7
    assert ds.tokens.min() >= 31744 and ds.tokens.max() <= 31999
    idx = np.array([0, 5, 11])
    batch = make_batch(ds, idx, transform, config.num_patches, pad_id=32000, eos_id=2)
    p = config.num_patches
    assert batch.labels.shape == (3 * 8,)
    # The output at multimodal position P + j - 1 predicts text token j.
    text_pos = batch.label_pos - p + 1
    assert torch.equal(batch.input_ids[batch.label_rows, text_pos], batch.labels)
    for row, i in enumerate(idx):
        mine = batch.labels[batch.label_rows == row]
        assert mine[:7].tolist() == ds.tokens[i].tolist() and mine[7].item() == 2
        prompt = ds.prompts[ds.instruction_index[i]]
        assert batch.input_ids[row, : len(prompt)].tolist() == prompt.tolist() and prompt[-1] == 29871
    # Pixels are normalised exactly as the runtime does it.
    np.testing.assert_allclose(batch.pixel_values[1].numpy(), transform(ds.images[5])[0], atol=1e-6)


def test_training_steps_lower_the_loss(demos, tokenizer):
    torch.manual_seed(0)
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=0)
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tokenizer, ActionTokenizer(), None)
    batch = make_batch(ds, np.arange(8), transform, config.num_patches, 32000, 2)
    loss_fn = ActionLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first, _ = loss_fn(batch)
    for _ in range(15):
        opt.zero_grad()
        loss, _ = loss_fn(batch)
        loss.backward()
        opt.step()
    last, stats = loss_fn(batch)
    assert last.item() < 0.75 * first.item(), (first.item(), last.item())
    assert 0 <= stats["metrics/action_accuracy"].item() <= 1


def test_soft_action_labels(demos, tokenizer):
    """HL-Gauss targets: one-hot CE in the sharp limit, finite gradients although EOS rows are in the batch."""
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=0)
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tokenizer, ActionTokenizer(), None)
    batch = make_batch(ds, np.arange(4), transform, config.num_patches, 32000, 2)
    span = (31744, 32000)
    hard, _ = ActionLoss(model)(batch)
    sharp, _ = ActionLoss(model, span, label_sigma=1e-3)(batch)
    torch.testing.assert_close(sharp, hard, rtol=1e-5, atol=1e-5)
    soft, _ = ActionLoss(model, span, label_sigma=2.0)(batch)
    soft.backward()
    assert torch.isfinite(soft) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    with pytest.raises(ConfigError, match="label-sigma"):
        _cfg(demos, Path("/tmp/x"), label_sigma=-1.0)


def test_target_head_rows_give_the_full_vocabulary_softmax_exactly(demos, tokenizer):
    """--head-rows targets: with every other row zero, loss, target-row gradients and the greedy token are the
    full head's; the zero rows get no gradient, so they stay zero."""
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=0)
    span = (31744, 32000)
    rows = target_head_rows(model, span, 2, None)
    weight = model.language_model.lm_head.weight
    others = torch.ones(len(weight), dtype=torch.bool)
    others[rows] = False
    assert rows.tolist() == list(range(*span)) + [2]
    assert not weight[others].any() and weight[rows].abs().sum(-1).gt(0).all()
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tokenizer, ActionTokenizer(), None)
    batch = make_batch(ds, np.arange(6), transform, config.num_patches, 32000, 2)
    for sigma in (0.0, 2.0):
        full, full_stats = ActionLoss(model, span, sigma)(batch)
        full.backward()
        full_grad, weight.grad = weight.grad.clone(), None
        part, part_stats = ActionLoss(model, span, sigma, head_rows=rows)(batch)
        part.backward()
        torch.testing.assert_close(part, full)
        torch.testing.assert_close(weight.grad[rows], full_grad[rows])
        assert full_grad[others].any() and not weight.grad[others].any()
        for key, value in full_stats.items():
            torch.testing.assert_close(part_stats[key], value)
        model.zero_grad(set_to_none=True)

    # The greedy token is the whole vocabulary's argmax, also when every target logit is below the zero rows'.
    with torch.no_grad():
        weight[rows] = weight[rows].abs()
    loss_fn = ActionLoss(model, span, 2.0, head_rows=rows)
    h = torch.rand(4, config.llm.hidden_size) + 0.1
    for sign in (1.0, -1.0):
        _, pred, _ = loss_fn.log_probs(sign * h)
        assert torch.equal(pred, model.language_model.lm_head(sign * h).argmax(-1))
    assert set(loss_fn.log_probs(-h)[1].tolist()) == {0}  # all target logits < 0: the first zero row wins


def test_target_head_training_keeps_the_other_rows_zero(demos, tmp_path):
    final = train(_cfg(demos, tmp_path / "t", head_rows="targets"))
    model, _ = load_model(final)
    weight = model.language_model.lm_head.weight
    assert weight[:31744].abs().sum(-1).gt(0).sum() == 1  # EOS (id 2) alone below the action rows
    assert not weight[32000:].any() and weight[31744:32000].abs().sum(-1).gt(0).all()
    assert train(_cfg(demos, tmp_path / "ft", init=str(final), head_rows="targets", steps=2)) is not None
    # A model whose other rows carry weights cannot use the shortcut: the error names both ways out.
    plain = train(_cfg(demos, tmp_path / "plain", steps=1, warmup_steps=0))
    with pytest.raises(ConfigError, match=r"non-zero lm_head rows.*--head-rows all.*from scratch"):
        train(_cfg(demos, tmp_path / "bad", init=str(plain), head_rows="targets", steps=2))


def test_lr_schedule():
    cfg = TrainConfig(data="x", out="y", steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, cfg) == pytest.approx(0.1)


def test_resume_continues_exactly(demos, tmp_path):
    straight = train(_cfg(demos, tmp_path / "a"))
    assert train(_cfg(demos, tmp_path / "b", stop_after=2)) is None  # "interrupted" after step 2
    resumed = train(_cfg(demos, tmp_path / "b"))
    a, _ = load_model(straight)
    b, _ = load_model(resumed)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"losses/action_ce", "charts/lr", "charts/samples_per_s", "metrics/action_accuracy"} <= set(rows[0])
    # The final checkpoint carries the dataset's norm_stats and runs through the Policy API.
    import rlrc_runtime as r

    with r.load_policy(resumed) as p:
        assert p.predict_action(np.zeros((64, 64, 3), np.uint8), "pick up the red block").shape == (7,)
    assert sorted(p.norm_stats) == ["rlrc_sim_tabletop"]
    assert len(list((tmp_path / "b" / "checkpoints").iterdir())) == 2


def test_resume_with_other_settings_is_refused(demos, tmp_path):
    train(_cfg(demos, tmp_path / "c", stop_after=1))
    with pytest.raises(ConfigError, match="lr: saved 0.001, now 0.002"):
        train(_cfg(demos, tmp_path / "c", lr=2e-3))
    # A run saved before an option existed resumes when that option keeps its default.
    saved = tmp_path / "c" / "train_config.json"
    old = json.loads(saved.read_text())
    del old["ground_pair_weight"]
    saved.write_text(json.dumps(old))
    assert train(_cfg(demos, tmp_path / "c", stop_after=1)) is None
    with pytest.raises(ConfigError, match="ground_pair_weight: saved 1.0, now 2.0"):
        train(_cfg(demos, tmp_path / "c", ground_pair_weight=2.0))


def test_ema_leaves_training_unchanged_and_averages_the_weights(demos, tmp_path):
    plain = train(_cfg(demos, tmp_path / "plain", save_every=1, keep_checkpoints=4))
    averaged = train(_cfg(demos, tmp_path / "ema", ema=0.9))
    a, _ = load_model(plain)
    b, _ = load_model(averaged)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name  # final/ is bit-identical with or without --ema
    # final_ema/ is the average of the weights after each step, recomputed here from the periodic
    # checkpoints of the plain run (decay ramp min(0.9, (1 + n) / (10 + n)) after n updates).
    init = OpenVLA(a.config)
    init_weights(init, seed=0, sincos_pos=True)
    want = {k: v.clone() for k, v in init.state_dict().items()}
    for n in range(1, 5):
        step_model, _ = load_model(tmp_path / "plain" / "checkpoints" / f"step_{n:07d}") if n < 4 else (a, None)
        keep = min(0.9, (1 + n) / (10 + n))
        for k, v in step_model.state_dict().items():
            want[k] = keep * want[k] + (1 - keep) * v
    ema_model, info = load_model(tmp_path / "ema" / "final_ema")
    assert "rlrc_sim_tabletop" in info.config.norm_stats
    moved = 0
    for k, v in ema_model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=1e-5, atol=1e-6, msg=k)
        moved += int(not torch.equal(v, a.state_dict()[k]))
    assert moved > 0  # the average is not just the last weights


def test_ema_resumes_exactly(demos, tmp_path):
    train(_cfg(demos, tmp_path / "a", ema=0.9))
    assert train(_cfg(demos, tmp_path / "b", ema=0.9, stop_after=2)) is None
    train(_cfg(demos, tmp_path / "b", ema=0.9))
    a, _ = load_model(tmp_path / "a" / "final_ema")
    b, _ = load_model(tmp_path / "b" / "final_ema")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    with pytest.raises(ConfigError, match="--ema=1.0"):
        _cfg(demos, tmp_path / "c", ema=1.0)


def test_fine_tune_from_a_checkpoint(demos, tmp_path, ckpt_factory):
    final = train(_cfg(demos, tmp_path / "sft", init=str(ckpt_factory("tiny-128")), steps=2))
    model, info = load_model(final)
    assert info.config.llm == load_model(ckpt_factory("tiny-128"))[1].config.llm
    assert "rlrc_sim_tabletop" in info.config.norm_stats


def test_config_validation_names_the_flag():
    with pytest.raises(ConfigError, match="--warmup-steps=50"):
        TrainConfig(data="x", out="y", steps=10, warmup_steps=50)
    with pytest.raises(ConfigError, match="--batch-size=0"):
        TrainConfig(data="x", out="y", batch_size=0)


@pytest.mark.slow
def test_torchrun_two_processes(demos, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "export.train", "--data", str(demos), "--out", str(tmp_path / "ddp"), "--preset", "tiny-128",
           "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--save-every", "2", "--no-progress",
           "--threads", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "final" / "config.json").is_file()


def test_freeze_unused_is_exactly_what_gets_no_gradient(demos, tokenizer):
    """DDP needs a gradient on every trained parameter: the frozen set is the never-run modules, nothing more."""
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=0)
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tokenizer, ActionTokenizer(), None)
    ActionLoss(model)(make_batch(ds, np.arange(2), transform, config.num_patches, 32000, 2))[0].backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad and any("attn_pool" in n for n in no_grad) and any(".norm." in n for n in no_grad)
    model.zero_grad(set_to_none=True)
    frozen = model.freeze_unused()
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == no_grad
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if n in no_grad)
