"""PPO recovery (export.train.rl): the pure pieces by hand, then short runs in the real sim."""
from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.checkpoint import load_model
from export.model import OpenVLA, init_weights
from export.tiny import PRESETS, preset_config
from export.train.data import Collator, load_demos
from export.train.loop import Run
from export.train.rl import (STATE_FILE, VALUE_HEAD_FILE, ActionScores, EnvState, Learner, PolicyContext, PPOTargets,
                             PromptCache, RLConfig, Rollout, ValueHead, bc_loss, compute_gae, evaluate_actions,
                             load_value_head, make_envs, ppo_loss, ppo_update, prompt_hidden, restore_envs,
                             restricted_entropy, restricted_log_probs, sample_actions, train_rl, value_position)
from rlrc_runtime.action import ActionTokenizer, action_stats
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.transforms import Transforms

TOK = ActionTokenizer()
ACTION_IDS = torch.from_numpy(TOK.action_token_ids)
PAD = 32000


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CI boxes have 2 cores; a single thread keeps runs deterministic and polite
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> OpenVLA:
    m = OpenVLA(preset_config(PRESETS["tiny-128"]))
    init_weights(m, seed=0)
    return m.eval()



@pytest.fixture(scope="module")
def tokenizer(transforms):
    return transforms.prompt


def _ctx(model: OpenVLA, head: ValueHead, transforms: Transforms, temperature: float = 1.0) -> PolicyContext:
    return PolicyContext(model, head, transforms, PromptCache(transforms.prompt),
                         action_stats(model.config.norm_stats, None), temperature, nullcontext)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from sim.data import DemoConfig, write_demos

    out = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    write_demos(DemoConfig(episodes=2, families=("pick",), image_size=64, seed=0), out, progress=False)
    return out


def _pixels(model: OpenVLA, b: int, seed: int = 0) -> torch.Tensor:
    s = model.config.image_size
    return torch.randn(b, 6, s, s, generator=torch.Generator().manual_seed(seed))


def _random_tokens(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(TOK.first_action_token, TOK.vocab_size, (b, 7), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- pure helpers


def test_log_prob_is_restricted_to_action_tokens_and_summed():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 32064, generator=gen) * 3
    tokens = _random_tokens(3)
    lp = restricted_log_probs(logits, tokens, ACTION_IDS)
    assert lp.shape == (3,)
    # A manual log_softmax over the 256-token slice, summed over the 7 tokens.
    manual = torch.log_softmax(logits[..., 31744:32000], -1).gather(-1, (tokens - 31744)[..., None]).squeeze(-1)
    torch.testing.assert_close(lp, manual.sum(-1))
    # Masking every other logit to -inf and taking the full softmax is the same distribution.
    masked = torch.full_like(logits, float("-inf"))
    masked[..., 31744:32000] = logits[..., 31744:32000]
    full = torch.log_softmax(masked, -1).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(lp, full)
    # Non-action logits cannot change it, however large.
    other = logits.clone()
    other[..., :31744] += 1e4 * torch.rand(3, 7, 31744, generator=gen)
    other[..., 32000:] = 1e6
    assert torch.equal(restricted_log_probs(other, tokens, ACTION_IDS), lp)
    # The sum runs over the 7 tokens: token-wise calls add up to it.
    per_token = sum(restricted_log_probs(logits[:, k : k + 1], tokens[:, k : k + 1], ACTION_IDS) for k in range(7))
    torch.testing.assert_close(per_token, lp)
    # Entropy: of the restricted softmax, summed likewise.
    p = torch.softmax(logits[..., 31744:32000], -1)
    torch.testing.assert_close(restricted_entropy(logits, ACTION_IDS), -(p * p.log()).sum(-1).sum(-1))
    with pytest.raises(ValueError, match="not action tokens"):
        restricted_log_probs(logits, torch.full((3, 7), 2), ACTION_IDS)


def test_gae_by_hand_with_a_termination_and_a_truncation():
    # env 0 succeeds (terminates) at t=2 and starts a new episode at t=3;
    # env 1 hits its time limit at t=1, whose final observation is worth 0.5.
    rewards = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    values = torch.tensor([[0.1, 0.5], [0.2, 0.6], [0.3, 0.7], [0.4, 0.8]])
    dones = torch.tensor([[0, 0], [0, 0], [1, 0], [0, 0]], dtype=torch.bool)
    truncs = torch.tensor([[0, 0], [0, 1], [0, 0], [0, 0]], dtype=torch.bool)
    final_values = torch.zeros(4, 2)
    final_values[1, 1] = 0.5
    last = torch.tensor([1.0, 2.0])
    adv, ret = compute_gae(rewards, values, dones, truncs, last, gamma=0.9, lam=0.8, final_values=final_values)
    gl = 0.9 * 0.8
    a0 = [0.0] * 4
    a0[3] = 0.9 * 1.0 - 0.4  # bootstrap from last_value
    a0[2] = 1.0 - 0.3  # terminal: no bootstrap, no continuation
    a0[1] = (0.9 * 0.3 - 0.2) + gl * a0[2]
    a0[0] = (0.9 * 0.2 - 0.1) + gl * a0[1]
    a1 = [0.0] * 4
    a1[3] = 0.9 * 2.0 - 0.8
    a1[2] = (0.9 * 0.8 - 0.7) + gl * a1[3]
    a1[1] = 0.9 * 0.5 - 0.6  # truncated: bootstrap from V(final obs), recursion cut
    a1[0] = (0.9 * 0.6 - 0.5) + gl * a1[1]
    expected = torch.tensor([a0, a1]).T
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)
    with pytest.raises(ValueError, match="final_values"):
        compute_gae(rewards, values, dones, truncs, last, 0.9, 0.8)


