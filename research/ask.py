"""Ask a trained policy what it knows, on the first frame of held-out scenes: three probes.

    python -m research.ask binding --policy CKPT [--family stack|place] [--split id] [--episodes 200] [--json F]
    python -m research.ask orient  --policy CKPT [--episodes 100] [--json F]
    python -m research.ask action  --policy CKPT [--family stack|push] [--episodes 100] [--json F]

``binding``: does the model know which object a word names? A model trained with grounding questions
(``rlrc-sim train --ground-frac``, sim/recipes/grounding.py) can be asked them at any time. For every
``reset(seed)`` of a two-object family (stack: two blocks; place: a block and a plate) it is asked,
greedily decoded:

    task    "Where is the object to move to <instruction>?"   right when nearer the target
    target  "Where is the <colour> <kind>?" of the target      right when nearer the target
    other   "Where is the <colour> <kind>?" of the other one   right when nearer the other object

and the probe reports, per question, the share answered nearer the right object (0.5 = the answers do
not depend on the words) and the mean distance to the right object in cm (from the answer's first two
tokens: table x, y).

``orient``: does the model see how a bar is turned, and does its first move use it? A model trained
with ``--ground-orient`` answers "How is the <colour> bar turned?" with four values in [-1, 1]
(``sim.recipes.grounding.orientation_answer``): sin and cos of the bar's yaw on its period (pi), the turn
from the hand to the nearest grasp yaw over pi/2, and the hand's yaw over pi. For each ``id`` pick scene
whose target is a bar this compares the answer with the simulator's (errors in degrees) and the sign of
the policy's first dyaw with the expert's and with the turn the model itself answered. Right answers
with a wrong first move mean "knows but does not act"; answers at chance (a mean yaw error of 45
degrees, 0.5 for a sign) mean it does not see the orientation.

``action``: does the first action follow the instruction's words? For every ``id`` scene with a
word-swapped counterpart (sim/recipes/counterfactual.py: stack -> the two colours swapped, push ->
each other side), the policy (Policy API, torch backend) is asked for its first action under the
scene's instruction and under each swapped one, and the scripted expert gives the right answer for
each. An answer is right when its translation is nearer the expert's for its own instruction than
the expert's for the other one; pairs whose two expert moves are the same are skipped.

    own        share right under the scene's instruction
    swapped    share right under the swapped instruction
    both       share of (scene, swap) pairs right under both: the action changes with the words

A policy that ignores the words gets at most one of each pair right: ``both`` near 0, ``own`` +
``swapped`` near 1.

Reset seeds start at 700000, disjoint from the demo seeds of benchmarks/base_policy.sh (0, 50000,
800000, 900000 onwards) and from rlrc-eval's (100000 onwards).
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from rlrc_runtime.cli_args import Subcommand, run_subcommands
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.transforms import Transforms
from sim.recipes.grounding import (ORIENT_TEMPLATE, QUERY_TEMPLATE, SYMMETRY, TASK_NAME, denormalise_answer,
                                   orientation_answer, redraw_task)
from research.report import Started, command_line, write_report

PROG = "research.ask"
QUESTIONS = ("task", "target", "other")
"""The binding probe's questions, in the order asked (see the module docstring)."""
BAR_PERIOD = SYMMETRY["bar"]
TIE_M = 0.002
"""Swap pairs whose two expert translations are closer than this (m) are skipped: no answer tells them apart."""


# --------------------------------------------------------------------------- asking a checkpoint


class Asker:
    """Greedy answers of one checkpoint to the grounding questions of ``template``, as action values in [-1, 1]."""

    def __init__(self, ckpt: str | Path, template: str) -> None:
        from export.checkpoint import load_model

        self.model, info = load_model(ckpt, require_norm_stats=False, device="cpu")
        self.model.eval()
        transforms = Transforms.from_checkpoint(ckpt, info.config)  # the runtime's own image and action transforms
        self.image = transforms.image
        self.action = transforms.action
        self.prompt = dataclasses.replace(transforms.prompt, template=template)

    def answers(self, image: np.ndarray, names: list[str], n_tokens: int) -> np.ndarray:
        """[Q, n_tokens] float64 answers about one frame [H, W, 3] uint8, one row per name."""
        pixels = torch.from_numpy(self.image(image))
        with torch.inference_mode():
            patches = self.model.embed_image(pixels)  # computed once for all the questions
            ids = [self.model.generate(patches, torch.from_numpy(self.prompt(n))[None], n_tokens)[0].numpy()
                   for n in names]
        return self.action.decode(np.stack(ids)).astype(np.float64)


