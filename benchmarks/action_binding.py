"""Does the policy's first action follow the instruction's words? Ask it twice per scene.

    python benchmarks/action_binding.py --policy artifacts/base_policy/run/final [--family stack]
        [--episodes 100] [--seed 700000] [--json benchmarks/results/action_binding.json]

For every `reset(seed)` of the `id` split with a word-swapped counterpart (sim/counterfactual.py:
stack -> the two colours swapped, push -> each other side), the policy (Policy API, torch backend)
is asked for its first action under the episode's own instruction and under each swapped one, and
the scripted expert gives the right answer for each. An answer is "right" when its translation
(dx, dy, dz) is nearer the expert's for its own instruction than the expert's for the other one. Pairs
whose two expert moves are the same (both clipped to the step limit in the same direction) are skipped.

    own        share right under the episode's instruction
    swapped    share right under the swapped instruction
    both       share of (scene, swap) pairs right under both: the action changes with the words

A policy that ignores the words answers both instructions alike, so it gets at most one of each
pair right: `both` near 0, `own` + `swapped` near 1. `both` near 1 is a bound policy. Seeds start
at 700000, disjoint from the demo seeds of `benchmarks/base_policy.sh` and from rlrc-eval's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.probe_report import write_report  # noqa: E402
from sim import make_env  # noqa: E402
from sim.counterfactual import swapped_tasks  # noqa: E402
from sim.evaluate import to_env_action  # noqa: E402
from sim.experts import make_expert  # noqa: E402


TIE_M = 0.002
"""Pairs whose two expert translations are closer than this (m) are skipped: no answer could tell them apart."""


def expert_action(env, task) -> np.ndarray:
    """The scripted expert's first action for `task` on the env's current (untouched) scene."""
    world = env.unwrapped
    factual, world.task = world.task, task
    try:
        expert = make_expert(env)
        expert.reset()
        return expert.act()
    finally:
        world.task = factual


def probe_scene(policy, env, seed: int) -> list[dict[str, float]]:
    """One row per swap of the scene: distances (m) of the policy's translation to both experts'."""
    obs, _ = env.reset(seed=seed)
    task = env.unwrapped.task
    rows = []
    for swapped in swapped_tasks(task):
        expert = {"own": expert_action(env, task)[:3], "swapped": expert_action(env, swapped)[:3]}
        if np.linalg.norm(expert["own"] - expert["swapped"]) < TIE_M:
            continue  # both moves saturate the same way: this scene cannot tell a bound policy from a deaf one
        row: dict[str, float] = {"seed": seed}
        for name, instruction in (("own", task.instruction), ("swapped", swapped.instruction)):
            move = to_env_action(policy.infer(obs["image"], instruction).action)[:3]
            other = "swapped" if name == "own" else "own"
            row[f"{name}_right_m"] = float(np.linalg.norm(move - expert[name]))
            row[f"{name}_wrong_m"] = float(np.linalg.norm(move - expert[other]))
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    right = {k: np.array([r[f"{k}_right_m"] < r[f"{k}_wrong_m"] for r in rows]) for k in ("own", "swapped")}
    return {"pairs": len(rows), "own": float(right["own"].mean()), "swapped": float(right["swapped"].mean()),
            "both": float((right["own"] & right["swapped"]).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="checkpoint or bundle directory")
    ap.add_argument("--family", default="stack", choices=["stack", "push"], help="family with word swaps")
    ap.add_argument("--episodes", type=int, default=100, help="scenes (reset seeds) to ask about")
    ap.add_argument("--seed", type=int, default=700_000, help="first reset seed")
    ap.add_argument("--image-size", type=int, default=128, help="rendered frame side, pixels (as rlrc-eval)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", help="write the summary and every pair here")
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error(f"--episodes={args.episodes} must be >= 1")
    import torch

    from rlrc_runtime import load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, backend="torch")
    env = make_env(family=args.family, split="id", image_size=args.image_size)
    t0 = time.perf_counter()
    try:
        rows = [row for i in range(args.episodes) for row in probe_scene(policy, env, args.seed + i)]
    finally:
        env.close()
        policy.close()
    if not rows:
        print(f"no scene of seeds {args.seed}..{args.seed + args.episodes - 1} has a swap in the id split")
        return 1
    summary = summarise(rows)
    print(f"{args.family}: {summary['pairs']} (scene, swap) pairs; first action nearer the right expert's: "
          f"own instruction {summary['own']:.2f}, swapped {summary['swapped']:.2f}, both {summary['both']:.2f}")
    if args.json:
        write_report(args.json, {"policy": str(args.policy), "family": args.family, "split": "id",
                                 "seed": args.seed, "episodes": args.episodes, "summary": summary,
                                 "pairs_detail": rows}, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
