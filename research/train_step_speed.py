"""Where a training step of the tabletop recipe spends its time on this CPU, and whether torch.compile,
another attention kernel or the target-row head buys steps.

    python -m research.train_step_speed --data artifacts/base_policy/demos_id_2000.hdf5 \
        [--steps 30 --warmup 15] [--modes eager,sdpa_math,compile,target_head] [--preset base-96] [--json F]

One step is `rlrc-sim train`'s step with the recipe's grounding share: a batch of 64 rows (51 demonstration
frames and 13 grounding questions, `--ground-frac 0.2 --ground-task`, drawn by the recipe as the trainer draws
them), HL-Gauss targets (`--label-sigma 2`), 6-px shifts, backward, gradient clipping and AdamW, from scratch.
Modes:

    eager       what the trainer runs
    sdpa_math   the same, with scaled_dot_product_attention forced to its plain (math) kernel
    compile     torch.compile of the loss module (inductor), the text padded to a fixed width so one
                graph serves every batch; the compile time is reported apart
    target_head `rlrc-train --head-rows targets`: only the 257 target rows of the lm_head are computed
                (the others are zero, so the softmax stays exact)

Each mode starts from the same initial weights and draws the same batches, so the losses printed
must agree to a few digits (a mode that changes the result is not a speed-up); target_head starts from
those weights with the non-target head rows zeroed, so its loss differs from the first step on.
--preset times another model (base-96: fewer image tokens). The eager mode is also profiled
(torch.profiler, further steps) and its share of time per operator is reported. Modes run one after
the other in one process, so compare them as ratios from one run.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from export.model import OpenVLA, init_weights
from export.tiny import get_preset, preset_config
from export.tokenizer_gen import write_tokenizer
from export.train.data import Batch, Collator, DemoSteps, load_demos
from export.train.loop import param_groups
from export.train.sft import ActionLoss, demo_collator, target_head_rows
from rlrc_runtime.cli_args import Subcommand, run_subcommands
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.transforms import Transforms
from sim.recipes.tabletop import TabletopRecipe, TabletopRecipeConfig
from research.report import Started, command_line, write_report

PROG = "research.train_step_speed"
MODES = ("eager", "sdpa_math", "compile", "target_head")
BATCH, GROUND_FRAC = 64, 0.2  # the recipe's batch and its grounding share (13 rows of 64)


@dataclass
class Setup:
    """The demonstration steps, the recipe that adds its questions, and the batch builder, shared by every mode."""

    data: DemoSteps
    recipe: TabletopRecipe
    collate: Collator
    transforms: Transforms
    pad_id: int


def recipe_batch(setup: Setup, step: int, width: int) -> Batch:
    """The batch of ``step`` (the same draw in every mode); text right-padded to ``width`` when > 0."""
    gen = torch.Generator().manual_seed(step)
    n_recipe = setup.recipe.rows(BATCH)
    idx = torch.randint(0, len(setup.data), (BATCH - n_recipe,), generator=gen).numpy()
    more, extras = setup.recipe.samples(idx, gen)
    batch = setup.collate([setup.data.sample(int(i)) for i in idx] + more, gen, extras)
    if width:
        if batch.input_ids.shape[1] > width:
            raise ConfigError(f"a batch is {batch.input_ids.shape[1]} tokens wide, more than --width {width}")
        ids = torch.full((batch.input_ids.shape[0], width), setup.pad_id, dtype=torch.long)
        ids[:, : batch.input_ids.shape[1]] = batch.input_ids
        batch.input_ids = ids  # pads after EOS: the causal mask keeps them out of every supervised position
    return batch


def new_model(preset: str, norm_stats: dict[str, Any]) -> OpenVLA:
    """The mode's model: ``preset`` from the same initial weights every time."""
    model = OpenVLA(preset_config(get_preset(preset), norm_stats=norm_stats))
    init_weights(model, seed=0, sincos_pos=True)
    model.train()
    model.freeze_unused()
    return model


