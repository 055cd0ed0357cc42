"""``rlrc-export recover-rl``: PPO recovery of a (pruned, SFT-recovered) OpenVLA policy in the sim.

The second half of RLRC recovery (design.md §4), following RL4VLA (arXiv 2505.19789):

- **Policy** = the OpenVLA model itself. Per env step: one prefill over ``[BOS, patches, prompt]``
  with a KV cache, then ``action_dim`` (7) tokens sampled one by one at ``--temperature``, each
  among the 256 action tokens only (all other logits masked). An action's log-prob (and entropy)
  is the sum over its 7 tokens. Frames, prompts and tokens go through the policy's ``Transforms``
  (the runtime's), then ``sim.evaluate.to_env_action``.
- **Action chunks** (a parallel-decoding policy, ``rlrc_action_chunk`` K > 1): one pass gives all
  K x 7 tokens, each sampled from its own slot's restricted softmax; the chunk's log-prob is the sum
  over its tokens. A chunk is executed open loop for up to ``--chunk-steps`` env steps (default K),
  cut short when any env's episode ends; its reward is the sum over the steps it ran (one decision).
- **Critic** = a small MLP (``ValueHead``) on the last-layer hidden state at the last prompt
  position, the position whose output emits the first action token; the backbone is shared.
- **PPO**: GAE (gamma 0.99, lambda 0.95) over vector-env rollouts, bootstrapping from the value of
  the final observation when an episode is truncated by its time limit and not when it terminates
  on success; clipped surrogate (0.2), clipped Huber value loss, entropy bonus, grad-norm clip,
  epochs x minibatches (x micro-batches). Log-probs are recomputed with one teacher-forced
  forward over ``prompt + 7 action tokens``.
- **Critic warm-up**: the first ``--critic-warmup`` updates train only the value head (the backbone
  stays bit-identical). **BC loss**: ``--bc-coef`` x the SFT cross-entropy (``ActionLoss``) on
  demonstration batches from ``--bc-data``.

Outputs under ``--out`` (export/train/loop.py): ``train_config.json``, ``metrics.jsonl``
(``losses/value_loss``, ``charts/success_rate``, ``charts/SPS`` ...), ``state/`` (exact resume),
``checkpoints/update_NNNNNNN/`` and ``final/``: plain OpenVLA checkpoints plus
``value_head.safetensors``, which OpenVLA loaders ignore.

Exact resume: every random draw is keyed by (seed, update, rank), every episode starts from an
explicit seed, and the state records each env's episode seed and the actions taken since, so a
resumed run replays the unfinished episodes and continues bit-identically. Runs under
``torchrun`` too: each rank rolls out its own envs and gradients are all-reduced.
See docs/recovery.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from export.model import KVCache, OpenVLA
from export.train.data import Collator, DemoSteps, load_demos
from export.train.loop import Run, RunConfig, flag, lr_factor, outcome, param_groups
from export.train.sft import ActionLoss, demo_collator
from rlrc_runtime.action import ActionStats, action_stats, resolve_unnorm_key
from rlrc_runtime.cli_args import run_command
from rlrc_runtime.config import did_you_mean
from rlrc_runtime.errors import CheckpointError, ConfigError
from rlrc_runtime.prompt import PromptTokenizer
from rlrc_runtime.transforms import Transforms

log = logging.getLogger(__name__)

VALUE_HEAD_FILE = "value_head.safetensors"
STATE_FILE = "rl_state.pt"
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)  # no motion, gripper open: filler during env replay


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A config field with a default and its --help text."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True, kw_only=True)
class RLConfig(RunConfig):
    init: str = field(metadata={"help": "checkpoint to recover (normally the SFT output of rlrc-train --init)"})
    # -- environment
    families: str = _opt("pick,push,place,stack", "comma-separated task families; env i runs family i mod len")
    split: str = _opt("id", "task split the rollouts are drawn from")
    num_envs: int = _opt(8, "parallel envs per process")
    env_mode: str = _opt("sync", "gymnasium vector env: 'sync' (one process) or 'async' (a process per env)",
                         choices=["sync", "async"])
    image_size: int = _opt(128, "rendered frame side, pixels (resized to the model's input as the runtime does)")
    max_episode_steps: int = _opt(0, "episode time limit in env steps; 0 = each family's default")
    grasp_bonus: bool = _opt(False, "add the env's one-off grasp bonus to the sparse success reward")
    unnorm_key: str | None = _opt(None, "norm_stats key that unnormalises actions (needed with several datasets)")
    chunk_steps: int = _opt(0, "action-chunk policies: env steps each chunk is executed for (a decision); 0 = the "
                               "whole chunk")
    # -- rollout
    rollout_steps: int = _opt(32, "decisions per env per update (env steps for a one-action policy)")
    updates: int = _opt(50, "PPO updates (rollout + optimisation) in total")
    temperature: float = _opt(1.0, "sampling temperature of the action tokens (part of the policy's distribution)")
    # -- PPO
    gamma: float = _opt(0.99, "discount factor")
    gae_lambda: float = _opt(0.95, "GAE lambda")
    clip_coef: float = _opt(0.2, "PPO ratio clip")
    value_clip: float = _opt(0.2, "value clip around the rollout's values; 0 = no value clipping")
    huber_delta: float = _opt(1.0, "delta of the Huber value loss")
    vf_coef: float = _opt(0.5, "value-loss coefficient")
    ent_coef: float = _opt(0.0, "entropy-bonus coefficient (entropy summed over the 7 tokens)")
    norm_adv: bool = _opt(True, "normalise advantages per minibatch")
    update_epochs: int = _opt(2, "passes over each rollout")
    num_minibatches: int = _opt(4, "minibatches per pass (optimizer steps per epoch)")
    micro_batch_size: int = _opt(0, "samples per forward/backward inside a minibatch (gradient accumulation); "
                                    "0 = the whole minibatch")
    target_kl: float = _opt(0.0, "stop an update's epochs early when approx_kl exceeds it; 0 = off")
    max_grad_norm: float = _opt(1.0, "gradient-norm clip")
    # -- optimiser
    lr: float = _opt(1e-5, "learning rate of the policy (the OpenVLA weights)")
    value_lr: float = _opt(1e-4, "learning rate of the value head")
    lr_warmup_updates: int = _opt(0, "linear lr warm-up, in updates")
    min_lr_ratio: float = _opt(1.0, "final lr / peak lr of a cosine decay over --updates; 1 = constant")
    weight_decay: float = _opt(0.0, "AdamW weight decay (not on norms, biases, embeddings)")
    freeze_vision: bool = _opt(False, "keep the vision towers and projector fixed")
    # -- RLRC additions
    critic_warmup: int = _opt(5, "the first K updates train only the value head; 0 disables")
    bc_coef: float = _opt(0.0, "weight of the BC loss (SFT cross-entropy on demo action tokens); 0 disables")
    bc_data: str | None = _opt(None, "demonstration HDF5 file(s) for the BC loss, comma-separated")
    bc_batch_size: int = _opt(8, "demo samples per BC batch (one batch per optimizer step)")
    bc_shift: int = _opt(0, "random-shift augmentation of BC images, pixels; 0 = none")
    kl_to_init: bool = _opt(True, "keep a frozen copy of --init and log charts/kl_to_init (k3 estimate on the "
                                  "rollout tokens); --no-kl-to-init saves its memory")
    reuse_value_head: bool = _opt(True, f"start from --init's {VALUE_HEAD_FILE} when it has one")
    value_hidden: int = _opt(0, "value-head MLP width; 0 = the LLM's hidden size")
    # -- run (defaults in updates)
    save_every: int = _opt(10, "write state + a checkpoint every N updates")
    log_every: int = _opt(1, "write a metrics.jsonl row every N updates")

    def __post_init__(self) -> None:
        super().__post_init__()
        from sim.tasks import FAMILIES, SPLITS

        for name in ("num_envs", "rollout_steps", "updates", "update_epochs", "num_minibatches", "bc_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be >= 1")
        for name in ("max_episode_steps", "micro_batch_size", "lr_warmup_updates", "critic_warmup", "bc_shift",
                     "value_hidden", "chunk_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be >= 0")
        for name in ("temperature", "lr", "value_lr", "clip_coef", "huber_delta", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be > 0")
        for name in ("value_clip", "vf_coef", "ent_coef", "target_kl", "weight_decay", "bc_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be >= 0")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be in [0, 1]")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"--min-lr-ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.lr_warmup_updates > self.updates:
            raise ConfigError(f"--lr-warmup-updates={self.lr_warmup_updates} must be <= --updates={self.updates}")
        if self.critic_warmup > self.updates:
            raise ConfigError(f"--critic-warmup={self.critic_warmup} must be <= --updates={self.updates} "
                              "(every update would train the value head only)")
        batch = self.num_envs * self.rollout_steps
        if self.num_minibatches > batch:
            raise ConfigError(f"--num-minibatches={self.num_minibatches} exceeds the rollout's {batch} samples "
                              f"(--num-envs {self.num_envs} x --rollout-steps {self.rollout_steps}); "
                              "use fewer minibatches")
        if self.bc_coef > 0 and not self.bc_data:
            raise ConfigError(f"--bc-coef={self.bc_coef} needs demonstrations: pass --bc-data FILE.hdf5 "
                              "(or --bc-coef 0)")
        if not self.families_list:
            raise ConfigError("--families is empty; pass e.g. pick,push,place,stack")
        for fam in self.families_list:
            if fam not in FAMILIES:
                raise ConfigError(f"--families: {fam!r} is not a task family; expected some of {sorted(FAMILIES)}."
                                  f"{did_you_mean(fam, sorted(FAMILIES))}")
        if self.split not in SPLITS:
            raise ConfigError(f"--split={self.split!r} is not a split; expected one of {sorted(SPLITS)}."
                              f"{did_you_mean(self.split, sorted(SPLITS))}")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"--image-size={self.image_size} must be in [16, 1024]")

    @property
    def families_list(self) -> list[str]:
        return [f for f in self.families.split(",") if f]

    @property
    def bc_files(self) -> list[str]:
        return [p for p in (self.bc_data or "").split(",") if p]


# --------------------------------------------------------------------------- policy pieces


class ValueHead(nn.Module):
    """Critic MLP: last-layer hidden state [..., H] -> value [...] (float32)."""

    def __init__(self, hidden_size: int, width: int = 0, seed: int = 0) -> None:
        super().__init__()
        width = width or hidden_size
        self.fc1 = nn.Linear(hidden_size, width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(width, 1)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.fc1.weight.normal_(0.0, hidden_size**-0.5, generator=gen)
            self.fc1.bias.zero_()
            # Small output layer: values start near 0 (the prior for a sparse 0/1 reward) but not at
            # exactly 0, so the first value losses already carry gradient into fc1.
            self.fc2.weight.normal_(0.0, 0.1 * width**-0.5, generator=gen)
            self.fc2.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden.float()))).squeeze(-1).float()


@dataclass
class PolicyContext:
    """The policy as the rollout and the update see it (built once per run)."""

    model: OpenVLA
    value_head: ValueHead
    transforms: Transforms
    prompts: "PromptCache"
    stats: ActionStats
    temperature: float
    autocast: Callable[[], ContextManager[Any]]

    @property
    def pad_id(self) -> int:
        return self.model.config.llm.pad_token_id or 0

    @property
    def parallel(self) -> bool:
        """True for a parallel-decoding (action-chunk) policy."""
        return self.model.config.decoding == "parallel"

    @property
    def n_tokens(self) -> int:
        """Tokens per decision: K x action_dim."""
        return self.model.config.action_chunk * self.stats.action_dim

    def pixel_values(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Resized frames [B, S, S, 3] uint8 -> [B, C, S, S] float32 (the runtime's normalisation)."""
        frames = frames.numpy() if isinstance(frames, torch.Tensor) else frames
        return torch.from_numpy(self.transforms.pixel_values(frames))


