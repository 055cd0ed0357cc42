"""Does the model know which object a word names? Ask it, on first frames of held-out episodes.

    python benchmarks/binding_probe.py --policy artifacts/base_policy/run/final [--family stack]
        [--split id] [--episodes 200] [--seed 700000] [--json benchmarks/results/binding_probe.json]

A model trained with grounding questions (`rlrc-train --ground-frac`, sim/grounding.py) can be
asked them at any time. For every episode `reset(seed)` of a two-object family (stack: two
blocks; place: a block and a plate) this asks, on the first frame, greedily decoded:

    task    "Where is the object to move to <instruction>?"   right when nearer the target
    target  "Where is the <colour> <kind>?" of the target      right when nearer the target
    other   "Where is the <colour> <kind>?" of the other one   right when nearer the other object

and reports, per question, the share answered nearer the right object (0.5 = no binding, the
answers do not depend on the words) and the mean distance to the right object in cm. The seeds
(default from 700000) are disjoint from the demo seeds of `benchmarks/base_policy.sh` (0.., 50000..)
and from `rlrc-eval`'s (100000..). The answer uses the first two tokens (table x, y).
Reading: benchmarks/results/eval_base_attempt9_id.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.probe_report import write_report  # noqa: E402
from export.checkpoint import load_model  # noqa: E402
from rlrc_runtime.action import ActionTokenizer  # noqa: E402
from rlrc_runtime.preprocess import ImageTransform  # noqa: E402
from rlrc_runtime.prompt import PromptTokenizer  # noqa: E402
from sim import make_env  # noqa: E402
from sim.grounding import QUERY_TEMPLATE, TASK_NAME, denormalise_answer  # noqa: E402

QUESTIONS = ("task", "target", "other")


class Asker:
    """Greedy answers of one checkpoint to grounding questions, as table (x, y) in metres."""

    TEMPLATE = QUERY_TEMPLATE
    """The question's prompt; a subclass asks another question with the same model and tokenizers."""

    def __init__(self, ckpt: str | Path) -> None:
        self.model, info = load_model(ckpt, require_norm_stats=False, device="cpu")
        self.model.eval()
        config = info.config
        self.transform = ImageTransform.from_config(config)
        self.tokenizer = dataclasses.replace(PromptTokenizer.from_dir(ckpt), template=self.TEMPLATE)
        self.actions = ActionTokenizer(vocab_size=config.token_vocab_size, n_bins=config.n_action_bins)

    def __call__(self, image: np.ndarray, names: list[str]) -> np.ndarray:
        """[Q, 2] answers to "Where is the <name>?" for each name, about one image."""
        pixels = torch.from_numpy(self.transform(image))
        with torch.inference_mode():
            patches = self.model.embed_image(pixels)
            out = [self.model.generate(patches, torch.from_numpy(self.tokenizer(n))[None], 2)[0].numpy()
                   for n in names]
        return denormalise_answer(self.actions.decode(np.stack(out)))  # [Q, 2]: table x, y


def probe_episode(asker: Asker, env, seed: int) -> dict[str, dict[str, float]]:
    """Per question: distance (m) of the answer to the right object and to the other one."""
    obs, _ = env.reset(seed=seed)
    world = env.unwrapped
    task = world.task
    target = next(p for p in task.placements if p.slot == task.target)
    other = next(p for p in task.placements if p.slot != task.target)
    xy = {p.slot: world.body_pos(p.slot)[:2] for p in (target, other)}
    names = [TASK_NAME.format(instruction=task.instruction), f"{target.colour} {target.kind}",
             f"{other.colour} {other.kind}"]
    rights = [target.slot, target.slot, other.slot]
    answers = asker(obs["image"], names)
    out = {}
    for q, answer, right in zip(QUESTIONS, answers, rights):
        wrong = other.slot if right == target.slot else target.slot
        out[q] = {"right_m": float(np.linalg.norm(answer - xy[right])),
                  "wrong_m": float(np.linalg.norm(answer - xy[wrong]))}
    return out


def summarise(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    summary = {}
    for q in QUESTIONS:
        right = np.array([r[q]["right_m"] for r in rows])
        wrong = np.array([r[q]["wrong_m"] for r in rows])
        summary[q] = {"nearer_right": float(np.mean(right < wrong)), "mean_right_cm": float(right.mean() * 100),
                      "mean_wrong_cm": float(wrong.mean() * 100)}
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="checkpoint directory trained with --ground-frac")
    ap.add_argument("--family", default="stack", choices=["stack", "place"], help="two-object task family")
    ap.add_argument("--split", default="id", help="benchmark split (id scenes hold only the task's two objects)")
    ap.add_argument("--episodes", type=int, default=200, help="episodes (reset seeds) to ask about")
    ap.add_argument("--seed", type=int, default=700_000, help="first reset seed")
    ap.add_argument("--image-size", type=int, default=128, help="rendered frame side, pixels (as rlrc-eval)")
    ap.add_argument("--json", help="write the summary and every episode here")
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error(f"--episodes={args.episodes} must be >= 1")
    torch.set_num_threads(2)
    asker = Asker(args.policy)
    env = make_env(family=args.family, split=args.split, image_size=args.image_size)
    t0 = time.perf_counter()
    try:
        rows = [probe_episode(asker, env, args.seed + i) for i in range(args.episodes)]
    finally:
        env.close()
    summary = summarise(rows)
    for q, s in summary.items():
        print(f"{q:7s} nearer the right object {s['nearer_right']:.2f}   mean distance: right "
              f"{s['mean_right_cm']:.1f} cm, other {s['mean_wrong_cm']:.1f} cm")
    if args.json:
        write_report(args.json, {"policy": str(args.policy), "family": args.family, "split": args.split,
                                 "seed": args.seed, "episodes": args.episodes, "summary": summary,
                                 "episodes_detail": rows}, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