def test_ppo_loss_by_hand():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([1.5, 0.5, 1.0]))
    adv = torch.tensor([1.0, 1.0, -1.0])
    # Surrogate per sample: max(-A r, -A clip(r, 0.8, 1.2)) = -1.2, -0.5, 1.0
    v_new, v_old, ret = torch.tensor([0.0, 2.0, 0.9]), torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    # Huber(1): unclipped 0.5, 1.5, 0.005; clipped values 0.3, 0.7, 0.7 -> 0.245, 0.245, 0.045; max -> 0.5, 1.5, 0.045
    ent = torch.tensor([2.0, 3.0, 4.0])
    cfg = RLConfig(init="x", out="y", clip_coef=0.2, value_clip=0.2, huber_delta=1.0, vf_coef=0.5, ent_coef=0.01)
    loss, stats = ppo_loss(ActionScores(new, ent, v_new), PPOTargets(old, v_old, ret, adv), cfg)
    pg, vl = (-1.2 - 0.5 + 1.0) / 3, (0.5 + 1.5 + 0.045) / 3
    torch.testing.assert_close(stats["losses/policy_loss"], torch.tensor(pg))
    torch.testing.assert_close(stats["losses/value_loss"], torch.tensor(vl))
    torch.testing.assert_close(loss, torch.tensor(pg - 0.01 * 3.0 + 0.5 * vl))
    assert stats["losses/clipfrac"].item() == pytest.approx(2 / 3)
    _, no_clip = ppo_loss(ActionScores(new, ent, v_new), PPOTargets(old, v_old, ret, adv),
                          RLConfig(init="x", out="y", value_clip=0.0))
    torch.testing.assert_close(no_clip["losses/value_loss"], torch.tensor((0.5 + 1.5 + 0.005) / 3))


# --------------------------------------------------------------------------- the policy on a tiny model


