"""Can the base-128 model learn the stack binding at all? Train on counterfactual pairs alone and test.

    python benchmarks/binding_fit.py --data artifacts/attempt13/demos_stack_1000.hdf5 \
        [--steps 800 --every 100 --pairs 32 --lr 7e-4] [--json benchmarks/results/binding_fit.json]
        [--preset base-128 --override '{"hidden_size": 256, "head_dim": 64}' --embed-std 0.5]
        [--attn-sup 1.0] [--attn-role 1.0]

Every batch is `--pairs` counterfactual pairs (sim/counterfactual.py) of stack demos: an untouched
frame with its own instruction and action, and the same frame with the two colours swapped and the
expert's action for that. Nothing else is trained, so the only way to lower the loss on a pair is
to act on the named block. The model is `rlrc-train`'s from-scratch base-128 (or `--preset` with
`--override` fields, to see which model dimensions bind) with the recipe's HL-Gauss targets,
sine-cosine position init and 6-px shifts. Demos are split by frame row: the first 85 % train, the
rest are held out.

Every `--every` steps, on 128 fixed training pairs and 128 held-out ones, the first two action
tokens (dx, dy) are decoded greedily (teacher-forced) for both rows of a pair, and a row counts as
right when they are nearer (L1, in bins) its own label than the other row's:

    own / swapped   share right under the recorded / the swapped instruction
    both            share of pairs right under both (the action follows the words)

A model that ignores the words gives the same tokens for both rows: own + swapped near 1, both near 0.
dy is predicted after the *label's* dx (teacher forcing), so dx_own / dx_swapped / dx_both score the first
token alone, on the pairs whose dx labels differ. `--score CHECKPOINT` scores a trained checkpoint (e.g. a
`PAIR_STEPS` stage of benchmarks/base_policy.sh) the same way, without training.

`--attn-sup` and `--attn-role` add rlrc-train's attention terms (export/attn_sup.py): colour word -> patches
of that colour (the first hop), and the position predicting the first action token -> the patches of the
block to move (head 0 of layer 1) and of the block it goes on. Each row of a pair gets its own roles (the
swapped row's are the recorded ones reversed). With the second term the attention is handed the answer,
so what is left to learn is reading the attended block's position into the action.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.attn_sup import AttentionSupervision, RoleSupervision  # noqa: E402
from export.model import OpenVLA, init_weights  # noqa: E402
from export.tiny import get_preset, preset_config  # noqa: E402
from export.tokenizer_gen import write_tokenizer  # noqa: E402
from export.train import ActionDataset, ActionLoss, load_dataset, make_batch, param_groups  # noqa: E402
from rlrc_runtime.action import ActionTokenizer  # noqa: E402
from rlrc_runtime.preprocess import ImageTransform  # noqa: E402
from rlrc_runtime.prompt import PromptTokenizer  # noqa: E402
from sim.tasks import COLOUR_NAMES  # noqa: E402


def one_colour(instruction: str) -> str:
    """`instruction` with its second colour word (sim.tasks.COLOUR_NAMES) replaced by 'other'."""
    words = instruction.split(" ")
    at = [i for i, w in enumerate(words) if w in COLOUR_NAMES]
    if len(at) >= 2:
        words[at[1]] = "other"
    return " ".join(words)


def pair_scores(model: OpenVLA, ds: ActionDataset, transform: ImageTransform, pairs: np.ndarray) -> dict[str, float]:
    """own / swapped / both shares (see the module docstring) of counterfactual pairs `pairs`."""
    config = model.config
    model.eval()
    batch = make_batch(ds, np.zeros(0, np.int64), transform, config.num_patches, config.llm.pad_token_id or 0,
                       config.llm.eos_token_id, None, 0, None, pairs)
    with torch.no_grad():
        hidden = model.hidden_states(batch.pixel_values, batch.input_ids)
        pred = model.language_model.lm_head(hidden[batch.label_rows, batch.label_pos]).argmax(-1)
    model.train()
    rows = batch.label_rows.numpy()
    first2 = lambda t: np.stack([t[rows == r][:2].numpy() for r in range(2 * len(pairs))]).astype(int)  # noqa: E731
    p, lab = first2(pred), first2(batch.labels)
    dist = lambda a, b: np.abs(a - b).sum(1)  # noqa: E731
    own = dist(p[0::2], lab[0::2]) < dist(p[0::2], lab[1::2])
    swapped = dist(p[1::2], lab[1::2]) < dist(p[1::2], lab[0::2])
    scores = {"own": float(own.mean()), "swapped": float(swapped.mean()), "both": float((own & swapped).mean())}
    # The first token alone (dx), on the pairs whose dx labels differ: no teacher-forced token before it.
    differs = lab[0::2, 0] != lab[1::2, 0]
    if differs.any():
        own_x = np.abs(p[0::2, 0] - lab[0::2, 0]) < np.abs(p[0::2, 0] - lab[1::2, 0])
        swapped_x = np.abs(p[1::2, 0] - lab[1::2, 0]) < np.abs(p[1::2, 0] - lab[0::2, 0])
        scores.update({"dx_pairs": int(differs.sum()), "dx_own": float(own_x[differs].mean()),
                       "dx_swapped": float(swapped_x[differs].mean()),
                       "dx_both": float((own_x & swapped_x)[differs].mean())})
    return scores


def score_checkpoint(path: str, data: str, seed: int) -> dict[str, dict[str, float]]:
    """pair_scores of a trained checkpoint on the same train / held-out pairs a fit on `data` scores."""
    from export.checkpoint import load_model

    model, info = load_model(path, device="cpu")
    config = info.config
    transform = ImageTransform.from_config(config)
    actions = ActionTokenizer(vocab_size=config.token_vocab_size, n_bins=config.n_action_bins)
    key = next(iter(config.norm_stats))  # labels in the checkpoint's own action scale
    ds = load_dataset([data], transform, PromptTokenizer.from_dir(path), actions, key, config.norm_stats,
                      counterfactuals=True)
    return {name: pair_scores(model, ds, transform, sel) for name, sel in probe_pairs(ds, seed).items()}


def split_pairs(ds: ActionDataset) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs (frames in the first 85 % of rows) and held-out ones (the rest)."""
    cut = int(0.85 * len(ds))
    return np.flatnonzero(ds.cf_image < cut), np.flatnonzero(ds.cf_image >= cut)


