"""``rlrc-train``: train an OpenVLA-architecture policy on demonstrations, as OpenVLA does.

Each sample is ``[BOS, patches, prompt..., 29871, a_1..a_7, EOS]``; the loss is cross-entropy on
the 7 action tokens and EOS only (the prompt is context). From scratch (``--preset``) or from a
checkpoint (``--init``; this is the SFT stage of RLRC recovery). AdamW, linear warm-up + cosine
decay, gradient accumulation, fp32 or bf16 autocast, periodic checkpoints, exact resume, and
``torchrun`` (DDP: gloo on CPU, nccl on GPU) with the same command.

``--teacher`` adds knowledge distillation: the KL divergence from the teacher's distribution over
the 256 action bins to the student's, on every supervised action token. Recovering a pruned model
with its unpruned parent as the teacher transfers what the parent knows beyond the demonstrations'
single labels (how sure it is, which bins are near misses).

Batches are sampled with a generator seeded by (seed, step, micro-batch, rank), so a run resumed
from its last state continues exactly as if it had never stopped.

A benchmark may add samples and loss terms through a ``Recipe`` (one small interface, below);
the built-in tabletop benchmark's co-training recipe is ``sim/recipes/tabletop.py``
(``rlrc-sim train``). ``rlrc-train`` itself is the plain trainer.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.demos import Demo, DemoReader
from export.model import OpenVLA, init_weights
from export.train.data import Batch, Collator, DemoSteps, Sample, load_demos
from export.train.loop import Run, RunConfig, flag, lr_factor, outcome, param_groups
from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.transforms import Transforms

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True, kw_only=True)
class TrainConfig(RunConfig):
    data: str = field(metadata={"help": "demonstration HDF5 file(s), comma-separated (ours or LIBERO layout)"})
    init: str | None = field(default=None, metadata={"help": "checkpoint to fine-tune; default: from scratch with "
                                                             "--preset"})
    preset: str = field(default="base-128", metadata={"help": "model preset when training from scratch "
                                                              "(`rlrc-export presets` lists them)"})
    dataset_key: str | None = field(default=None, metadata={"help": "norm_stats key; default: the file's dataset_name"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "samples per micro-batch (per process)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final lr as a fraction of the peak (cosine); 1 = "
                                                               "flat after warm-up"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on norms, biases, "
                                                                "embeddings)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip"})
    shift: int = field(default=6, metadata={"help": "random image shifts of up to N pixels (augmentation); 0 = off"})
    pos_init: str = field(default="sincos", metadata={"help": "from scratch: initial position embeddings of the "
                                                              "towers", "choices": ["sincos", "random"]})
    label_sigma: float = field(default=0.0, metadata={"help": "soft action-token targets: a Gaussian of this many "
                                                              "bins around the true bin (HL-Gauss); 0 = OpenVLA's "
                                                              "one-hot cross-entropy"})
    action_chunk: int | None = field(default=None, metadata={
        "help": "actions per inference K: > 1 trains OpenVLA-OFT-style parallel decoding of K x 7 action tokens "
                "in one pass (targets past an episode's end are not supervised). Default: --init's (from scratch: 1)"})
    decoding: str | None = field(default=None, metadata={
        "help": "'autoregressive' (OpenVLA) or 'parallel' (OFT; implied by --action-chunk > 1). Default: --init's "
                "(from scratch: autoregressive)", "choices": ["autoregressive", "parallel"]})
    slot_embeddings: str | None = field(default=None, metadata={
        "help": "parallel decoding: what the action slots hold: 'learned' (one trained vector per slot) or 'zero' "
                "(OFT's empty slots, which the decoder tells apart only by their positions). Default: --init's; "
                "'learned' when this run makes the model parallel", "choices": ["zero", "learned"]})
    head_rows: str = field(default="all", metadata={
        "help": "'targets': the lm_head rows that are never a target (all but the 256 action rows and EOS) are zero "
                "and stay zero, so the full-vocabulary softmax is computed exactly from the 257 target rows plus one "
                "constant term (the head's cost falls ~125x; the checkpoint still decodes over the whole "
                "vocabulary). From scratch, or from a model trained so. 'all': every row trained, as OpenVLA",
        "choices": ["all", "targets"]})
    teacher: str | None = field(default=None, metadata={
        "help": "checkpoint to distil from (e.g. the unpruned model when recovering a pruned one): adds "
                "--distill-weight x KL(teacher || student) over the action bins of every action token"})
    distill_weight: float = field(default=1.0, metadata={"help": "weight of the distillation term (with --teacher)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be >= 1")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(f"--warmup-steps={self.warmup_steps} must be in [0, --steps={self.steps}]")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"--lr={self.lr} must be > 0 and --min-lr-ratio={self.min_lr_ratio} in [0, 1]")
        if self.shift < 0:
            raise ConfigError(f"--shift={self.shift} must be >= 0 (0 = no augmentation)")
        if not 0 <= self.label_sigma <= 32:
            raise ConfigError(f"--label-sigma={self.label_sigma} must be in [0, 32] bins (0 = one-hot, e.g. 2)")
        if self.pos_init not in ("sincos", "random") or self.head_rows not in ("all", "targets"):
            raise ConfigError(f"--pos-init={self.pos_init!r} / --head-rows={self.head_rows!r}: expected sincos|random "
                              "and all|targets")
        if not self.data_files:
            raise ConfigError("--data is empty; pass one or more HDF5 files")
        if self.distill_weight < 0:
            raise ConfigError(f"--distill-weight={self.distill_weight} must be >= 0")
        if self.action_chunk is not None and not 1 <= self.action_chunk <= 64:
            raise ConfigError(f"--action-chunk={self.action_chunk} must be in [1, 64]")
        if (self.action_chunk or 1) > 1 and self.decoding == "autoregressive":
            raise ConfigError(f"--action-chunk={self.action_chunk} needs --decoding parallel (autoregressive decoding "
                              "predicts one action per pass)")

    @property
    def data_files(self) -> list[str]:
        return [p for p in self.data.split(",") if p]


class Recipe(Protocol):
    """What a benchmark plugs into SFT: extra samples in every batch and extra loss terms.

    Called in this order: ``read_demo`` for every demo while the data loads; ``prepare`` once the
    model, data and transforms exist; then per micro-batch ``rows`` (how many of the batch's rows
    the recipe fills), ``samples`` (those rows, drawn with the batch's generator after the
    demonstration rows, plus per-row extras for the whole batch) and, inside the loss,
    ``loss`` (extra terms, added to the cross-entropy).
    """

    config: Any  # a frozen dataclass; saved with the run's config

    def read_demo(self, reader: DemoReader, demo: Demo, first_row: int) -> None: ...

    def prepare(self, model: OpenVLA, data: DemoSteps, transforms: Transforms) -> None: ...

    def rows(self, batch_size: int) -> int: ...

    def samples(self, demo_rows: np.ndarray, gen: torch.Generator) -> tuple[list[Sample], dict[str, np.ndarray]]: ...

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


# --------------------------------------------------------------------------- loss


class ActionLoss(nn.Module):
    """Cross-entropy on the supervised tokens only; the lm_head runs on those rows alone.

    With ``label_sigma > 0`` the target of an action token is not one-hot but a Gaussian over the
    neighbouring bins (HL-Gauss, Farebrother et al. 2024, "Stop Regressing"): the 256 bins are an
    ordered discretisation of one number, and a one-hot target treats a prediction one bin off as
    wrong as one 200 bins off. Inference is unchanged (argmax of the same tokens). EOS stays one-hot.
    ``extra`` (a recipe's loss) is added to the cross-entropy. With a ``teacher`` (a frozen model
    with the same tokens and decoding), ``distill_weight`` x KL(teacher || student) between the two
    distributions over the action bins is added on the action tokens.
    """

    def __init__(self, model: OpenVLA, action_ids: tuple[int, int] | None = None, label_sigma: float = 0.0,
                 head_rows: torch.Tensor | None = None, extra: Any = None, teacher: OpenVLA | None = None,
                 distill_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.teacher = [teacher] if teacher is not None else []  # a list: not a submodule (not trained, not saved)
        self.distill_weight = float(distill_weight)
        # --head-rows targets: the ids of the trained lm_head rows; every other row is zero (target_head_rows).
        self.head_rows: torch.Tensor | None
        self.register_buffer("head_rows", head_rows, persistent=False)
        if head_rows is not None:
            lookup = torch.full((model.config.llm.vocab_size,), -1, dtype=torch.long)
            lookup[head_rows] = torch.arange(len(head_rows))
            self.register_buffer("row_index", lookup, persistent=False)  # vocab id -> column of the head's logits
            self.first_zero_row = int(lookup.eq(-1).nonzero()[0, 0])  # what a full argmax returns when all C are < 0
        self.label_sigma = float(label_sigma)
        self.action_ids = action_ids  # (first action token id, one past the last)
        self.extra = extra

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = self._hidden(self.model, batch)  # [B, P + T, H]
        logp, pred, columns = self.log_probs(hidden[batch.label_rows, batch.label_pos])  # [M, V or C], [M]
        act = batch.is_action
        hard = -logp.gather(1, columns(batch.labels)[:, None])[:, 0]  # [M]
        if self.label_sigma > 0 and self.action_ids is not None:
            lo, hi = self.action_ids
            ids = torch.arange(lo, hi, device=logp.device, dtype=torch.float32)  # [A]
            # EOS rows get a dummy centre inside the action range (their soft term is discarded below;
            # an all-zero target there would put NaN into the gradient through torch.where).
            centre = batch.labels.clamp(lo, hi - 1).float()
            target = torch.exp(-0.5 * ((ids[None] - centre[:, None]) / self.label_sigma) ** 2)  # [M, A]
            target = target / target.sum(-1, keepdim=True)
            action_cols = columns(torch.arange(lo, hi, device=logp.device))  # [A]
            soft = -(target * logp[:, action_cols]).sum(-1)  # [M]
            loss = torch.where(act, soft, hard).mean()
        else:
            loss = hard.mean()
        with torch.no_grad():
            acc = (pred[act] == batch.labels[act]).float().mean()
            # Bin distance of predicted vs target action tokens (non-action predictions count as 255).
            dist = (pred[act] - batch.labels[act]).abs().clamp(max=255).float().mean()
        stats = {"losses/action_ce": loss.detach(), "metrics/action_accuracy": acc, "metrics/token_bin_error": dist}
        if self.teacher and self.action_ids is not None and bool(act.any()):
            kl = self._distill(batch, logp[act][:, columns(torch.arange(*self.action_ids, device=logp.device))])
            loss = loss + self.distill_weight * kl
            stats["losses/distill_kl"] = kl.detach()
        if self.extra is not None:
            extra_loss, extra_stats = self.extra(batch)
            loss = loss + extra_loss
            stats.update(extra_stats)
        return loss, stats

    @staticmethod
    def _hidden(model: OpenVLA, batch: Batch) -> torch.Tensor:
        if bool(batch.n_slots.any()):  # parallel decoding: the targets sit in empty slots after the prompt
            return model.parallel_hidden_states(batch.pixel_values, batch.input_ids, batch.prompt_lens, batch.n_slots)
        return model.hidden_states(batch.pixel_values, batch.input_ids)

    def _distill(self, batch: Batch, student_logp: torch.Tensor) -> torch.Tensor:
        """Mean KL(teacher || student) over the action bins of the action tokens; ``student_logp`` [N, A]
        is the student's full-vocabulary log p of those rows, restricted to the A action columns."""
        teacher = self.teacher[0]
        lo, hi = self.action_ids
        act = batch.is_action
        with torch.no_grad():
            h = self._hidden(teacher, batch)[batch.label_rows[act], batch.label_pos[act]]
            t_logp = F.log_softmax(F.linear(h, teacher.language_model.lm_head.weight[lo:hi]).float(), dim=-1)
        s_logp = student_logp - torch.logsumexp(student_logp, dim=-1, keepdim=True)  # renormalised over the bins
        return (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()

    def log_probs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Full-vocabulary log-probabilities of the supervised rows ``h`` [M, H] -> (log p [M, V or C], the
        greedy token over the whole vocabulary [M], vocab id -> column of log p).

        With head rows, only their C logits are computed. Every other row of the head is zero, so its logit
        is exactly 0 and the V - C of them add one term, log(V - C), to the normaliser: log p is exact.
        """
        lm_head = self.model.language_model.lm_head
        if self.head_rows is None:
            logits = lm_head(h).float()  # [M, V]
            return F.log_softmax(logits, dim=-1), logits.argmax(-1).detach(), lambda ids: ids
        logits = F.linear(h, lm_head.weight[self.head_rows]).float()  # [M, C]
        rest = torch.full_like(logits[:, :1], math.log(lm_head.weight.shape[0] - len(self.head_rows)))
        logp = logits - torch.logsumexp(torch.cat([logits, rest], dim=-1), dim=-1, keepdim=True)
        with torch.no_grad():
            best, col = logits.max(-1)
            # argmax over the whole vocabulary: a head row when its logit beats the zeros, else the first zero row
            pred = torch.where(best > 0, self.head_rows[col], self.first_zero_row)
        return logp, pred, lambda ids: self.row_index[ids]


def target_head_rows(model: OpenVLA, action_ids: tuple[int, int], eos_id: int, source: str | None) -> torch.Tensor:
    """--head-rows targets: the ids of the head rows kept (the action rows, then EOS). From scratch
    (``source`` None) the other rows are zeroed; a model loaded from ``source`` must have them zero already."""
    lo, hi = action_ids
    rows = torch.cat([torch.arange(lo, hi), torch.tensor([eos_id])])
    weight = model.language_model.lm_head.weight
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[rows] = False
    if source is None:
        with torch.no_grad():
            weight[others] = 0.0
    elif (nonzero := int(weight[others].abs().sum(-1).gt(0).sum())):
        raise ConfigError(f"--head-rows targets: {source} has {nonzero} non-zero lm_head rows besides the {len(rows)} "
                          "target rows (it was not trained with --head-rows targets), so their logits are not 0 and "
                          "the exact softmax over the target rows does not hold. Fine-tune it with --head-rows all, or "
                          "train from scratch with --head-rows targets")
    return rows


def demo_collator(data: DemoSteps, transforms: Transforms, model: OpenVLA, shift: int = 0) -> Collator:
    """The Collator of a model's demonstration batches (parallel decoding when its config says so)."""
    llm = model.config.llm
    return Collator(data.images, transforms, model.config.num_patches, llm.pad_token_id or 0, llm.eos_token_id, shift,
                    model.config.decoding == "parallel")


def decoding_config(config: Any, cfg: TrainConfig) -> Any:
    """The model config with --action-chunk / --decoding applied (unset: as the model has them)."""
    chunk = cfg.action_chunk or config.action_chunk
    decoding = cfg.decoding or ("parallel" if chunk > 1 else config.decoding)
    return config.replace(action_chunk=chunk, decoding=decoding)


def apply_slot_embeddings(model: OpenVLA, cfg: TrainConfig, was_parallel: bool) -> None:
    """--slot-embeddings on a parallel-decoding model (its norm_stats set: they fix the slot count)."""
    if model.config.decoding != "parallel":
        return
    want = cfg.slot_embeddings or (model.config.slot_embeddings if was_parallel else "learned")
    if want == "learned":
        model.learn_slot_embeddings(seed=cfg.seed)
    elif hasattr(model, "action_slots"):
        raise ConfigError(f"--slot-embeddings zero: --init {cfg.init} has learned action slots, which its decoder "
                          "was trained with; leave --slot-embeddings out to keep them")


# --------------------------------------------------------------------------- training


def build_model(cfg: TrainConfig, run: Run) -> tuple[OpenVLA, Transforms, dict[str, Any] | None]:
    """The model to train (from --init, or a --preset initialised with --seed), its transforms and the
    norm_stats it already has (None from scratch). The run's tokenizer is written on rank 0."""
    from export.checkpoint import copy_tokenizer, load_model
    from export.tiny import get_preset, preset_config
    from export.tokenizer_gen import write_tokenizer

    if cfg.init:
        model, info = load_model(cfg.init, require_norm_stats=False, device="cpu")
        if run.main and not run.tokenizer_dir.exists():
            run.tokenizer_dir.mkdir()
            copy_tokenizer(cfg.init, run.tokenizer_dir)
        run.barrier()
        return model, Transforms.from_checkpoint(cfg.init, info.config), info.config.norm_stats
    config = preset_config(get_preset(cfg.preset), norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=cfg.seed, sincos_pos=cfg.pos_init == "sincos")
    if run.main and not run.tokenizer_dir.exists():
        write_tokenizer(run.tokenizer_dir, model_max_length=config.llm.max_position_embeddings)
    run.barrier()
    return model, Transforms.for_new_model(config, run.tokenizer_dir), None


def load_teacher(cfg: TrainConfig, student: OpenVLA, device: str) -> OpenVLA:
    """The frozen --teacher, checked to speak the student's action tokens with its decoding."""
    from export.checkpoint import load_model

    teacher, info = load_model(cfg.teacher, require_norm_stats=False, device="cpu")
    mine, theirs = student.config, info.config
    if (theirs.llm.vocab_size, theirs.decoding, theirs.action_chunk, theirs.image_size) != (
            mine.llm.vocab_size, mine.decoding, mine.action_chunk, mine.image_size):
        raise ConfigError(f"--teacher {cfg.teacher}: vocabulary {theirs.llm.vocab_size}, {theirs.decoding} decoding of "
                          f"{theirs.action_chunk} action(s), {theirs.image_size} px images; the student has "
                          f"{mine.llm.vocab_size}, {mine.decoding} of {mine.action_chunk}, {mine.image_size} px. "
                          "Distil from a model with the same tokens, decoding and input size (e.g. the model that "
                          "was pruned)")
    teacher.to(device).eval().requires_grad_(False)
    return teacher


def train(cfg: TrainConfig, recipe: Recipe | None = None) -> Path | None:
    """Run (or resume) a training job; returns the final checkpoint directory, or None when
    ``stop_after`` ended this invocation early (its state is saved; run again to continue)."""
    if recipe is not None:
        recipe.rows(cfg.batch_size)  # validates the recipe's shares against the batch size before any work
    run = Run(cfg, STATE_FILE)
    run.write_config({"train": cfg, **({"recipe": recipe.config} if recipe is not None else {})})
    model, transforms, init_stats = build_model(cfg, run)
    was_parallel = model.config.decoding == "parallel"
    model.config = decoding_config(model.config, cfg)
    t0 = time.perf_counter()
    data = load_demos(cfg.data_files, transforms, cfg.dataset_key, init_stats,
                      recipe.read_demo if recipe is not None else None, model.config.action_chunk)
    log.info("loaded %d steps, %d instructions from %s in %.1fs", len(data), len(data.instructions), cfg.data,
             time.perf_counter() - t0)
    model.config = model.config.replace(norm_stats=data.norm_stats)
    apply_slot_embeddings(model, cfg, was_parallel)
    config = model.config
    model.to(run.device).train()
    model.freeze_unused()
    if recipe is not None:
        recipe.prepare(model, data, transforms)
    action_ids = (transforms.action.first_action_token, transforms.action.vocab_size)
    head_rows = target_head_rows(model, action_ids, config.llm.eos_token_id, cfg.init) if cfg.head_rows == "targets" else None
    teacher = load_teacher(cfg, model, run.device) if cfg.teacher else None
    loss_fn: nn.Module = ActionLoss(model, action_ids, cfg.label_sigma, head_rows,
                                    recipe.loss if recipe is not None else None, teacher,
                                    cfg.distill_weight).to(run.device)
    if run.world > 1:
        loss_fn = nn.parallel.DistributedDataParallel(loss_fn, device_ids=[run.device] if run.device.startswith("cuda") else None)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    step = 0
    if run.resuming:
        state = run.load_state()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        log.info("resumed from %s at step %d", run.state_path, step)

    collate = demo_collator(data, transforms, model, cfg.shift)
    bar = run.progress(cfg.steps, step, "train", "step")
    metrics = run.metrics()
    last_log, samples_since, start = time.perf_counter(), 0, step
    try:
        for step in run.steps(start, cfg.steps):
            opt.zero_grad(set_to_none=True)
            for micro in range(cfg.grad_accum):
                batch = _sample_batch(cfg, data, collate, recipe, (cfg.seed, step, micro, run.rank)).to(run.device)
                last = micro == cfg.grad_accum - 1 or run.world == 1
                with (loss_fn.no_sync() if not last else nullcontext()), run.autocast():
                    loss, stats = loss_fn(batch)
                    (loss / cfg.grad_accum).backward()
                metrics.add(stats)
                samples_since += cfg.batch_size * run.world
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            done = step + 1
            metrics.add({"losses/grad_norm": grad_norm})
            bar.update(1)
            if run.log_due(done, cfg.steps):
                now = time.perf_counter()
                row = metrics.flush({"step": done, "charts/lr": sched.get_last_lr()[0],
                                     "charts/samples_per_s": samples_since / max(now - last_log, 1e-9)})
                last_log, samples_since = now, 0
                bar.set_postfix(loss=f"{row['losses/action_ce']:.3f}", acc=f"{row['metrics/action_accuracy']:.2f}")
            if run.save_due(done, cfg.steps, start):
                run.save_state({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "step": done})
                run.save_checkpoint(model, config, f"step_{done:07d}")
            step = done
    finally:
        bar.close()
        metrics.close()
    if not run.finished(step, cfg.steps):
        return None
    return run.save_final(model, config)


def _sample_batch(cfg: TrainConfig, data: DemoSteps, collate: Collator, recipe: Recipe | None,
                  key: tuple[int, ...]) -> Batch:
    """One micro-batch: demonstration rows first, then the recipe's rows, all drawn from one generator
    keyed by (seed, step, micro-batch, rank)."""
    gen = torch.Generator().manual_seed(hash(key) % (2**63))
    n_recipe = recipe.rows(cfg.batch_size) if recipe is not None else 0
    idx = torch.randint(0, len(data), (cfg.batch_size - n_recipe,), generator=gen).numpy()
    samples = [data.sample(int(i)) for i in idx]
    extras = None
    if recipe is not None:
        more, extras = recipe.samples(idx, gen)
        samples += more
    return collate(samples, gen, extras)


def main(argv: list[str] | None = None) -> int:
    return run_command("rlrc-train", __doc__, TrainConfig, lambda cfg: outcome(train(cfg)), argv, logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