class ActionScores(NamedTuple):
    """What the policy says about stored actions, per row [B]: summed log-prob and entropy, and the value."""

    logp: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor


def value_position(num_patches: int, prompt_len: int | torch.Tensor) -> int | torch.Tensor:
    """Multimodal position of the last prompt token, whose output emits the first action token.

    The sequence is ``[BOS, patches (P), prompt[1:]]``, so prompt token j >= 1 sits at ``P + j`` and
    the last one (29871) at ``P + prompt_len - 1``. The value head reads the hidden state there.
    """
    return num_patches + prompt_len - 1


def restricted_log_probs(logits: torch.Tensor, tokens: torch.Tensor, action_ids: torch.Tensor) -> torch.Tensor:
    """Summed log-prob of action token sequences under the softmax restricted to the action tokens.

    logits [..., D, V] (full vocabulary, already divided by the temperature), tokens [..., D] ids
    (each one of ``action_ids``), action_ids [n_bins] ascending -> log pi(a) [...] = sum over the D
    tokens of log softmax(logits[action_ids])[token]. Logits outside ``action_ids`` have no effect:
    masking them to -inf and taking the full softmax gives the same numbers.
    """
    action_ids = action_ids.to(logits.device)
    restricted = logits.index_select(-1, action_ids).float()  # [..., D, n]
    tokens = tokens.to(logits.device).contiguous()
    index = torch.searchsorted(action_ids, tokens).clamp(max=action_ids.numel() - 1)  # [..., D] within action_ids
    if not torch.equal(action_ids[index], tokens):
        raise ValueError("restricted_log_probs: some tokens are not action tokens (not in action_ids)")
    return _token_log_probs(restricted, index).sum(-1)


