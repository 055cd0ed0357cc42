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
from export.train.data import Collator, load_demos
from export.train.loop import lr_factor
from export.train.sft import ActionLoss, TrainConfig, target_head_rows, train
from rlrc_runtime.errors import CheckpointError, ConfigError
from rlrc_runtime.transforms import Transforms


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from sim.data import DemoConfig, write_demos

    out = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    write_demos(DemoConfig(episodes=4, families=("pick", "push"), image_size=64, seed=0), out, progress=False)
    return out



def _data(demos: Path, transforms: Transforms):
    """The demos and a Collator for the tiny-128 model (pad 32000, EOS 2)."""
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    ds = load_demos([str(demos)], transforms, None)
    return config, ds, Collator(ds.images, transforms, config.num_patches, pad_id=32000, eos_id=2)


def _batch(ds, collate, idx):
    return collate([ds.sample(int(i)) for i in idx])


def _cfg(demos: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(demos), out=str(out), preset="tiny-128", steps=4, batch_size=4, warmup_steps=1,
                save_every=2, log_every=1, progress=False, seed=0, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_batch_labels_are_the_action_tokens_and_eos(demos, transforms):
    config, ds, collate = _data(demos, transforms)
    assert ds.images.shape[1:] == (128, 128, 3) and ds.tokens.shape[1] == 7
    assert ds.tokens.min() >= 31744 and ds.tokens.max() <= 31999
    idx = np.array([0, 5, 11])
    batch = _batch(ds, collate, idx)
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
    assert np.array_equal(batch.pixel_values[1].numpy(), transforms.image(ds.images[5])[0])
    # Shifted frames are the same pixels moved (edges replicated), then normalised the same way.
    shifted = Collator(ds.images, transforms, config.num_patches, 32000, 2, shift=3)(
        [ds.sample(5)], torch.Generator().manual_seed(0))
    padded = np.pad(ds.images[5], ((3, 3), (3, 3), (0, 0)), mode="edge")
    gen = torch.Generator().manual_seed(0)
    dx, dy = int(torch.randint(0, 7, (1,), generator=gen)), int(torch.randint(0, 7, (1,), generator=gen))
    want = transforms.image(np.ascontiguousarray(padded[dy : dy + 128, dx : dx + 128]))[0]
    assert np.array_equal(shifted.pixel_values[0].numpy(), want)


def test_training_steps_lower_the_loss(demos, transforms):
    torch.manual_seed(0)
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=0)
    _, ds, collate = _data(demos, transforms)
    batch = _batch(ds, collate, np.arange(8))
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


def test_soft_action_labels(demos, transforms):
    """HL-Gauss targets: one-hot CE in the sharp limit, finite gradients although EOS rows are in the batch."""
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=0)
    _, ds, collate = _data(demos, transforms)
    batch = _batch(ds, collate, np.arange(4))
    span = (31744, 32000)
    hard, _ = ActionLoss(model)(batch)
    sharp, _ = ActionLoss(model, span, label_sigma=1e-3)(batch)
    torch.testing.assert_close(sharp, hard, rtol=1e-5, atol=1e-5)
    soft, _ = ActionLoss(model, span, label_sigma=2.0)(batch)
    soft.backward()
    assert torch.isfinite(soft) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    with pytest.raises(ConfigError, match="label-sigma"):
        _cfg(demos, Path("/tmp/x"), label_sigma=-1.0)


def test_target_head_rows_give_the_full_vocabulary_softmax_exactly(demos, transforms):
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
    _, ds, collate = _data(demos, transforms)
    batch = _batch(ds, collate, np.arange(6))
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
    def f(step: int) -> float:
        return lr_factor(step, total=100, warmup=10, min_ratio=0.1)

    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.1)


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
    with pytest.raises(ConfigError, match="--lr: saved 0.001, now 0.002"):
        train(_cfg(demos, tmp_path / "c", lr=2e-3))
    # Options that do not change the job may differ on resume.
    assert train(_cfg(demos, tmp_path / "c", stop_after=1, log_every=2, threads=1)) is None