class WhereAsker(Asker):
    """"Where is the <name>?" -> table (x, y) in metres."""

    def __init__(self, ckpt: str | Path) -> None:
        super().__init__(ckpt, QUERY_TEMPLATE)

    def __call__(self, image: np.ndarray, names: list[str]) -> np.ndarray:
        return denormalise_answer(self.answers(image, names, 2))  # [Q, 2]


class TurnAsker(Asker):
    """"How is the <name> turned?" -> the four orientation values in [-1, 1]."""

    def __init__(self, ckpt: str | Path) -> None:
        super().__init__(ckpt, ORIENT_TEMPLATE)

    def __call__(self, image: np.ndarray, name: str) -> np.ndarray:
        return self.answers(image, [name], 4)[0]  # [4]


# --------------------------------------------------------------------------- binding


def probe_episode(asker: Callable[[np.ndarray, list[str]], np.ndarray], env: Any, seed: int) -> dict[str, dict[str, float]]:
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
    out = {}
    for q, answer, right in zip(QUESTIONS, asker(obs["image"], names), rights):
        wrong = other.slot if right == target.slot else target.slot
        out[q] = {"right_m": float(np.linalg.norm(answer - xy[right])),
                  "wrong_m": float(np.linalg.norm(answer - xy[wrong]))}
    return out