def test_value_head_reads_the_last_prompt_position(model, tokenizer, transforms):
    head = ValueHead(model.config.llm.hidden_size, seed=1)
    ctx = _ctx(model, head, transforms)
    pv, prompt, tokens = _pixels(model, 1), tokenizer("pick up the red block"), _random_tokens(1)
    p, t = model.config.num_patches, len(prompt)
    assert value_position(p, t) == p + t - 1
    with torch.no_grad():
        v = evaluate_actions(ctx, pv, [prompt], tokens).value
        hidden = model.hidden_states(pv, torch.from_numpy(prompt)[None])  # [1, P + T, H]
        torch.testing.assert_close(prompt_hidden(ctx, pv, [prompt]), hidden[:, p + t - 1])
        torch.testing.assert_close(v, head(hidden[:, p + t - 1]))
        # Tokens after that position cannot change the value...
        v_other = evaluate_actions(ctx, pv, [prompt], _random_tokens(1, seed=5)).value
        assert torch.equal(v, v_other)
        # ...the prompt does (its second-to-last token swapped).
        changed = prompt.copy()
        changed[-2] = 450
        v_prompt = evaluate_actions(ctx, pv, [changed], tokens).value
        assert not torch.allclose(v, v_prompt)


def test_sampling_with_the_kv_cache_matches_teacher_forced_scoring(model, tokenizer, transforms):
    head = ValueHead(model.config.llm.hidden_size, seed=1)
    # Two prompt lengths: rows are grouped by length for the cached batch.
    prompts = [tokenizer("pick up the red block"), tokenizer("push the small blue cube to the left of the plate"),
               tokenizer("pick up the green block")]
    assert len(prompts[0]) != len(prompts[1])
    pv = _pixels(model, 3)
    for temperature in (1.0, 0.5):
        ctx = _ctx(model, head, transforms, temperature)
        tokens, logp, value = sample_actions(ctx, pv, prompts, torch.Generator().manual_seed(3))
        assert tokens.shape == (3, 7) and bool(((tokens >= 31744) & (tokens < 32000)).all())
        again = sample_actions(ctx, pv, prompts, torch.Generator().manual_seed(3))
        assert torch.equal(tokens, again[0])
        with torch.no_grad():
            lp, ent, v = evaluate_actions(ctx, pv, prompts, tokens)
        torch.testing.assert_close(lp, logp, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(v, value, atol=1e-5, rtol=1e-5)
        assert bool((ent > 0).all()) and bool((ent <= 7 * np.log(256) + 1e-3).all())


def test_bc_loss_is_the_sft_cross_entropy_on_demo_tokens(model, transforms, demos):
    ds = load_demos([str(demos)], transforms, "tiny_demo", model.config.norm_stats)
    batch = Collator(ds.images, transforms, model.config.num_patches, PAD, 2)([ds.sample(i) for i in (0, 3, 7)])
    with torch.no_grad():
        loss, stats = bc_loss(model, batch)
        logits = model(batch.pixel_values, batch.input_ids)  # [B, P + T, V] full vocabulary
        manual = F.cross_entropy(logits[batch.label_rows, batch.label_pos], batch.labels)
    torch.testing.assert_close(loss, manual)
    assert batch.labels[batch.is_action].min() >= 31744 and "charts/bc_action_accuracy" in stats


def test_config_errors_name_the_flag(demos):
    with pytest.raises(ConfigError, match="--num-envs=0"):
        RLConfig(init="x", out="y", num_envs=0)
    with pytest.raises(ConfigError, match="--bc-coef=0.1 needs demonstrations"):
        RLConfig(init="x", out="y", bc_coef=0.1)
    with pytest.raises(ConfigError, match="Did you mean 'pick'"):
        RLConfig(init="x", out="y", families="pikc,push")
    with pytest.raises(ConfigError, match="--critic-warmup=9"):
        RLConfig(init="x", out="y", updates=5, critic_warmup=9)
    with pytest.raises(ConfigError, match="--temperature=0"):
        RLConfig(init="x", out="y", temperature=0)


def test_cli_subcommand(capsys):
    from export.cli import main

    with pytest.raises(SystemExit):
        main(["recover-rl", "--help"])
    text = capsys.readouterr().out
    assert "--critic-warmup" in text and "--bc-coef" in text and "--temperature" in text
    assert main(["recover-rl", "--init", "x", "--out", "y", "--rollout-steps", "0"]) == 2
    assert "--rollout-steps=0" in capsys.readouterr().err


def _fake_rollout(ctx: PolicyContext) -> Rollout:
    """A 2-step x 2-env rollout without a simulator: random frames, sampled actions, one success."""
    gen = torch.Generator().manual_seed(0)
    s = ctx.model.config.image_size
    prompts = [ctx.transforms.prompt("pick up the red block"), ctx.transforms.prompt("push the blue cube to the left")]
    images = torch.randint(0, 256, (2, 2, s, s, 3), dtype=torch.uint8, generator=gen)
    tokens, logp, values = sample_actions(ctx, ctx.pixel_values(images.flatten(0, 1)), prompts * 2, gen)
    rewards = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    return Rollout(images=images, prompt_index=torch.tensor([[0, 1], [0, 1]]), prompts=prompts,
                   tokens=tokens.view(2, 2, 7), logprobs=logp.view(2, 2), values=values.view(2, 2), rewards=rewards,
                   dones=rewards > 0, truncations=torch.zeros(2, 2, dtype=torch.bool), final_values=torch.zeros(2, 2),
                   last_value=torch.zeros(2))


def _update_once(transforms, out: Path, micro: int, warmup: int) -> tuple[OpenVLA, ValueHead, dict]:
    m = OpenVLA(preset_config(PRESETS["tiny-128"]))
    init_weights(m, seed=0)
    head = ValueHead(m.config.llm.hidden_size, seed=1)
    ctx = _ctx(m.eval(), head, transforms)
    ro = _fake_rollout(ctx)
    params = [*m.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)  # SGD: the step is proportional to the gradient, easy to compare
    cfg = RLConfig(init="x", out=str(out), num_envs=2, rollout_steps=2, update_epochs=1, num_minibatches=1,
                   micro_batch_size=micro, critic_warmup=warmup, updates=2, ent_coef=0.01)
    row = ppo_update(ctx, Learner(Run(cfg, STATE_FILE), opt, params, None, None), ro, cfg, update=0)
    return m, head, row


def test_ppo_update_micro_batches_and_critic_warmup(transforms, tmp_path):
    whole, head_whole, row = _update_once(transforms, tmp_path, micro=0, warmup=0)
    split, head_split, _ = _update_once(transforms, tmp_path, micro=1, warmup=0)
    for (name, x), y in zip(whole.state_dict().items(), split.state_dict().values()):
        torch.testing.assert_close(x, y, atol=2e-6, rtol=1e-5, msg=name)
    torch.testing.assert_close(head_whole.fc2.weight, head_split.fc2.weight, atol=2e-6, rtol=1e-5)
    assert row["losses/approx_kl"] == pytest.approx(0.0, abs=1e-5) and row["charts/critic_warmup"] == 0.0
    fresh = OpenVLA(preset_config(PRESETS["tiny-128"]))
    init_weights(fresh, seed=0)
    assert not torch.equal(whole.language_model.lm_head.weight, fresh.language_model.lm_head.weight)
    # Warm-up: only the value head moves.
    warm, head_warm, row = _update_once(transforms, tmp_path, micro=0, warmup=1)
    assert all(torch.equal(x, y) for x, y in zip(warm.state_dict().values(), fresh.state_dict().values()))
    assert not torch.equal(head_warm.fc1.weight, ValueHead(64, seed=1).fc1.weight)
    assert row["charts/critic_warmup"] == 1.0 and "losses/policy_loss" not in row


# --------------------------------------------------------------------------- in the simulator


def test_env_replay_rebuilds_unfinished_episodes():
    """Episodes of different lengths are replayed from their seeds to the same frames."""
    from sim import make_env

    cfg = RLConfig(init="x", out="y", families="pick,push", num_envs=2, image_size=64)
    rng = np.random.default_rng(0)
    histories = [[np.r_[rng.uniform(-0.02, 0.02, 6), 1.0].astype(np.float32) for _ in range(n)] for n in (3, 1)]
    state = EnvState(seeds=[11, 22], episode_counts=[0, 0], histories=histories, returns=[0.0, 0.0])
    envs = make_envs(cfg, rank=0)
    try:
        obs = restore_envs(envs, state, rank=0).obs
    finally:
        envs.close()
    for i, family in enumerate(("pick", "push")):
        env = make_env(family=family, image_size=64)
        ref, _ = env.reset(seed=state.seeds[i])
        for a in histories[i]:
            ref, *_ = env.step(a)
        env.close()
        assert np.array_equal(obs["image"][i], ref["image"]), family
        assert obs["instruction"][i] == ref["instruction"]


def _rl_cfg(init: Path, out: Path, demos: Path, **kw) -> RLConfig:
    base = dict(init=str(init), out=str(out), families="pick,push", num_envs=2, rollout_steps=4, updates=3,
                max_episode_steps=6, critic_warmup=1, update_epochs=1, num_minibatches=2, bc_coef=0.1,
                bc_data=str(demos), bc_batch_size=2, ent_coef=0.01, lr=1e-3, value_lr=1e-2, save_every=1,
                keep_checkpoints=3, progress=False, threads=1, device="cpu", seed=0)
    base.update(kw)
    return RLConfig(**base)


def test_ppo_runs_in_the_sim_writes_checkpoints_and_resumes_exactly(ckpt_factory, demos, tmp_path, caplog):
    init = ckpt_factory("tiny-128")
    final = train_rl(_rl_cfg(init, tmp_path / "a", demos))
    ref, ref_info = load_model(init)
    warm, _ = load_model(tmp_path / "a" / "checkpoints" / "update_0000001")
    # Critic warm-up: the backbone is bit-identical, the value head moved.
    for (name, x), y in zip(ref.state_dict().items(), warm.state_dict().values()):
        assert torch.equal(x, y), name
    fresh = ValueHead(ref_info.config.llm.hidden_size, seed=0)
    warm_head = load_value_head(tmp_path / "a" / "checkpoints" / "update_0000001", ref_info.config.llm.hidden_size)
    assert not torch.equal(fresh.fc2.weight, warm_head.fc2.weight)
    # After it, PPO + BC train the policy.
    out, out_info = load_model(final)
    assert not torch.equal(out.language_model.model.layers[0].mlp.up_proj.weight,
                           ref.language_model.model.layers[0].mlp.up_proj.weight)
    assert out_info.config.norm_stats == ref_info.config.norm_stats and (final / VALUE_HEAD_FILE).is_file()
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2, 3] and rows[-1]["global_step"] == 3 * 4 * 2
    assert rows[0]["charts/critic_warmup"] == 1.0 and "losses/policy_loss" not in rows[0]
    assert rows[0]["charts/kl_to_init"] == pytest.approx(0.0, abs=1e-4)  # the policy has not moved yet
    for key in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
                "losses/explained_variance", "losses/bc_loss", "charts/kl_to_init", "charts/SPS", "charts/rollout_SPS"):
        assert key in rows[1], key
    # Episodes of 6 steps truncate in update 2 (steps 5-8) and again at the end of update 3.
    assert rows[1]["charts/episodes"] == 2 and rows[1]["charts/episodic_length"] == 6
    assert rows[1]["charts/success_rate"] == 0.0
    print(f"tiny-128 rollout: {np.mean([r['charts/rollout_SPS'] for r in rows]):.1f} env steps/s (2 envs, 1 thread)")
    # The checkpoint is a plain OpenVLA checkpoint: the runtime loads and runs it.
    import rlrc_runtime as r

    with r.load_policy(final) as policy:
        assert policy.predict_action(np.zeros((128, 128, 3), np.uint8), "pick up the red block").shape == (7,)

    # Stopped after update 2 (mid-episode), resumed: the same weights, bit for bit.
    assert train_rl(_rl_cfg(init, tmp_path / "b", demos, stop_after=2)) is None
    with caplog.at_level("INFO", logger="export.train.rl"):
        resumed = train_rl(_rl_cfg(init, tmp_path / "b", demos))
    assert "resumed from" in caplog.text and "replay did not reproduce" not in caplog.text
    b, _ = load_model(resumed)
    for (name, x), y in zip(out.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    head_a = load_value_head(final, ref_info.config.llm.hidden_size)
    head_b = load_value_head(resumed, ref_info.config.llm.hidden_size)
    assert all(torch.equal(x, y) for x, y in zip(head_a.state_dict().values(), head_b.state_dict().values()))
    rows_b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows_b] == [1, 2, 3]
    assert rows_b[2]["losses/value_loss"] == rows[2]["losses/value_loss"]
    with pytest.raises(ConfigError, match="--clip-coef: saved 0.2, now 0.3"):
        train_rl(_rl_cfg(init, tmp_path / "b", demos, clip_coef=0.3))


