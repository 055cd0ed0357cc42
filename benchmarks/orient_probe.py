"""Does the model see how a bar is turned, and does its first move use it? Ask it, on first frames of pick-bar scenes.

    python benchmarks/orient_probe.py --policy artifacts/base_policy/run/final [--episodes 100]
        [--seed 700000] [--json benchmarks/results/orient_probe.json]

A model trained with `rlrc-train --ground-orient` answers "How is the <colour> bar turned?" with four values in
[-1, 1] (`sim.grounding.orientation_answer`): sin and cos of the bar's yaw on its period (pi), the turn from the
hand to the nearest grasp yaw over pi/2, and the hand's yaw over pi. For each `id` pick scene whose target is a bar
(reset seeds from `--seed`, disjoint from the demo seeds of `benchmarks/base_policy.sh` and from rlrc-eval's),
on the first frame, greedily decoded, this compares

    answer  the model's four values with the simulator's (errors in degrees: the bar's yaw, the turn, the hand);
    action  the sign of the policy's first dyaw with the expert's (what `stack_outcomes.py` calls
            `first_turn_agrees`) and with the sign of the turn the model itself answered.

Reading: a model whose answers are right but whose first move is not "knows but does not act"; one whose answers
are at chance does not see the bar's orientation at all. Chance for the bar's yaw is a mean error of 45 degrees
(uniform yaws on a 180-degree period), and 0.5 for a sign.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.binding_probe import Asker  # noqa: E402
from benchmarks.probe_report import write_report  # noqa: E402
from rlrc_runtime import load_policy  # noqa: E402
from sim import make_env  # noqa: E402
from sim.evaluate import to_env_action  # noqa: E402
from sim.grounding import ORIENT_TEMPLATE, SYMMETRY, orientation_answer, redraw_task  # noqa: E402

BAR_PERIOD = SYMMETRY["bar"]


class OrientAsker(Asker):
    """Greedy answers of one checkpoint to "How is the <name> turned?": four values in [-1, 1]."""

    TEMPLATE = ORIENT_TEMPLATE

    def __call__(self, image: np.ndarray, name: str) -> np.ndarray:
        pixels = torch.from_numpy(self.transform(image))
        with torch.inference_mode():
            patches = self.model.embed_image(pixels)
            tokens = self.model.generate(patches, torch.from_numpy(self.tokenizer(name))[None], 4)[0].numpy()
        return self.actions.decode(tokens[None])[0].astype(np.float64)


def bar_seeds(first: int, count: int, split: str = "id") -> list[int]:
    """The first `count` reset seeds from `first` whose pick task (in `split`) asks for a bar."""
    seeds, seed = [], first
    while len(seeds) < count:
        task = redraw_task("pick", split, seed)
        if task.placement(task.target).kind == "bar":
            seeds.append(seed)
        seed += 1
    return seeds


def yaw_error_deg(answer: np.ndarray, truth: np.ndarray) -> float:
    """Angle between the answered and the true bar yaw (from their sin/cos on the period), degrees in [0, 90]."""
    phase = math.atan2(answer[0], answer[1]) - math.atan2(truth[0], truth[1])
    phase = (phase + math.pi) % (2 * math.pi) - math.pi
    return abs(phase) * BAR_PERIOD / (2 * math.pi) * 180 / math.pi


def compare(answer: np.ndarray, truth: np.ndarray, action_dyaw: float, expert_dyaw: float) -> dict[str, float | bool]:
    """One scene's row: answer errors (degrees) and which ways the first action turns."""
    return {
        "yaw_error_deg": yaw_error_deg(answer, truth),
        "turn_error_deg": abs(float(answer[2] - truth[2])) * BAR_PERIOD / 2 * 180 / math.pi,
        "hand_error_deg": abs(float(answer[3] - truth[3])) * 180.0,
        "turn_sign_right": bool(np.sign(answer[2]) == np.sign(truth[2])),
        "action_agrees_expert": bool(np.sign(action_dyaw) == np.sign(expert_dyaw)),
        "action_agrees_answer": bool(np.sign(action_dyaw) == np.sign(answer[2])),
    }


def probe_scene(asker, act, env, seed: int) -> dict:
    """Reset to `seed`, ask about its bar and take the policy's first action; `act(image, instruction)` -> [7]."""
    from sim.experts import make_expert

    obs, _ = env.reset(seed=seed)
    world = env.unwrapped
    target = world.task.placement(world.task.target)
    truth = orientation_answer("bar", float(world.body_yaw(target.slot)), float(world.ee_euler[2]))
    expert_dyaw = float(make_expert(world).act()[5])  # act() plans from the state; it does not step
    answer = asker(obs["image"], f"{target.colour} bar")
    action_dyaw = float(to_env_action(act(obs["image"], obs["instruction"]))[5])
    return {"seed": seed, "truth": truth.round(4).tolist(), "answer": answer.round(4).tolist(),
            "action_dyaw": action_dyaw, "expert_dyaw": expert_dyaw,
            **compare(answer, truth, action_dyaw, expert_dyaw)}


def summarise(rows: list[dict]) -> dict[str, float]:
    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    return {"scenes": len(rows), "mean_yaw_error_deg": mean("yaw_error_deg"),
            "within_15_deg": float(np.mean([r["yaw_error_deg"] < 15 for r in rows])),
            "mean_turn_error_deg": mean("turn_error_deg"), "mean_hand_error_deg": mean("hand_error_deg"),
            "turn_sign_right": mean("turn_sign_right"), "action_agrees_expert": mean("action_agrees_expert"),
            "action_agrees_answer": mean("action_agrees_answer")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="checkpoint directory trained with --ground-orient")
    ap.add_argument("--episodes", type=int, default=100, help="pick-bar scenes to ask about")
    ap.add_argument("--seed", type=int, default=700_000, help="first reset seed searched for bar scenes")
    ap.add_argument("--image-size", type=int, default=128, help="rendered frame side, pixels (as rlrc-eval)")
    ap.add_argument("--json", help="write the summary and every scene here")
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error(f"--episodes={args.episodes} must be >= 1")
    torch.set_num_threads(2)
    asker = OrientAsker(args.policy)
    policy = load_policy(args.policy, backend="torch")

    def act(image, instruction):
        return policy.infer(image, instruction, None).action

    env = make_env(family="pick", split="id", image_size=args.image_size)
    t0 = time.perf_counter()
    try:
        rows = [probe_scene(asker, act, env, seed) for seed in bar_seeds(args.seed, args.episodes)]
    finally:
        env.close()
    s = summarise(rows)
    print(f"bar yaw: mean error {s['mean_yaw_error_deg']:.1f} deg (chance 45), within 15 deg {s['within_15_deg']:.2f}")
    print(f"turn: sign right {s['turn_sign_right']:.2f}, mean error {s['mean_turn_error_deg']:.1f} deg; "
          f"hand yaw: mean error {s['mean_hand_error_deg']:.1f} deg")
    print(f"first action's turn: the expert's way {s['action_agrees_expert']:.2f}, "
          f"the way of its own answer {s['action_agrees_answer']:.2f}")
    if args.json:
        write_report(args.json, {"policy": str(args.policy), "split": "id", "family": "pick", "seed": args.seed,
                                 "episodes": args.episodes, "summary": s, "scenes": rows}, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