def summarise_binding(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    summary = {}
    for q in QUESTIONS:
        right = np.array([r[q]["right_m"] for r in rows])
        wrong = np.array([r[q]["wrong_m"] for r in rows])
        summary[q] = {"nearer_right": float(np.mean(right < wrong)), "mean_right_cm": float(right.mean() * 100),
                      "mean_wrong_cm": float(wrong.mean() * 100)}
    return summary


# --------------------------------------------------------------------------- orientation


def bar_seeds(first: int, count: int, split: str = "id") -> list[int]:
    """The first ``count`` reset seeds from ``first`` whose pick task (in ``split``) asks for a bar."""
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


def compare_turn(answer: np.ndarray, truth: np.ndarray, action_dyaw: float, expert_dyaw: float) -> dict[str, Any]:
    """One scene's row: answer errors (degrees) and which ways the first action turns."""
    return {
        "yaw_error_deg": yaw_error_deg(answer, truth),
        "turn_error_deg": abs(float(answer[2] - truth[2])) * BAR_PERIOD / 2 * 180 / math.pi,
        "hand_error_deg": abs(float(answer[3] - truth[3])) * 180.0,
        "turn_sign_right": bool(np.sign(answer[2]) == np.sign(truth[2])),
        "action_agrees_expert": bool(np.sign(action_dyaw) == np.sign(expert_dyaw)),
        "action_agrees_answer": bool(np.sign(action_dyaw) == np.sign(answer[2])),
    }


def probe_bar_scene(asker: Callable[[np.ndarray, str], np.ndarray], act: Callable[[np.ndarray, str], np.ndarray],
                    env: Any, seed: int) -> dict[str, Any]:
    """Reset to ``seed``, ask about its bar and take the policy's first action (``act(image, instruction)`` -> [7])."""
    from sim.evaluate import to_env_action
    from sim.experts import make_expert

    obs, _ = env.reset(seed=seed)
    world = env.unwrapped
    target = world.task.placement(world.task.target)
    truth = orientation_answer("bar", float(world.body_yaw(target.slot)), float(world.ee_euler[2]))
    expert_dyaw = float(make_expert(world).act()[5])  # act() plans from the state; it does not step
    answer = asker(obs["image"], f"{target.colour} bar")
    action_dyaw = float(to_env_action(act(obs["image"], obs["instruction"]))[5])
    return {"seed": seed, "truth": truth.round(4).tolist(), "answer": np.asarray(answer).round(4).tolist(),
            "action_dyaw": action_dyaw, "expert_dyaw": expert_dyaw,
            **compare_turn(answer, truth, action_dyaw, expert_dyaw)}


def summarise_orient(rows: list[dict[str, Any]]) -> dict[str, float]:
    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    return {"scenes": len(rows), "mean_yaw_error_deg": mean("yaw_error_deg"),
            "within_15_deg": float(np.mean([r["yaw_error_deg"] < 15 for r in rows])),
            "mean_turn_error_deg": mean("turn_error_deg"), "mean_hand_error_deg": mean("hand_error_deg"),
            "turn_sign_right": mean("turn_sign_right"), "action_agrees_expert": mean("action_agrees_expert"),
            "action_agrees_answer": mean("action_agrees_answer")}


# --------------------------------------------------------------------------- first action under swapped words


def expert_action(env: Any, task: Any) -> np.ndarray:
    """The scripted expert's first action for ``task`` on the env's current (untouched) scene."""
    from sim.experts import make_expert

    world = env.unwrapped
    factual, world.task = world.task, task
    try:
        expert = make_expert(env)
        expert.reset()
        return expert.act()
    finally:
        world.task = factual


def probe_swaps(policy: Any, env: Any, seed: int) -> list[dict[str, float]]:
    """One row per swap of the scene: distances (m) of the policy's translation to both experts'."""
    from sim.evaluate import to_env_action
    from sim.recipes.counterfactual import swapped_tasks

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


def summarise_action(rows: list[dict[str, float]]) -> dict[str, float]:
    right = {k: np.array([r[f"{k}_right_m"] < r[f"{k}_wrong_m"] for r in rows]) for k in ("own", "swapped")}
    return {"pairs": len(rows), "own": float(right["own"].mean()), "swapped": float(right["swapped"].mean()),
            "both": float((right["own"] & right["swapped"]).mean())}


# --------------------------------------------------------------------------- command line


@dataclass(frozen=True, kw_only=True)
class ProbeArgs:
    policy: str = field(metadata={"help": "checkpoint directory"})
    episodes: int = field(default=100, metadata={"help": "scenes (reset seeds) to ask about"})
    seed: int = field(default=700_000, metadata={"help": "first reset seed"})
    image_size: int = field(default=128, metadata={"help": "rendered frame side, pixels (rlrc-eval's default)"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    json: str | None = field(default=None, metadata={"help": "write the summary and every row here (e.g. under "
                                                            "docs/experiments/results/ or artifacts/)"})

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.threads < 1:
            raise ConfigError(f"--episodes={self.episodes} and --threads={self.threads} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class BindingArgs(ProbeArgs):
    episodes: int = field(default=200, metadata={"help": "scenes (reset seeds) to ask about"})
    family: str = field(default="stack", metadata={"help": "two-object family", "choices": ["stack", "place"]})
    split: str = field(default="id", metadata={"help": "benchmark split (id scenes hold only the task's objects)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family not in ("stack", "place"):
            raise ConfigError(f"--family={self.family!r}: the binding probe needs a two-object family, stack or place")


@dataclass(frozen=True, kw_only=True)
class OrientArgs(ProbeArgs):
    pass


@dataclass(frozen=True, kw_only=True)
class ActionArgs(ProbeArgs):
    family: str = field(default="stack", metadata={"help": "family with word swaps", "choices": ["stack", "push"]})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family not in ("stack", "push"):
            raise ConfigError(f"--family={self.family!r}: only stack and push have word-swapped instructions")


def _rows(args: ProbeArgs, env_kwargs: dict[str, Any], seeds: Iterable[int],
          one: Callable[[Any, int], list[Any]]) -> tuple[list[Any], Started]:
    """Every row of ``one(env, seed)`` over ``seeds`` on one env, and when the work started."""
    from tqdm import tqdm

    from sim import make_env

    seeds = list(seeds)
    env = make_env(image_size=args.image_size, **env_kwargs)
    started = Started()
    try:
        rows = [row for seed in tqdm(seeds, desc=env_kwargs["family"], unit="scene") for row in one(env, seed)]
    finally:
        env.close()
    return rows, started


def _report(args: ProbeArgs, argv: list[str] | None, sub: str, fields: dict[str, Any], started: Started) -> None:
    if args.json:
        write_report(args.json, {"policy": str(args.policy), "seed": args.seed, "episodes": args.episodes, **fields},
                     started, command_line(f"{PROG} {sub}", argv))


def run_binding(args: BindingArgs, argv: list[str] | None = None) -> str:
    torch.set_num_threads(args.threads)
    asker = WhereAsker(args.policy)
    rows, started = _rows(args, {"family": args.family, "split": args.split},
                          range(args.seed, args.seed + args.episodes), lambda env, s: [probe_episode(asker, env, s)])
    summary = summarise_binding(rows)
    _report(args, argv, "binding", {"family": args.family, "split": args.split, "summary": summary,
                                    "episodes_detail": rows}, started)
    return "\n".join(f"{q:7s} nearer the right object {s['nearer_right']:.2f}   mean distance: right "
                     f"{s['mean_right_cm']:.1f} cm, other {s['mean_wrong_cm']:.1f} cm" for q, s in summary.items())


def run_orient(args: OrientArgs, argv: list[str] | None = None) -> str:
    from rlrc_runtime import load_policy

    torch.set_num_threads(args.threads)
    asker = TurnAsker(args.policy)
    policy = load_policy(args.policy, backend="torch")
    try:
        rows, started = _rows(args, {"family": "pick", "split": "id"}, bar_seeds(args.seed, args.episodes),
                              lambda env, s: [probe_bar_scene(asker, lambda im, ins: policy.infer(im, ins).action,
                                                              env, s)])
    finally:
        policy.close()
    s = summarise_orient(rows)
    _report(args, argv, "orient", {"family": "pick", "split": "id", "summary": s, "scenes": rows}, started)
    return (f"bar yaw: mean error {s['mean_yaw_error_deg']:.1f} deg (chance 45), within 15 deg {s['within_15_deg']:.2f}\n"
            f"turn: sign right {s['turn_sign_right']:.2f}, mean error {s['mean_turn_error_deg']:.1f} deg; "
            f"hand yaw: mean error {s['mean_hand_error_deg']:.1f} deg\n"
            f"first action's turn: the expert's way {s['action_agrees_expert']:.2f}, "
            f"the way of its own answer {s['action_agrees_answer']:.2f}")


def run_action(args: ActionArgs, argv: list[str] | None = None) -> str:
    from rlrc_runtime import load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, backend="torch")
    try:
        rows, started = _rows(args, {"family": args.family, "split": "id"},
                              range(args.seed, args.seed + args.episodes), lambda env, s: probe_swaps(policy, env, s))
    finally:
        policy.close()
    if not rows:
        raise ConfigError(f"--seed={args.seed} --episodes={args.episodes}: no {args.family} scene of these seeds has a "
                          "word swap that changes the expert's first move; ask about more --episodes")
    summary = summarise_action(rows)
    _report(args, argv, "action", {"family": args.family, "split": "id", "summary": summary, "pairs_detail": rows},
            started)
    return (f"{args.family}: {summary['pairs']} (scene, swap) pairs; first action nearer the right expert's: "
            f"own instruction {summary['own']:.2f}, swapped {summary['swapped']:.2f}, both {summary['both']:.2f}")


def main(argv: list[str] | None = None) -> int:
    commands = {
        "binding": Subcommand(BindingArgs, lambda a: run_binding(a, argv),
                              "where is the named object? (models trained with grounding questions)"),
        "orient": Subcommand(OrientArgs, lambda a: run_orient(a, argv),
                             "how is the bar turned, and does the first turn follow? (trained with --ground-orient)"),
        "action": Subcommand(ActionArgs, lambda a: run_action(a, argv),
                             "does the first action change when the instruction's words are swapped?"),
    }
    return run_subcommands(PROG, __doc__, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