def restricted_entropy(logits: torch.Tensor, action_ids: torch.Tensor) -> torch.Tensor:
    """Entropy of the restricted softmax, summed over the D tokens: [..., D, V] -> [...]."""
    return _entropy(logits.index_select(-1, action_ids.to(logits.device)).float()).sum(-1)


def _token_log_probs(restricted: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[..., n] logits over the action tokens + [...] index -> [...] log-prob."""
    return torch.log_softmax(restricted, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)


def _entropy(restricted: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(restricted, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _action_logits(ctx: PolicyContext, hidden: torch.Tensor) -> torch.Tensor:
    """Hidden [..., H] -> logits over the action tokens only [..., n_bins] float32, divided by the temperature.

    Only the lm_head rows of the action tokens are multiplied: the logits of slicing the
    full-vocabulary logits (up to float rounding), at 256/32064 of the cost. Sampling and scoring
    both use this, so the rollout's and the update's log-probs agree.
    """
    tok = ctx.transforms.action
    weight = ctx.model.language_model.lm_head.weight[tok.first_action_token : tok.vocab_size]  # [n, H]
    return F.linear(hidden, weight).float() / ctx.temperature


@torch.no_grad()
def sample_actions(ctx: PolicyContext, pixel_values: torch.Tensor, prompts: Sequence[np.ndarray],
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one action per row with the KV cache.

    pixel_values [B, C, S, S], prompts B arrays of ids (BOS ... 29871) -> (tokens [B, D] int64 ids,
    log-prob [B] float32 summed over the D tokens, value [B] float32). Rows are grouped by prompt
    length (the model has no attention mask, so one cached batch needs equal lengths). Sampling is
    the exponential race (argmax p / q, q ~ Exp(1)) with q drawn from ``generator`` on the CPU, so
    the draws are the same on every device.
    """
    if ctx.parallel:
        return _sample_parallel(ctx, pixel_values, prompts, generator)
    model, d = ctx.model, ctx.stats.action_dim
    device = model.device
    lm = model.language_model
    patches = model.embed_image(pixel_values.to(device))  # [B, P, H]
    b = len(prompts)
    tokens = torch.zeros(b, d, dtype=torch.int64, device=device)
    logps = torch.zeros(b, dtype=torch.float32, device=device)
    values = torch.zeros(b, dtype=torch.float32, device=device)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    first = ctx.transforms.action.first_action_token
    for length in sorted(groups):
        rows = groups[length]
        idx = torch.tensor(rows, device=device)
        ids = torch.from_numpy(np.stack([prompts[r] for r in rows])).to(device)  # [G, T]
        embeds = model.multimodal_embeds(ids, patches[idx])  # [G, P + T, H]
        start = embeds.shape[1]
        cache = KVCache(model.config.llm, len(rows), start + d - 1, embeds.dtype, device)
        h = lm.model(embeds, 0, cache)[:, -1]  # [G, H] at value_position
        values[idx] = ctx.value_head(h)
        for k in range(d):
            logp_all = torch.log_softmax(_action_logits(ctx, h), dim=-1)  # [G, n]
            q = torch.empty(logp_all.shape, dtype=torch.float32).exponential_(generator=generator).to(device)
            choice = (logp_all - q.log()).argmax(-1)  # [G] == argmax p / q
            logps[idx] += logp_all.gather(-1, choice[:, None]).squeeze(-1)
            tokens[idx, k] = choice + first
            if k + 1 < d:
                h = lm.model(lm.model.embed_tokens(tokens[idx, k])[:, None], start + k, cache)[:, -1]
    return tokens, logps, values


def _sample_parallel(ctx: PolicyContext, pixel_values: torch.Tensor, prompts: Sequence[np.ndarray],
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sample_actions for a parallel-decoding policy: one pass, every slot sampled from its own softmax."""
    n = ctx.n_tokens
    with torch.no_grad():
        hidden, pos = _parallel_forward(ctx, pixel_values, prompts, n)  # [B, L, H], [B]
        rows = torch.arange(len(prompts), device=hidden.device)
        values = ctx.value_head(hidden[rows, pos])
        slots = hidden[rows[:, None], pos[:, None] + 1 + torch.arange(n, device=hidden.device)]  # [B, N, H]
        logp_all = torch.log_softmax(_action_logits(ctx, slots), dim=-1)  # [B, N, n_bins]
        q = torch.empty(logp_all.shape, dtype=torch.float32).exponential_(generator=generator).to(hidden.device)
        choice = (logp_all - q.log()).argmax(-1)  # [B, N]
        logps = logp_all.gather(-1, choice[..., None]).squeeze(-1).sum(-1)
    return choice + ctx.transforms.action.first_action_token, logps, values


def _parallel_forward(ctx: PolicyContext, pixel_values: torch.Tensor, prompts: Sequence[np.ndarray],
                      n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One parallel-decoding pass over [BOS, patches, prompt, n slots] -> (hidden [B, L, H], value position [B])."""
    model = ctx.model
    device = model.device
    lens = torch.tensor([len(p) for p in prompts], device=device)
    ids = _pad_ids([np.concatenate([p, np.full(n, ctx.pad_id)]) for p in prompts], ctx.pad_id).to(device)
    hidden = model.parallel_hidden_states(pixel_values.to(device), ids, lens, torch.full_like(lens, n))
    return hidden, value_position(model.config.num_patches, lens)


def _pad_ids(seqs: Sequence[np.ndarray], pad_id: int) -> torch.Tensor:
    """Right-padded [B, W] int64 (pads after every real token never influence them: causal attention)."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return torch.from_numpy(ids)


def evaluate_actions(ctx: PolicyContext, pixel_values: torch.Tensor, prompts: Sequence[np.ndarray],
                     tokens: torch.Tensor) -> ActionScores:
    """Teacher-forced scoring of stored actions: one forward over ``prompt + D action tokens``.

    prompts B arrays of ids, tokens [B, D] action ids -> scores [B] (log-prob and entropy summed over
    the D tokens under the restricted softmax at the temperature). The token at text index T + k is
    predicted from multimodal position ``value_position + k``.
    """
    model = ctx.model
    device = model.device
    tokens = tokens.to(device)
    d = tokens.shape[1]
    if ctx.parallel:  # the slots' inputs are empty: the stored tokens only select the scored entries
        hidden, pos = _parallel_forward(ctx, pixel_values, prompts, d)
        rows = torch.arange(len(prompts), device=device)
        logits = _action_logits(ctx, hidden[rows[:, None], pos[:, None] + 1 + torch.arange(d, device=device)])
        logp = _token_log_probs(logits, tokens - ctx.transforms.action.first_action_token).sum(-1)
        return ActionScores(logp, _entropy(logits).sum(-1), ctx.value_head(hidden[rows, pos]))
    seqs = [np.concatenate([p, t]) for p, t in zip(prompts, tokens.cpu().numpy())]
    hidden = model.hidden_states(pixel_values.to(device), _pad_ids(seqs, ctx.pad_id).to(device))  # [B, P + W, H]
    rows = torch.arange(len(prompts), device=device)
    pos = value_position(model.config.num_patches, torch.tensor([len(p) for p in prompts], device=device))  # [B]
    value = ctx.value_head(hidden[rows, pos])
    act_pos = pos[:, None] + torch.arange(d, device=device)  # [B, D]
    logits = _action_logits(ctx, hidden[rows[:, None], act_pos])  # [B, D, n]
    logp = _token_log_probs(logits, tokens - ctx.transforms.action.first_action_token).sum(-1)
    return ActionScores(logp, _entropy(logits).sum(-1), value)


def prompt_hidden(ctx: PolicyContext, pixel_values: torch.Tensor, prompts: Sequence[np.ndarray]) -> torch.Tensor:
    """Last-layer hidden states [B, H] at ``value_position`` (a prompt-only forward, right-padded)."""
    model = ctx.model
    device = model.device
    hidden = model.hidden_states(pixel_values.to(device), _pad_ids(prompts, ctx.pad_id).to(device))  # [B, P + T, H]
    pos = value_position(model.config.num_patches, torch.tensor([len(p) for p in prompts], device=device))
    return hidden[torch.arange(len(prompts), device=device), pos]


@torch.no_grad()
def compute_values(ctx: PolicyContext, frames: np.ndarray, prompts: Sequence[np.ndarray]) -> torch.Tensor:
    """Values [B] (float32, CPU) of resized frames [B, S, S, 3] with their prompts (bootstrapping)."""
    with ctx.autocast():
        return ctx.value_head(prompt_hidden(ctx, ctx.pixel_values(frames), prompts)).float().cpu()


# --------------------------------------------------------------------------- losses and advantages


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, truncations: torch.Tensor,
                last_value: torch.Tensor, gamma: float, lam: float,
                final_values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a [T, N] rollout -> (advantages, returns) [T, N].

    ``dones[t]``: the episode terminated at step t (success): nothing follows, no bootstrap.
    ``truncations[t]``: it hit its time limit: the future is bootstrapped from
    ``final_values[t]`` = V(final observation), but the lambda-recursion does not continue into
    the next episode. Otherwise step t continues into step t + 1 (``last_value`` after T - 1).
    """
    if final_values is None:
        if bool(truncations.any()):
            raise ValueError("compute_gae: truncations need final_values (the value of each final observation)")
        final_values = torch.zeros_like(values)
    t_len = rewards.shape[0]
    dones_f, trunc_f = dones.float(), truncations.float()
    adv = torch.zeros_like(values, dtype=torch.float32)
    running = torch.zeros_like(last_value, dtype=torch.float32)
    for t in reversed(range(t_len)):
        next_value = last_value if t == t_len - 1 else values[t + 1]
        next_value = torch.where(truncations[t], final_values[t], next_value)
        delta = rewards[t] + gamma * next_value * (1.0 - dones_f[t]) - values[t]
        running = delta + gamma * lam * (1.0 - dones_f[t]) * (1.0 - trunc_f[t]) * running
        adv[t] = running
    return adv, adv + values


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, value_clip: float,
               huber_delta: float) -> torch.Tensor:
    """Huber value loss, clipped around the rollout's values (PPO2 style: max of the two) when value_clip > 0."""
    unclipped = F.huber_loss(new_values, returns, reduction="none", delta=huber_delta)
    if value_clip <= 0:
        return unclipped.mean()
    clipped_values = old_values + (new_values - old_values).clamp(-value_clip, value_clip)
    clipped = F.huber_loss(clipped_values, returns, reduction="none", delta=huber_delta)
    return torch.max(unclipped, clipped).mean()


class PPOTargets(NamedTuple):
    """The rollout's side of a minibatch, per row [B]: behaviour log-prob and value, return, advantage
    (already normalised if wanted)."""

    old_logp: torch.Tensor
    old_value: torch.Tensor
    returns: torch.Tensor
    advantages: torch.Tensor


def ppo_loss(new: ActionScores, old: PPOTargets, cfg: RLConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO objective over a minibatch: clipped surrogate - ent_coef * entropy + vf_coef * clipped Huber value loss."""
    logratio = new.logp - old.old_logp
    ratio = logratio.exp()
    adv = old.advantages
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    v_loss = value_loss(new.value, old.old_value, old.returns, cfg.value_clip, cfg.huber_delta)
    ent = new.entropy.mean()
    loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
    with torch.no_grad():
        stats = {
            "losses/policy_loss": pg_loss.detach(),
            "losses/value_loss": v_loss.detach(),
            "losses/entropy": ent.detach(),
            "losses/old_approx_kl": (-logratio).mean(),
            "losses/approx_kl": ((ratio - 1) - logratio).mean(),
            "losses/clipfrac": ((ratio - 1.0).abs() > cfg.clip_coef).float().mean(),
        }
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    var = float(returns.var())
    return float("nan") if var == 0 else 1.0 - float((returns - values).var()) / var


# --------------------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """One update's experience of this process's envs, stored on the CPU. Shapes [T, N, ...]."""

    images: torch.Tensor  # [T, N, S, S, 3] uint8, resized to the model's input size
    prompt_index: torch.Tensor  # [T, N] int64 into ``prompts``
    prompts: list[np.ndarray]  # token ids of each instruction seen (BOS ... 29871)
    tokens: torch.Tensor  # [T, N, D] int64 action token ids
    logprobs: torch.Tensor  # [T, N] float32, behaviour policy (summed over D)
    values: torch.Tensor  # [T, N] float32
    rewards: torch.Tensor  # [T, N] float32
    dones: torch.Tensor  # [T, N] bool, terminated (success)
    truncations: torch.Tensor  # [T, N] bool, hit the time limit
    final_values: torch.Tensor  # [T, N] float32, V(final observation) where truncated, else 0
    last_value: torch.Tensor  # [N] float32, V(observation after the last step)
    # (return, length, success) of every episode that ended during the rollout
    episodes: list[tuple[float, int, bool]] = field(default_factory=list)


@dataclass
class EnvState:
    """What it takes to rebuild the envs exactly: each episode's seed and the actions taken since."""

    seeds: list[int]
    episode_counts: list[int]
    histories: list[list[np.ndarray]]  # per env: env actions [7] float32 of the current episode
    returns: list[float]
    obs_digest: list[str] = field(default_factory=list)  # sha1 of each env's current image (replay check)

    def to_dict(self) -> dict[str, Any]:
        """Plain values and tensors only (read back with ``weights_only=True``)."""
        return {"seeds": self.seeds, "episode_counts": self.episode_counts, "returns": self.returns,
                "histories": [torch.from_numpy(np.asarray(h, np.float32).reshape(-1, 7)) for h in self.histories],
                "obs_digest": self.obs_digest}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnvState":
        return cls(list(d["seeds"]), list(d["episode_counts"]), [list(np.asarray(h)) for h in d["histories"]],
                   list(d["returns"]), list(d.get("obs_digest", [])))


@dataclass
class Envs:
    """This process's vector env, its episodes' state and the current observation."""

    vec: Any  # gymnasium VectorEnv (sim.make_vector_env)
    state: EnvState
    obs: dict[str, Any]
    rank: int


def episode_seed(seed: int, rank: int, env: int, episode: int) -> int:
    """Reset seed of one episode: distinct per (run seed, rank, env, episode), stable across runs."""
    return int(np.random.SeedSequence([seed, rank, env, episode]).generate_state(1)[0])


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def make_envs(cfg: RLConfig, rank: int):
    """This process's vector env (sim.make_vector_env), with the episode limit applied when set."""
    from sim import make_vector_env

    envs = make_vector_env(cfg.families_list, split=cfg.split, num_envs=cfg.num_envs, seed=cfg.seed,
                           image_size=cfg.image_size, mode=cfg.env_mode, shaped_reward=cfg.grasp_bonus)
    if cfg.max_episode_steps:
        # make_vector_env takes no episode limit; TabletopEnv reads it from its (frozen) config.
        configs = envs.get_attr("config")
        envs.set_attr("config", [dataclasses.replace(c, max_steps=cfg.max_episode_steps) for c in configs])
    return envs


def start_envs(vec: Any, cfg: RLConfig, rank: int) -> Envs:
    """Reset every env to its first episode."""
    seeds = [episode_seed(cfg.seed, rank, i, 0) for i in range(cfg.num_envs)]
    obs, _ = vec.reset(seed=seeds)
    return Envs(vec, EnvState(seeds, [0] * cfg.num_envs, [[] for _ in seeds], [0.0] * cfg.num_envs), obs, rank)


def restore_envs(vec: Any, state: EnvState, rank: int) -> Envs:
    """Rebuild every env's current episode by replaying it from its seed.

    Envs step together, so env i (history length L_i) is reset with its seed ``max L - L_i`` steps
    into the replay and fed no-op actions before that; MuJoCo stepping and CPU rendering are
    deterministic, so the result is bit-identical to the state that was saved.
    """
    lengths = [len(h) for h in state.histories]
    longest = max(lengths)
    n = len(lengths)
    obs, _ = vec.reset(seed=list(state.seeds))
    for k in range(longest + 1):
        late = np.array([k > 0 and lengths[i] == longest - k for i in range(n)])
        if late.any():
            seeds = [state.seeds[i] if late[i] else None for i in range(n)]
            obs, _ = vec.reset(seed=seeds, options={"reset_mask": late})
        if k == longest:
            break
        actions = np.stack([state.histories[i][k - (longest - lengths[i])] if k >= longest - lengths[i] else NOOP_ACTION
                            for i in range(n)])
        obs, *_ = vec.step(actions)
    if state.obs_digest and [_digest(im) for im in obs["image"]] != state.obs_digest:
        log.warning("env replay did not reproduce the saved observations (different MuJoCo/renderer?); "
                    "the run continues, but not bit-identically")
    return Envs(vec, state, obs, rank)


class PromptCache:
    """Instruction -> prompt ids, each instruction tokenized once."""

    def __init__(self, tokenizer: PromptTokenizer) -> None:
        self.tokenizer = tokenizer
        self.index: dict[str, int] = {}
        self.prompts: list[np.ndarray] = []

    def __call__(self, instruction: str) -> int:
        if instruction not in self.index:
            self.index[instruction] = len(self.prompts)
            self.prompts.append(self.tokenizer(instruction))
        return self.index[instruction]


def _frames(ctx: PolicyContext, images: Sequence[np.ndarray]) -> np.ndarray:
    """Rendered frames -> [N, S, S, 3] uint8 at the model's input size (the runtime's resize)."""
    return np.stack([ctx.transforms.image.resize(im) for im in images])


def collect_rollout(ctx: PolicyContext, envs: Envs, cfg: RLConfig, update: int) -> Rollout:
    """Step the envs ``cfg.rollout_steps`` times with the sampling policy.

    Episodes that end are reset at once with their next explicit seed; truncated ones get
    V(final observation) for the bootstrap. ``envs`` (state and observation) is updated in place.
    """
    from sim.evaluate import to_env_action

    t_len, n, d = cfg.rollout_steps, cfg.num_envs, ctx.n_tokens
    k = ctx.model.config.action_chunk
    chunk_steps = min(cfg.chunk_steps or k, k)
    size = ctx.transforms.image.image_size
    images = torch.zeros(t_len, n, size, size, 3, dtype=torch.uint8)
    prompt_index = torch.zeros(t_len, n, dtype=torch.int64)
    tokens = torch.zeros(t_len, n, d, dtype=torch.int64)
    logprobs, values, rewards, final_values = (torch.zeros(t_len, n) for _ in range(4))
    dones = torch.zeros(t_len, n, dtype=torch.bool)
    truncations = torch.zeros(t_len, n, dtype=torch.bool)
    episodes: list[tuple[float, int, bool]] = []
    gen = _generator(cfg.seed, update, envs.rank, 1)
    state = envs.state
    for t in range(t_len):
        frames = _frames(ctx, envs.obs["image"])  # [N, S, S, 3]
        pidx = [ctx.prompts(s) for s in envs.obs["instruction"]]
        prompts = [ctx.prompts.prompts[i] for i in pidx]
        with ctx.autocast():
            tok_t, logp_t, value_t = sample_actions(ctx, ctx.pixel_values(frames), prompts, gen)
        # as rlrc_runtime.Policy.infer: [N, K, D] in robot units
        chunks = ctx.transforms.decode_actions(tok_t.cpu().numpy().reshape(n, k, -1), ctx.stats)
        images[t], prompt_index[t], tokens[t] = torch.from_numpy(frames), torch.tensor(pidx), tok_t.cpu()
        logprobs[t], values[t] = logp_t.cpu(), value_t.cpu()
        for j in range(chunk_steps):  # one decision: the chunk, open loop, until an episode ends
            env_actions = np.stack([to_env_action(a) for a in chunks[:, j]])
            envs.obs, reward, terminated, truncated, _ = envs.vec.step(env_actions)
            rewards[t] += torch.from_numpy(np.asarray(reward, np.float32))
            dones[t] = torch.from_numpy(np.asarray(terminated, bool))
            truncations[t] = torch.from_numpy(np.asarray(truncated, bool) & ~np.asarray(terminated, bool))
            for i in range(n):
                state.histories[i].append(env_actions[i])
                state.returns[i] += float(reward[i])
            if bool((dones[t] | truncations[t]).any()):
                break
        if truncations[t].any():
            rows = truncations[t].nonzero().flatten().tolist()
            final_values[t, rows] = compute_values(ctx, _frames(ctx, [envs.obs["image"][i] for i in rows]),
                                                   [prompts[i] for i in rows])
        ended = (dones[t] | truncations[t]).numpy()
        if ended.any():
            for i in np.flatnonzero(ended):
                episodes.append((state.returns[i], len(state.histories[i]), bool(dones[t, i])))
                state.episode_counts[i] += 1
                state.seeds[i] = episode_seed(cfg.seed, envs.rank, int(i), state.episode_counts[i])
                state.histories[i], state.returns[i] = [], 0.0
            seeds = [state.seeds[i] if ended[i] else None for i in range(n)]
            envs.obs, _ = envs.vec.reset(seed=seeds, options={"reset_mask": ended})
    last_value = compute_values(ctx, _frames(ctx, envs.obs["image"]),
                                [ctx.prompts.prompts[ctx.prompts(s)] for s in envs.obs["instruction"]])
    state.obs_digest = [_digest(im) for im in envs.obs["image"]]
    return Rollout(images, prompt_index, ctx.prompts.prompts, tokens, logprobs, values, rewards, dones, truncations,
                   final_values, last_value, episodes)


# --------------------------------------------------------------------------- update


@dataclass
class Learner:
    """What an update changes and what it regularises towards."""

    run: Run
    opt: torch.optim.Optimizer
    params: list[nn.Parameter]
    bc: tuple[DemoSteps, Collator] | None  # demonstrations for the BC loss
    ref: OpenVLA | None  # frozen --init, for charts/kl_to_init


@torch.no_grad()
def _reference_log_probs(ctx: PolicyContext, ref: OpenVLA, ro: Rollout, flat: dict[str, torch.Tensor],
                         chunk: int) -> torch.Tensor:
    """log pi_init of the rollout's actions [T * N], in chunks."""
    ref_ctx = dataclasses.replace(ctx, model=ref)
    out = []
    for s in range(0, flat["logprobs"].shape[0], chunk):
        sl = slice(s, s + chunk)
        prompts = [ro.prompts[i] for i in flat["prompt_index"][sl].tolist()]
        with ctx.autocast():
            scores = evaluate_actions(ref_ctx, ctx.pixel_values(flat["images"][sl]), prompts, flat["tokens"][sl])
        out.append(scores.logp.float().cpu())
    return torch.cat(out)


def ppo_update(ctx: PolicyContext, learner: Learner, ro: Rollout, cfg: RLConfig, update: int) -> dict[str, float]:
    """Advantages, then epochs x minibatches of PPO steps (value head only during critic warm-up)."""
    warmup = update < cfg.critic_warmup
    rank = learner.run.rank
    adv, returns = compute_gae(ro.rewards, ro.values, ro.dones, ro.truncations, ro.last_value, cfg.gamma,
                               cfg.gae_lambda, ro.final_values)
    flat = {"images": ro.images.flatten(0, 1), "prompt_index": ro.prompt_index.flatten(),
            "tokens": ro.tokens.flatten(0, 1), "logprobs": ro.logprobs.flatten(), "values": ro.values.flatten(),
            "advantages": adv.flatten(), "returns": returns.flatten()}
    total = flat["logprobs"].shape[0]
    micro = cfg.micro_batch_size or total
    metrics: dict[str, list[float]] = {}
    if learner.ref is not None:
        log_ratio = _reference_log_probs(ctx, learner.ref, ro, flat, micro) - flat["logprobs"]
        # k3 = (r - 1) - log r with r = pi_init / pi_theta, on tokens sampled from pi_theta: unbiased, >= 0.
        metrics["charts/kl_to_init"] = [float(((log_ratio.exp() - 1) - log_ratio).mean())]
    device = ctx.model.device
    for epoch in range(cfg.update_epochs):
        epoch_start = len(metrics.get("losses/approx_kl", []))
        perm = torch.randperm(total, generator=_generator(cfg.seed, update, rank, 2, epoch))
        for mb_i, mb in enumerate(torch.tensor_split(perm, cfg.num_minibatches)):
            learner.opt.zero_grad(set_to_none=True)
            mb_adv = flat["advantages"][mb]
            if cfg.norm_adv and mb.numel() > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            for part in torch.split(torch.arange(mb.numel()), micro):
                idx = mb[part]
                prompts = [ro.prompts[i] for i in flat["prompt_index"][idx].tolist()]
                pv = ctx.pixel_values(flat["images"][idx])
                targets = PPOTargets(flat["logprobs"][idx].to(device), flat["values"][idx].to(device),
                                     flat["returns"][idx].to(device), mb_adv[part].to(device))
                with ctx.autocast():
                    if warmup:
                        with torch.no_grad():  # the backbone is not trained: no graph through it
                            hidden = prompt_hidden(ctx, pv, prompts)
                        v_loss = value_loss(ctx.value_head(hidden), targets.old_value, targets.returns, cfg.value_clip,
                                            cfg.huber_delta)
                        loss, stats = cfg.vf_coef * v_loss, {"losses/value_loss": v_loss.detach()}
                    else:
                        loss, stats = ppo_loss(evaluate_actions(ctx, pv, prompts, flat["tokens"][idx]), targets, cfg)
                (loss * (idx.numel() / mb.numel())).backward()
                for k, v in stats.items():
                    metrics.setdefault(k, []).append(float(v))
            if learner.bc is not None and not warmup:
                gen = _generator(cfg.seed, update, rank, 3, epoch, mb_i)
                data, collate = learner.bc
                idx = torch.randint(0, len(data), (cfg.bc_batch_size,), generator=gen).numpy()
                batch = collate([data.sample(int(i)) for i in idx], gen).to(device)
                with ctx.autocast():
                    loss_bc, stats = bc_loss(ctx.model, batch)
                (cfg.bc_coef * loss_bc).backward()
                for k, v in stats.items():
                    metrics.setdefault(k, []).append(float(v))
            learner.run.all_reduce_mean(p.grad for p in learner.params if p.grad is not None)
            grad_norm = torch.nn.utils.clip_grad_norm_(learner.params, cfg.max_grad_norm)
            learner.opt.step()
            metrics.setdefault("losses/grad_norm", []).append(float(grad_norm))
        if cfg.target_kl and not warmup:
            kl = float(np.mean(metrics["losses/approx_kl"][epoch_start:]))
            kl = float(learner.run.all_reduce_sum(torch.tensor([kl], dtype=torch.float64))) / learner.run.world
            if kl > cfg.target_kl:
                metrics["charts/early_stop_epoch"] = [float(epoch)]
                break
    row = {k: float(np.mean(v)) for k, v in metrics.items()}
    row["losses/explained_variance"] = explained_variance(flat["values"], flat["returns"])
    row["charts/critic_warmup"] = float(warmup)
    return row


def bc_loss(model: OpenVLA, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The SFT loss on a demonstration batch: full-vocabulary cross-entropy on the 7 action tokens and
    EOS (``ActionLoss``). Full vocabulary on purpose: the runtime decodes greedily over every token,
    so BC also keeps non-action tokens from overtaking the action tokens."""
    loss, stats = ActionLoss(model)(batch)
    return loss, {"losses/bc_loss": loss.detach(), "charts/bc_action_accuracy": stats["metrics/action_accuracy"]}


# --------------------------------------------------------------------------- value head files


def save_value_head(value_head: ValueHead, directory: str | Path, hidden_size: int) -> Path:
    path = Path(directory) / VALUE_HEAD_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "hidden_size": str(hidden_size),
                                             "input": "last-layer hidden state at the last prompt position"})
    return path


def load_value_head(directory: str | Path, hidden_size: int) -> ValueHead:
    path = Path(directory) / VALUE_HEAD_FILE
    tensors = load_file(str(path))
    if "fc1.weight" not in tensors or tensors["fc1.weight"].shape[1] != hidden_size:
        found = list(tensors["fc1.weight"].shape) if "fc1.weight" in tensors else sorted(tensors)
        raise CheckpointError(f"{path}: fc1.weight is {found}, expected [width, {hidden_size}] for this model's hidden "
                              f"size; pass --no-reuse-value-head to start a fresh value head")
    head = ValueHead(hidden_size, tensors["fc1.weight"].shape[0])
    head.load_state_dict(tensors)
    return head


# --------------------------------------------------------------------------- training loop


def _build(cfg: RLConfig, run: Run) -> tuple[PolicyContext, Learner]:
    """Model, value head, transforms, BC data and optimiser of a run (weights as --init has them)."""
    from export.checkpoint import copy_tokenizer, load_model

    model, info = load_model(cfg.init, device="cpu")
    config = info.config
    key = resolve_unnorm_key(config.norm_stats, cfg.unnorm_key)
    if run.main and not run.tokenizer_dir.exists():
        run.tokenizer_dir.mkdir()
        copy_tokenizer(cfg.init, run.tokenizer_dir)
    run.barrier()
    transforms = Transforms.from_checkpoint(cfg.init, config)
    hidden = config.llm.hidden_size
    if cfg.reuse_value_head and (Path(cfg.init) / VALUE_HEAD_FILE).is_file():
        value_head = load_value_head(cfg.init, hidden)
        log.info("value head from %s", Path(cfg.init) / VALUE_HEAD_FILE)
    else:
        value_head = ValueHead(hidden, cfg.value_hidden, seed=cfg.seed)
    bc = None
    if cfg.bc_coef > 0:
        # Demo actions are tokenized with the policy's own statistics, so BC targets live in its action space.
        data = load_demos(cfg.bc_files, transforms, key, config.norm_stats, chunk=config.action_chunk)
        bc = (data, demo_collator(data, transforms, model, cfg.bc_shift))
        log.info("BC data: %d steps from %s (normalised with norm_stats[%r])", len(data), cfg.bc_data, key)
    elif cfg.bc_data:
        log.warning("--bc-data is ignored: --bc-coef is 0")
    ref = None
    if cfg.kl_to_init:
        ref, _ = load_model(cfg.init, device=run.device)
        ref.requires_grad_(False)
    model.to(run.device).eval()  # eval: no dropout exists, but keep the modules in inference behaviour
    value_head.to(run.device)
    if cfg.freeze_vision:
        model.vision_backbone.requires_grad_(False)
        model.projector.requires_grad_(False)
    groups = param_groups(model, cfg.weight_decay)
    for g in groups:
        g["lr"] = cfg.lr
    groups.append({"params": list(value_head.parameters()), "weight_decay": 0.0, "lr": cfg.value_lr})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-5)
    ctx = PolicyContext(model, value_head, transforms, PromptCache(transforms.prompt),
                        action_stats(config.norm_stats, key), cfg.temperature, run.autocast)
    return ctx, Learner(run, opt, [p for g in groups for p in g["params"]], bc, ref)


def train_rl(cfg: RLConfig) -> Path | None:
    """Run (or resume) PPO recovery; returns the final checkpoint directory, or None when
    ``stop_after`` ended this invocation early (its state is saved; run again to continue)."""
    run = Run(cfg, STATE_FILE)
    run.write_config({"rl": cfg})
    ctx, learner = _build(cfg, run)
    sched = torch.optim.lr_scheduler.LambdaLR(
        learner.opt, lambda u: lr_factor(u, cfg.updates, cfg.lr_warmup_updates, cfg.min_lr_ratio))
    vec = make_envs(cfg, run.rank)
    env_path = run.out / "state" / f"envs_rank{run.rank}.pt"
    update = 0
    if run.resuming:
        state = run.load_state()
        ctx.model.load_state_dict(state["model"])
        ctx.value_head.load_state_dict(state["value_head"])
        learner.opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        update = int(state["update"])
        envs = restore_envs(vec, EnvState.from_dict(torch.load(env_path, weights_only=True)), run.rank)
        log.info("resumed from %s at update %d", run.state_path, update)
    else:
        envs = start_envs(vec, cfg, run.rank)
    config, hidden = ctx.model.config, ctx.model.config.llm.hidden_size
    steps_per_update = cfg.rollout_steps * cfg.num_envs * run.world
    bar = run.progress(cfg.updates, update, "ppo", "update")
    metrics = run.metrics()
    start = update
    try:
        for update in run.steps(start, cfg.updates):
            t0 = time.perf_counter()
            rollout = collect_rollout(ctx, envs, cfg, update)
            t_rollout = time.perf_counter() - t0
            row = ppo_update(ctx, learner, rollout, cfg, update)
            sched.step()
            done = update + 1
            elapsed = time.perf_counter() - t0
            row.update(_rollout_metrics(rollout, run))
            row.update({"charts/SPS": steps_per_update / elapsed, "charts/rollout_SPS": steps_per_update / t_rollout,
                        "charts/lr": sched.get_last_lr()[0], "charts/value_lr": sched.get_last_lr()[-1]})
            metrics.add(row)
            bar.update(1)
            if run.log_due(done, cfg.updates):
                logged = metrics.flush({"update": done, "global_step": done * steps_per_update})
                bar.set_postfix(success=f"{logged.get('charts/success_rate', float('nan')):.2f}",
                                ret=f"{logged.get('charts/episodic_return', float('nan')):.2f}",
                                vloss=f"{logged.get('losses/value_loss', float('nan')):.3f}")
            if run.save_due(done, cfg.updates, start):
                run.save_state(envs.state.to_dict(), env_path, all_ranks=True)
                run.save_state({"model": ctx.model.state_dict(), "value_head": ctx.value_head.state_dict(),
                                "optimizer": learner.opt.state_dict(), "scheduler": sched.state_dict(),
                                "update": done})
                run.save_checkpoint(ctx.model, config, f"update_{done:07d}",
                                    lambda path: save_value_head(ctx.value_head, path, hidden))
                run.barrier()
            update = done
    finally:
        bar.close()
        vec.close()
        metrics.close()
    if not run.finished(update, cfg.updates):
        return None
    return run.save_final(ctx.model, config, lambda path: save_value_head(ctx.value_head, path, hidden))


def _rollout_metrics(ro: Rollout, run: Run) -> dict[str, float]:
    """Episode statistics summed over ranks, then turned into rates."""
    sums = torch.tensor([len(ro.episodes), sum(s for _, _, s in ro.episodes), sum(r for r, _, _ in ro.episodes),
                         sum(n for _, n, _ in ro.episodes), float(ro.rewards.sum()), ro.rewards.numel()],
                        dtype=torch.float64)
    episodes, successes, ret, length, reward, steps = run.all_reduce_sum(sums).tolist()
    row = {"charts/episodes": episodes, "charts/reward_per_step": reward / steps}
    if episodes:
        row.update({"charts/success_rate": successes / episodes, "charts/episodic_return": ret / episodes,
                    "charts/episodic_length": length / episodes})
    return row


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator keyed by integers (Python hashes int tuples the same in every process)."""
    return torch.Generator().manual_seed(hash(tuple(keys)) % (2**63))


def main(argv: list[str] | None = None) -> int:
    return run_command("rlrc-recover-rl", __doc__, RLConfig, lambda cfg: outcome(train_rl(cfg)), argv, logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