def run_mode(mode: str, setup: Setup, args: "SpeedArgs") -> dict[str, Any]:
    model = new_model(args.preset, setup.data.norm_stats)
    action = setup.transforms.action
    action_ids = (action.first_action_token, action.vocab_size)
    rows = target_head_rows(model, action_ids, model.config.llm.eos_token_id, None) if mode == "target_head" else None
    loss_fn = ActionLoss(model, action_ids, label_sigma=2.0, head_rows=rows)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    fn = torch.compile(loss_fn) if mode == "compile" else loss_fn
    width = args.width if mode == "compile" else 0
    kernel = None
    if mode == "sdpa_math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernel = sdpa_kernel(SDPBackend.MATH)
        kernel.__enter__()
    try:
        losses, timed, first = [], 0.0, 0.0
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch = recipe_batch(setup, step, width)
            opt.zero_grad(set_to_none=True)
            loss, _ = fn(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            dt = time.perf_counter() - t0
            losses.append(float(loss.detach()))
            if step == 0:
                first = dt
            if step >= args.warmup:
                timed += dt
    finally:
        if kernel is not None:
            kernel.__exit__(None, None, None)
    row = {"mode": mode, "steps_per_s": args.steps / timed, "samples_per_s": BATCH * args.steps / timed,
           "first_step_s": first, "final_loss": losses[-1]}
    print(f"{mode:10s} {row['steps_per_s']:.2f} step/s ({row['samples_per_s']:.0f} samples/s), first step "
          f"{first:.1f} s, loss after {len(losses)} steps {losses[-1]:.4f}", flush=True)
    if mode == "eager" and args.profile:
        row["profile"] = profile_shares(fn, opt, setup)
    return row


def profile_shares(fn: Any, opt: torch.optim.Optimizer, setup: Setup, steps: int = 5) -> dict[str, float]:
    """Share of the self CPU time of the top operators over ``steps`` further steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(steps):
            batch = recipe_batch(setup, 10_000 + step, 0)
            opt.zero_grad(set_to_none=True)
            loss, _ = fn(batch)
            loss.backward()
            opt.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    shares = {e.key: round(e.self_cpu_time_total / total, 4) for e in events[:8]}
    print("eager profile, share of CPU time: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()), flush=True)
    return shares


@dataclass(frozen=True, kw_only=True)
class SpeedArgs:
    data: str = field(metadata={"help": "demos of the id split written by `rlrc-sim demos` (the grounding questions "
                                        "need their episode seeds), comma-separated"})
    steps: int = field(default=30, metadata={"help": "timed steps per mode"})
    warmup: int = field(default=15, metadata={"help": "untimed steps first (compile happens in the first)"})
    modes: str = field(default=",".join(MODES), metadata={"help": f"comma-separated, of {', '.join(MODES)}"})
    preset: str = field(default="base-128", metadata={"help": "model preset (`rlrc-export presets`)"})
    width: int = field(default=48, metadata={"help": "compile mode: fixed text width in tokens"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    profile: bool = field(default=True, metadata={"help": "profile the eager mode"})
    json: str | None = field(default=None, metadata={"help": "write the results here"})

    @property
    def mode_list(self) -> list[str]:
        return [m for m in self.modes.split(",") if m]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mode_list) - set(MODES))
        if unknown or not self.mode_list:
            raise ConfigError(f"--modes={self.modes!r}: unknown or no mode {unknown}; choose from {list(MODES)}")
        if min(self.steps, self.warmup, self.width, self.threads) < 1:
            raise ConfigError("--steps, --warmup, --width and --threads must be >= 1")


def run(args: SpeedArgs, argv: list[str] | None = None) -> str:
    torch.set_num_threads(args.threads)
    config = preset_config(get_preset(args.preset), norm_stats={})
    with tempfile.TemporaryDirectory() as tok_dir:  # the tokenizer is read into memory
        write_tokenizer(Path(tok_dir), model_max_length=config.llm.max_position_embeddings)
        transforms = Transforms.for_new_model(config, tok_dir)
    recipe = TabletopRecipe(TabletopRecipeConfig(ground_frac=GROUND_FRAC, ground_task=True))
    data = load_demos([p for p in args.data.split(",") if p], transforms, None, None, recipe.read_demo)
    model = new_model(args.preset, data.norm_stats)
    recipe.prepare(model, data, transforms)
    setup = Setup(data, recipe, demo_collator(data, transforms, model, 6), transforms, config.llm.pad_token_id or 0)
    started = Started()
    rows = [run_mode(m, setup, args) for m in args.mode_list]
    if args.json:
        write_report(args.json, {"preset": args.preset, "batch": BATCH, "grounding_rows": recipe.rows(BATCH),
                                 "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows},
                     started, command_line(PROG, argv))
    base = rows[0]["steps_per_s"]
    return ", ".join(f"{r['mode']} {r['steps_per_s'] / base:.2f}x" for r in rows) + f" (step/s against {rows[0]['mode']})"


def main(argv: list[str] | None = None) -> int:
    return run_subcommands(PROG, __doc__, {"": Subcommand(SpeedArgs, lambda a: run(a, argv))}, argv)


if __name__ == "__main__":
    sys.exit(main())
