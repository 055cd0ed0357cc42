"""Why do place/stack episodes fail? Classify each episode by which object left the table first.

    python benchmarks/stack_outcomes.py --policy artifacts/base_policy/run/final [--family stack]
        [--split id] [--episodes 100] [--seed 100000] [--json benchmarks/results/stack_outcomes.json]

Runs the policy (torch backend) through the same episodes `rlrc-eval` scores (same split, same
reset seeds) and puts every episode in one class:

    success                      the task's success test passed
    success after wrong block    passed, but the goal object was lifted before the target
    lifted goal first            the goal object (the block to stack on) rose before the target:
                                 the instruction's two colours were bound the wrong way round
    never lifted target          the target never rose LIFTED m above its start
    over-lift                    the target rose above OVER_LIFT m (the policy kept climbing)
    lifted target, failed place  everything else: the target was carried but not put down right

"Rose" means the body's centre went LIFTED m above where it started. Reading of the numbers:
benchmarks/results/eval_base_attempt7_id.md and eval_base_id.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlrc_runtime import load_policy  # noqa: E402
from sim import make_env  # noqa: E402
from sim.evaluate import to_env_action  # noqa: E402

LIFTED = 0.03
"""m an object's centre must rise above its start to count as lifted."""
OVER_LIFT = 0.15
"""m above its start beyond which the target is counted as lifted too far."""


def classify(success: bool, first: str | None, max_rise: float) -> str:
    """One episode's class from its success flag, the first object lifted and the target's highest rise."""
    if success:
        return "success after wrong block" if first == "goal" else "success"
    if first == "goal":
        return "lifted goal first"
    if first is None:
        return "never lifted target"
    if max_rise > OVER_LIFT:
        return "over-lift"
    return "lifted target, failed place"


def run_episode(policy, env, seed: int) -> dict:
    """Roll the policy out from `reset(seed)`; the episode's class and what it is based on."""
    obs, _ = env.reset(seed=seed)
    world = env.unwrapped
    task = world.task
    target_z0 = float(world.body_pos(task.target)[2])
    goal_z0 = float(world.body_pos(task.goal)[2])
    first, max_rise, success = None, 0.0, False
    for step in range(world.config.episode_steps):
        action = policy.infer(obs["image"], obs["instruction"], None).action
        obs, _, terminated, truncated, info = env.step(to_env_action(action))  # exactly as rlrc-eval steps
        rise = float(world.body_pos(task.target)[2]) - target_z0
        max_rise = max(max_rise, rise)
        if first is None and rise > LIFTED:
            first = "target"
        elif first is None and float(world.body_pos(task.goal)[2]) - goal_z0 > LIFTED:
            first = "goal"
        if terminated or truncated:
            success = bool(info.get("success", terminated))
            break
    return {"seed": seed, "instruction": obs["instruction"], "steps": step + 1, "success": success,
            "first_lifted": first, "target_max_rise_m": round(max_rise, 4),
            "outcome": classify(success, first, max_rise)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="checkpoint directory (torch backend)")
    parser.add_argument("--family", default="stack", choices=("stack", "place"), help="a family with a goal object")
    parser.add_argument("--split", default="id")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=100000, help="first reset seed (rlrc-eval's default)")
    parser.add_argument("--image-size", type=int, default=128, help="rendered frame side (rlrc-eval's default)")
    parser.add_argument("--json", default=None, help="write the per-episode table and counts here")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    policy = load_policy(args.policy, backend="torch")
    env = make_env(suite="tabletop", family=args.family, split=args.split, seed=args.seed, image_size=args.image_size)
    start = time.perf_counter()
    episodes = [run_episode(policy, env, seed)
                for seed in tqdm(range(args.seed, args.seed + args.episodes), desc=args.family, unit="ep")]
    counts = collections.Counter(e["outcome"] for e in episodes)
    width = max(len(k) for k in counts)
    for outcome, n in counts.most_common():
        print(f"{outcome:<{width}}  {n:4d}/{len(episodes)}")
    if args.json:
        report = {"schema": "rlrc-place-outcomes/1", "policy": args.policy, "family": args.family,
                  "split": args.split, "seed": args.seed, "counts": dict(counts.most_common()),
                  "lifted_m": LIFTED, "over_lift_m": OVER_LIFT, "wall_s": round(time.perf_counter() - start, 1),
                  "machine": platform.node() or "unknown", "date": time.strftime("%Y-%m-%d"),
                  "command": "python benchmarks/stack_outcomes.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  "episodes": episodes}
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