def probe_pairs(ds: ActionDataset, seed: int) -> dict[str, np.ndarray]:
    """128 fixed training pairs and 128 held-out ones (split_pairs)."""
    train_pairs, test_pairs = split_pairs(ds)
    rng = np.random.default_rng(seed + 1)
    sets = {"train": rng.choice(train_pairs, min(128, len(train_pairs)), replace=False),
            "held_out": rng.choice(test_pairs, min(128, len(test_pairs)), replace=False)}
    return {name: pairs for name, pairs in sets.items() if len(pairs)}  # a tiny file may hold no held-out pair


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="stack demos written by `rlrc-sim demos --families stack`")
    ap.add_argument("--steps", type=int, default=800, help="optimizer steps")
    ap.add_argument("--every", type=int, default=100, help="score every N steps")
    ap.add_argument("--pairs", type=int, default=32, help="counterfactual pairs per batch (two rows each)")
    ap.add_argument("--lr", type=float, default=7e-4, help="peak learning rate (100 warm-up steps, then flat)")
    ap.add_argument("--seed", type=int, default=0, help="init and sampling seed")
    ap.add_argument("--preset", default="base-128", help="model preset (export.tiny.PRESETS)")
    ap.add_argument("--override", default="{}",
                    help='JSON of preset fields to change, e.g. \'{"hidden_size": 256, "head_dim": 64}\'')
    ap.add_argument("--embed-std", type=float, default=None,
                    help="init std of the token embeddings (default: 0.02, as every other weight)")
    ap.add_argument("--one-colour", action="store_true",
                    help="diagnostic: replace the second colour word of every instruction by 'other' ('stack the red "
                         "block on the other block'), so binding is one colour lookup with no word order to read")
    ap.add_argument("--attn-sup", type=float, default=0.0,
                    help="weight of rlrc-train's --attn-sup term (colour word -> patches of that colour); 0 = off")
    ap.add_argument("--attn-role", type=float, default=0.0,
                    help="weight of rlrc-train's --attn-role term (first action position -> the block to move and "
                         "the block it goes on, each row of a pair with its own roles); 0 = off")
    ap.add_argument("--attn-role-tokens", type=int, default=1,
                    help="--attn-role at the positions predicting the first N action tokens (2 = dx and dy)")
    ap.add_argument("--score", metavar="CHECKPOINT",
                    help="train nothing: score this checkpoint's pairs (from rlrc-train) on --data's pairs and stop")
    ap.add_argument("--json", help="write the scores here")
    args = ap.parse_args(argv)
    if min(args.steps, args.every, args.pairs) < 1:
        ap.error("--steps, --every and --pairs must be >= 1")
    torch.set_num_threads(2)
    if args.score:
        report = {"schema": "rlrc-binding-fit-score/1", "checkpoint": args.score, "data": args.data,
                  "scores": score_checkpoint(args.score, args.data, args.seed), "date": time.strftime("%Y-%m-%d"),
                  "machine": f"{platform.node()} {platform.processor() or platform.machine()}"}
        for name, sc in report["scores"].items():
            print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in sc.items()), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        return 0
    try:
        preset = dataclasses.replace(get_preset(args.preset), **{
            k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.override).items()})
    except (TypeError, json.JSONDecodeError) as exc:
        ap.error(f"--override: {exc}")
    config = preset_config(preset, norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=args.seed, sincos_pos=True, embed_std=args.embed_std)
    transform = ImageTransform.from_config(config)
    with tempfile.TemporaryDirectory() as tok_dir:
        write_tokenizer(Path(tok_dir), model_max_length=config.llm.max_position_embeddings)
        tokenizer = PromptTokenizer.from_dir(tok_dir)
    actions = ActionTokenizer(vocab_size=config.token_vocab_size, n_bins=config.n_action_bins)
    ds = load_dataset([args.data], transform, tokenizer, actions, None, None, counterfactuals=True,
                      roles=args.attn_role > 0)
    if args.one_colour:
        ds.instructions = [one_colour(t) for t in ds.instructions]
        ds.prompts = [tokenizer(t) for t in ds.instructions]
    model.config = config.replace(norm_stats=ds.norm_stats)
    model.train()
    model.freeze_unused()
    train_pairs, test_pairs = split_pairs(ds)
    probe = probe_pairs(ds, args.seed)
    print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held out", flush=True)
    attn_sup = AttentionSupervision(model, transform, tokenizer) if args.attn_sup > 0 else None
    attn_role = RoleSupervision(model, transform, tokens=args.attn_role_tokens) if args.attn_role > 0 else None
    loss_fn = ActionLoss(model, (actions.first_action_token, actions.vocab_size), 2.0, attn_sup, args.attn_sup,
                         attn_role, args.attn_role)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rows, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        pick = train_pairs[torch.randint(0, len(train_pairs), (args.pairs,), generator=gen).numpy()]
        batch = make_batch(ds, np.zeros(0, np.int64), transform, config.num_patches, config.llm.pad_token_id or 0,
                           config.llm.eos_token_id, gen, 6, None, pick)
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / 100)
        opt.zero_grad(set_to_none=True)
        loss, stats = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            row = {"step": step, "loss": round(float(stats["losses/action_ce"]), 4),
                   **{k.split("/")[1]: round(float(v), 4) for k, v in stats.items() if k.startswith("losses/attn")},
                   **{name: pair_scores(model, ds, transform, sel) for name, sel in probe.items()},
                   "wall_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            terms = "".join(f"{k} {row[k]:.3f}  " for k in ("attn_sup", "attn_role") if k in row)
            print(f"step {step}: loss {row['loss']:.3f}  {terms}" + "  ".join(
                f"{name} own {s['own']:.2f} swapped {s['swapped']:.2f} both {s['both']:.2f}"
                for name, s in ((n, row[n]) for n in probe)), flush=True)
    if args.json:
        report = {"schema": "rlrc-binding-fit/1", "data": args.data, "options": vars(args),
                  "pairs": {"train": len(train_pairs), "held_out": len(test_pairs)}, "rows": rows,
                  "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                  "date": time.strftime("%Y-%m-%d")}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