class _RunsCode:
    """Unpickling this calls os.system: what a crafted trainer state would do."""

    marker = Path("/nonexistent")

    def __reduce__(self):
        return (os.system, ("touch " + str(_RunsCode.marker),))


def test_resume_never_runs_pickled_code(demos, tmp_path):
    """A state file is read with weights_only: a crafted one is refused with the fix, and its code never runs."""
    out = tmp_path / "run"
    train(_cfg(demos, out, stop_after=1))
    _RunsCode.marker = tmp_path / "pwned"
    torch.save({"model": _RunsCode(), "step": 1}, out / "state" / "trainer_state.pt")
    with pytest.raises(CheckpointError, match=r"trainer_state.pt: cannot read the saved training state.*Delete"):
        train(_cfg(demos, out))
    assert not _RunsCode.marker.exists()


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
    with pytest.raises(ConfigError, match="--save-every=0"):
        TrainConfig(data="x", out="y", save_every=0)


@pytest.mark.slow
def test_torchrun_two_processes(demos, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "export.train.sft", "--data", str(demos), "--out", str(tmp_path / "ddp"), "--preset", "tiny-128",
           "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--save-every", "2", "--no-progress",
           "--threads", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "final" / "config.json").is_file()


def test_freeze_unused_is_exactly_what_gets_no_gradient(demos, transforms):
    """DDP needs a gradient on every trained parameter: the frozen set is the never-run modules, nothing more."""
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=0)
    _, ds, collate = _data(demos, transforms)
    ActionLoss(model)(_batch(ds, collate, np.arange(2)))[0].backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad and any("attn_pool" in n for n in no_grad) and any(".norm." in n for n in no_grad)
    model.zero_grad(set_to_none=True)
    frozen = model.freeze_unused()
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == no_grad
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if n in no_grad)


def test_distillation_term_is_the_kl_to_the_teacher(demos, transforms, ckpt_factory):
    config, ds, collate = _data(demos, transforms)
    student = OpenVLA(config)
    init_weights(student, seed=1)
    same, other = OpenVLA(config), OpenVLA(config)
    same.load_state_dict(student.state_dict())
    init_weights(other, seed=2)
    action_ids = (transforms.action.first_action_token, transforms.action.vocab_size)
    batch = _batch(ds, collate, range(4))
    _, stats_same = ActionLoss(student, action_ids, teacher=same.eval())(batch)
    loss_other, stats_other = ActionLoss(student, action_ids, teacher=other.eval(), distill_weight=2.0)(batch)
    loss_plain, _ = ActionLoss(student, action_ids)(batch)
    assert float(stats_same["losses/distill_kl"]) == pytest.approx(0.0, abs=1e-5)
    kl = float(stats_other["losses/distill_kl"])
    assert kl > 1e-3
    assert float(loss_other.detach()) == pytest.approx(float(loss_plain.detach()) + 2.0 * kl, rel=1e-5)
    loss_other.backward()
    assert all(p.grad is None for p in other.parameters())  # the teacher is frozen context, not trained


def test_training_with_a_teacher_lowers_the_kl(demos, tmp_path, ckpt_factory):
    teacher = str(ckpt_factory("tiny-128"))
    out = tmp_path / "kd"
    final = train(_cfg(demos, out, teacher=teacher, distill_weight=5.0, steps=12, save_every=12, batch_size=8))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kls = [r["losses/distill_kl"] for r in rows]
    assert final is not None and len(kls) == 12
    assert np.mean(kls[-3:]) < 0.7 * np.mean(kls[:3])


def test_a_teacher_with_other_decoding_is_refused(demos, tmp_path, ckpt_factory):
    with pytest.raises(ConfigError, match="--teacher .*the student has .*parallel of 4"):
        train(_cfg(demos, tmp_path / "kd", teacher=str(ckpt_factory("tiny-128")), action_chunk=4))
