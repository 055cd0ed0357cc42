"""Where the recipe's training step spends its time on this CPU, and whether torch.compile or another
attention kernel buys steps.

    python benchmarks/train_step_speed.py --data artifacts/base_policy/demos_id_2000.hdf5 \
        [--steps 30 --warmup 15] [--modes eager,sdpa_math,compile] [--json out.json]

One step is `rlrc-train`'s recipe step: base-128 from scratch, a batch of 64 rows (51 demo frames and 13
grounding questions, `--ground-frac 0.2 --ground-task`), HL-Gauss targets (`--label-sigma 2`), 6-px shifts,
backward, gradient clipping and AdamW. Modes:

    eager       what rlrc-train runs
    sdpa_math   the same, with scaled_dot_product_attention forced to its plain (math) kernel
    compile     torch.compile of the loss module (inductor), the text padded to a fixed width so one
                graph serves every batch; the compile time is reported apart
    target_head `rlrc-train --head-rows targets`: only the 257 target rows of the lm_head are computed
                (the others are zero, so the softmax stays exact)

Each mode starts from the same initial weights and draws the same batches, so the losses printed
must agree to a few digits (a mode that changes the result is not a speed-up); target_head starts from
those weights with the non-target head rows zeroed, so its loss differs from the first step on.
--preset times another model (e.g. base-96, fewer image tokens). The eager mode is also
profiled (torch.profiler, the same steps) and its share of time per operator is reported.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.model import OpenVLA, init_weights  # noqa: E402
from export.tiny import get_preset, preset_config  # noqa: E402
from export.tokenizer_gen import write_tokenizer  # noqa: E402
from export.train import (ActionDataset, ActionLoss, Batch, load_dataset, make_batch, param_groups,  # noqa: E402
                          target_head_rows)
from rlrc_runtime.action import ActionTokenizer  # noqa: E402
from rlrc_runtime.preprocess import ImageTransform  # noqa: E402
from rlrc_runtime.prompt import PromptTokenizer  # noqa: E402

MODES = ("eager", "sdpa_math", "compile", "target_head")
BATCH, QUERIES = 64, 13  # the recipe's batch and its 20 % grounding questions


def recipe_batch(ds: ActionDataset, transform: ImageTransform, model: OpenVLA, step: int, width: int) -> Batch:
    """The batch of `step` (same draw in every mode); text right-padded to `width` when > 0."""
    config = model.config
    gen = torch.Generator().manual_seed(step)
    idx = torch.randint(0, len(ds), (BATCH - QUERIES,), generator=gen).numpy()
    queries = torch.randint(0, len(ds.query_image), (QUERIES,), generator=gen).numpy()
    batch = make_batch(ds, idx, transform, config.num_patches, config.llm.pad_token_id or 0, config.llm.eos_token_id,
                       gen, 6, queries)
    if width:
        if batch.input_ids.shape[1] > width:
            raise SystemExit(f"a batch is {batch.input_ids.shape[1]} tokens wide, more than --width {width}")
        ids = torch.full((batch.input_ids.shape[0], width), config.llm.pad_token_id or 0, dtype=torch.long)
        ids[:, : batch.input_ids.shape[1]] = batch.input_ids
        batch.input_ids = ids  # pads after EOS: the causal mask keeps them out of every supervised position
    return batch


def run_mode(mode: str, ds: ActionDataset, transform: ImageTransform, actions: ActionTokenizer, args) -> dict:
    config = preset_config(get_preset(args.preset), norm_stats={}).replace(norm_stats=ds.norm_stats)
    model = OpenVLA(config)
    init_weights(model, seed=0, sincos_pos=True)
    model.train()
    model.freeze_unused()
    action_ids = (actions.first_action_token, actions.vocab_size)
    rows = target_head_rows(model, action_ids, config.llm.eos_token_id, None) if mode == "target_head" else None
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
            batch = recipe_batch(ds, transform, model, step, width)
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
        row["profile"] = profile_shares(fn, opt, ds, transform, model)
    return row


def profile_shares(fn, opt, ds: ActionDataset, transform: ImageTransform, model: OpenVLA, steps: int = 5) -> dict:
    """Share of the self CPU time of the top operators over `steps` further steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(steps):
            batch = recipe_batch(ds, transform, model, 10_000 + step, 0)
            opt.zero_grad(set_to_none=True)
            loss, _ = fn(batch)
            loss.backward()
            opt.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    shares = {e.key: round(e.self_cpu_time_total / total, 4) for e in events[:8]}
    print("eager profile, share of CPU time: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()), flush=True)
    return shares


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="demos of the id split written by `rlrc-sim demos` (grounding needs "
                                                   "their episode seeds)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps first (compile happens in the first)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--preset", default="base-128", help="model preset (export/tiny.py); the recipe's is base-128")
    ap.add_argument("--width", type=int, default=48, help="compile mode: fixed text width in tokens")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (rlrc-train's default on this machine)")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the eager profile")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    if min(args.steps, args.warmup) < 1:
        ap.error("--steps and --warmup must be >= 1")
    torch.set_num_threads(args.threads)
    config = preset_config(get_preset(args.preset), norm_stats={})
    transform = ImageTransform.from_config(config)
    with tempfile.TemporaryDirectory() as tok_dir:
        write_tokenizer(Path(tok_dir), model_max_length=config.llm.max_position_embeddings)
        tokenizer = PromptTokenizer.from_dir(tok_dir)
    actions = ActionTokenizer(vocab_size=config.token_vocab_size, n_bins=config.n_action_bins)
    ds = load_dataset([args.data], transform, tokenizer, actions, None, None, grounding=True, task_queries=True)
    rows = [run_mode(m, ds, transform, actions, args) for m in modes]
    out = {"command": "python benchmarks/train_step_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
           f"torch {torch.__version__}", "preset": args.preset, "batch": BATCH, "grounding_rows": QUERIES, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