@pytest.mark.slow
def test_torchrun_two_processes(ckpt_factory, demos, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "export.train.rl", "--init", str(ckpt_factory("tiny-128")), "--out", str(tmp_path / "ddp"),
           "--families", "pick", "--num-envs", "1", "--rollout-steps", "3", "--updates", "2", "--critic-warmup", "1",
           "--num-minibatches", "1", "--bc-coef", "0.1", "--bc-data", str(demos), "--no-progress", "--threads", "1",
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "final" / VALUE_HEAD_FILE).is_file()
    env_states = sorted(p.name for p in (tmp_path / "ddp" / "state").glob("envs_rank*.pt"))
    assert env_states == ["envs_rank0.pt", "envs_rank1.pt"]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["global_step"] == 2 * 3 * 1 * 2


# --------------------------------------------------------------------------- action-chunk policies


def _chunked(model: OpenVLA, k: int) -> OpenVLA:
    chunked = OpenVLA(model.config.replace(action_chunk=k, decoding="parallel"))
    chunked.load_state_dict(model.state_dict())
    return chunked.eval()


def test_chunk_sampling_matches_scoring(model, transforms):
    """A parallel-decoding policy samples K x 7 tokens in one pass; scoring them gives the same log-prob and value."""
    chunked = _chunked(model, 3)
    ctx = _ctx(chunked, ValueHead(model.config.llm.hidden_size, seed=1), transforms)
    assert ctx.parallel and ctx.n_tokens == 21
    prompts = [transforms.prompt("pick up the red block"), transforms.prompt("push the blue cube to the left")]
    pv = _pixels(chunked, 2)
    tokens, logp, value = sample_actions(ctx, pv, prompts, torch.Generator().manual_seed(0))
    assert tokens.shape == (2, 21) and bool(((tokens >= 31744) & (tokens < 32000)).all())
    with torch.no_grad():
        scores = evaluate_actions(ctx, pv, prompts, tokens)
    torch.testing.assert_close(scores.logp, logp, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores.value, value, atol=1e-5, rtol=1e-5)
    # The value reads the last prompt position, which the causal prompt part computes without the slots.
    with torch.no_grad():
        plain = prompt_hidden(_ctx(model, ctx.value_head, transforms), pv[:1], prompts[:1])
        torch.testing.assert_close(value[:1], ctx.value_head(plain), atol=1e-5, rtol=1e-5)


def test_ppo_on_a_chunk_policy_runs_in_the_sim(ckpt_factory, demos, tmp_path):
    import shutil

    src = ckpt_factory("tiny-128")
    init = tmp_path / "chunked"
    shutil.copytree(src, init)
    config = json.loads((init / "config.json").read_text())
    config.update(rlrc_action_chunk=2, rlrc_decoding="parallel")
    (init / "config.json").write_text(json.dumps(config))
    final = train_rl(_rl_cfg(init, tmp_path / "run", demos, updates=2, critic_warmup=1, rollout_steps=3))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "losses/policy_loss" in rows[1] and "losses/bc_loss" in rows[1]
    # Each decision ran a 2-action chunk: the 6-step episodes end after 3 decisions.
    assert rows[1]["charts/episodes"] >= 1 and rows[1]["charts/episodic_length"] == 6
    out, info = load_model(final)
    assert info.config.action_chunk == 2 and info.config.decoding == "parallel"
