"""Why do pick/place/stack/push episodes fail? Classify each episode by what the objects did.

    python -m research.outcomes classify --policy CKPT [--family stack|place|push|pick] [--split id]
        [--episodes 100] [--seed 100000] [--json F]
    python -m research.outcomes bar-turns --files A.json,B.json,... [--json F]

``classify`` runs the policy (torch backend) through the same episodes `rlrc-eval` scores (same split, same
reset seeds, same action mapping) and puts every episode in one class. ``bar-turns`` reads several pick
files written by ``classify`` and asks whether a bar's pick succeeds less often the further the hand
must turn (below).

Place and stack, by which object left the table first:

    success                      the task's success test passed
    success after wrong block    passed, but the goal object was lifted before the target
    lifted goal first            the goal object (the block to stack on) rose before the target:
                                 the instruction's two colours were bound the wrong way round
    never lifted target          the target never rose LIFTED m above its start
    over-lift                    the target rose above OVER_LIFT m (the policy kept climbing)
    lifted target, failed place  everything else: the target was carried but not put down right

"Rose" means the body's centre went LIFTED m above where it started.

Push (`--family push`), by the way the block first moved (the side whose direction is nearest its
displacement once that passes MOVED m):

    success                      the task's success test passed
    pushed the wrong way         the block first moved towards another side than the instructed one:
                                 the side word was not followed
    never moved                  the block never moved MOVED m from its start
    off the table plane          the block ended lifted or tipped (centre not at rest height)
    pushed short                 the right way, but not far enough

Pick (`--family pick`), by what the hand did to the named object and the distractor:

    success                      the task's success test passed
    lifted distractor first      the other object rose before the target: the wrong object was taken
    never touched target         no finger ever touched the target
    touched, never pinched       a finger touched it but both never closed on it
    pinched, never lifted        both fingers closed on it but it never rose LIFTED m
    lifted target, dropped/low   it rose but did not reach (or stay at) the success height

Pick episodes also record the target's kind (`kind`: block, cylinder or bar), so failures can be
counted per object shape, and for blocks and bars whether the policy's first turn of the hand goes the way the
expert's first turn goes (`first_turn_agrees`: the signs of their first dyaw; None for cylinders, which need no
turn): the summary counts agreements for bars, where a policy that does not read the orientation scores chance.

Every failed episode also records `still_at_end`: how many steps at its end moved the hand less than
STILL m each. A policy that stalls (holds still, the frame stays the same, so does the action) shows a
long run of them; the summary line counts failed episodes that end with 10 or more.

Place and stack episodes also record where the target ended: `end_offset_m` (its centre's distance
in the table plane from the goal's), `end_height_m` (its centre above where it would rest on the
goal) and `held_at_end` (both fingers on it). A "lifted target, failed place" episode that ends held,
within HOVER_OFFSET of the goal and lower than HOVER_HEIGHT above its resting place carried the block
to the goal and never let go; the summary counts those.
``bar-turns``: for every bar episode of each pick file, the turn the scripted expert makes before it
grasps is redrawn from the episode's seed: the rotation from the hand's yaw at reset (0) to the nearest
grasp yaw, |turn| in [0, 90] degrees (``sim.recipes.grounding.orientation_answer``). It reports the
success share per |turn| bin over all files and, per episode seed, in how many of the files it
succeeded: a seed that fails in every run is hard for these policies, one that succeeds in some runs
and not others is spread.
"""
from __future__ import annotations

import collections
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlrc_runtime.cli_args import Subcommand, run_subcommands
from rlrc_runtime.errors import ConfigError, DatasetError
from sim import scene
from sim.evaluate import to_env_action
from sim.recipes.grounding import orientation_answer, redraw_task
from sim.tasks import SIDES
from research.report import Started, command_line, write_report

PROG = "research.outcomes"
SCHEMA = "rlrc-place-outcomes/1"

LIFTED = 0.03
"""m an object's centre must rise above its start to count as lifted."""
OVER_LIFT = 0.15
"""m above its start beyond which the target is counted as lifted too far."""
MOVED = 0.02
"""m a pushed block's centre must move (in the table plane) before its direction is read."""
STILL = 0.002
"""m per step under which the hand counts as holding still (`still_at_end`: such steps that end a failed episode)."""
HOVER_OFFSET = 0.025
"""m (table plane) from the goal within which a held target counts as over it (stack's success radius)."""
HOVER_HEIGHT = 0.03
"""m above its resting place on the goal under which a held target counts as put down but not let go."""


def still_steps(moves: list[float]) -> int:
    """How many of the last steps moved the hand less than STILL m each."""
    n = 0
    for m in reversed(moves):
        if m >= STILL:
            break
        n += 1
    return n


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


def classify_push(success: bool, first_side: str | None, side: str, on_table: bool) -> str:
    """One push episode's class from its success flag, the side the block first moved to and where it ended."""
    if success:
        return "success"
    if first_side is None:
        return "never moved"
    if first_side != side:
        return "pushed the wrong way"
    if not on_table:
        return "off the table plane"
    return "pushed short"


def classify_pick(success: bool, first: str | None, touched: bool, pinched: bool, max_rise: float) -> str:
    """One pick episode's class from its success flag, the first object lifted and what the fingers did."""
    if success:
        return "success"
    if first == "distractor":
        return "lifted distractor first"
    if max_rise > LIFTED:
        return "lifted target, dropped/low"
    if pinched:
        return "pinched, never lifted"
    if touched:
        return "touched, never pinched"
    return "never touched target"


def nearest_side(displacement: np.ndarray) -> str:
    """The side (sim.tasks.SIDES) whose unit direction is nearest an [dx, dy] displacement."""
    return max(SIDES, key=lambda name: float(np.dot(SIDES[name], displacement)))


class _PushWatch:
    """Per step of a push episode: the side the block first moved to."""

    def __init__(self, world) -> None:
        self.start = np.array(world.body_pos(world.task.target), dtype=float)
        self.first: str | None = None

    def __call__(self, world) -> None:
        shift = np.array(world.body_pos(world.task.target), dtype=float)[:2] - self.start[:2]
        if self.first is None and float(np.linalg.norm(shift)) > MOVED:
            self.first = nearest_side(shift)


class _LiftWatch:
    """Per step of a place/stack episode: which object rose first, and the target's highest rise."""

    def __init__(self, world) -> None:
        self.target_z0 = float(world.body_pos(world.task.target)[2])
        self.goal_z0 = float(world.body_pos(world.task.goal)[2])
        self.first: str | None = None
        self.max_rise = 0.0

    def __call__(self, world) -> None:
        rise = float(world.body_pos(world.task.target)[2]) - self.target_z0
        self.max_rise = max(self.max_rise, rise)
        if self.first is None and rise > LIFTED:
            self.first = "target"
        elif self.first is None and float(world.body_pos(world.task.goal)[2]) - self.goal_z0 > LIFTED:
            self.first = "goal"


class _PickWatch:
    """Per step of a pick episode: which object rose first, whether the fingers touched or pinched the target,
    and the target's highest rise."""

    def __init__(self, world) -> None:
        from sim.experts import make_expert

        task = world.task
        kind = task.placement(task.target).kind
        # The expert's first turn, read before any step (act() plans from the state, it does not step).
        self.expert_turn = float(make_expert(world).act()[5]) if kind in ("block", "bar") else None
        self.first_turn_agrees: bool | None = None
        self.target_z0 = float(world.body_pos(task.target)[2])
        others = [p.slot for p in task.placements if p.slot != task.target]
        self.others = {slot: float(world.body_pos(slot)[2]) for slot in others}
        self.first: str | None = None
        self.touched = self.pinched = False
        self.max_rise = 0.0

    def first_action(self, action: np.ndarray) -> None:
        if self.expert_turn is not None:
            self.first_turn_agrees = bool(np.sign(to_env_action(action)[5]) == np.sign(self.expert_turn))

    def __call__(self, world) -> None:
        target = world.task.target
        rise = float(world.body_pos(target)[2]) - self.target_z0
        self.max_rise = max(self.max_rise, rise)
        self.touched = self.touched or world.touching_fingers(target)
        self.pinched = self.pinched or world.pinched(target)
        if self.first is None and rise > LIFTED:
            self.first = "target"
        elif self.first is None and any(float(world.body_pos(s)[2]) - z0 > LIFTED for s, z0 in self.others.items()):
            self.first = "distractor"


def rollout(policy, env, seed: int, make_watch):
    """Roll the policy out from `reset(seed)` exactly as rlrc-eval steps it. `make_watch(world)` is built after
    the reset and called with the world after every step. Returns (last obs, watch, steps, success,
    `still_at_end`: 0 on success, else how many steps at the end moved the hand less than STILL)."""
    obs, _ = env.reset(seed=seed)
    world = env.unwrapped
    watch = make_watch(world)
    success, moves = False, []
    for step in range(world.config.episode_steps):
        action = policy.infer(obs["image"], obs["instruction"], None).action
        if step == 0 and hasattr(watch, "first_action"):
            watch.first_action(action)
        hand = np.array(world.ee_pos, dtype=float)
        obs, _, terminated, truncated, info = env.step(to_env_action(action))
        moves.append(float(np.linalg.norm(np.asarray(world.ee_pos) - hand)))
        watch(world)
        if terminated or truncated:
            success = bool(info.get("success", terminated))
            break
    return obs, watch, step + 1, success, 0 if success else still_steps(moves)


def run_push_episode(policy, env, seed: int) -> dict:
    """Roll the policy out from `reset(seed)` on a push task; the episode's class and what it is based on."""
    obs, watch, steps, success, still = rollout(policy, env, seed, _PushWatch)
    world = env.unwrapped
    side = world.task.side
    end = np.array(world.body_pos(world.task.target), dtype=float)
    on_table = abs(float(end[2] - watch.start[2])) < 0.01
    moved = float(np.dot(SIDES[side], (end - watch.start)[:2]))
    return {"seed": seed, "instruction": obs["instruction"], "side": side, "steps": steps,
            "success": success, "first_side": watch.first, "moved_along_side_m": round(moved, 4),
            "still_at_end": still, "outcome": classify_push(success, watch.first, side, on_table)}


def run_pick_episode(policy, env, seed: int) -> dict:
    """Roll the policy out from `reset(seed)` on a pick task; the episode's class and what it is based on."""
    obs, watch, steps, success, still = rollout(policy, env, seed, _PickWatch)
    world = env.unwrapped
    kind = world.task.placement(world.task.target).kind
    return {"seed": seed, "instruction": obs["instruction"], "kind": kind, "steps": steps, "success": success,
            "first_lifted": watch.first, "touched": watch.touched, "pinched": watch.pinched,
            "target_max_rise_m": round(watch.max_rise, 4), "still_at_end": still,
            "distractors": len(watch.others), "first_turn_agrees": watch.first_turn_agrees,
            "outcome": classify_pick(success, watch.first, watch.touched, watch.pinched, watch.max_rise)}


def run_episode(policy, env, seed: int) -> dict:
    """Roll the policy out from `reset(seed)`; the episode's class and what it is based on."""
    obs, watch, steps, success, still = rollout(policy, env, seed, _LiftWatch)
    world = env.unwrapped
    target = np.array(world.body_pos(world.task.target), dtype=float)
    goal = np.array(world.body_pos(world.task.goal), dtype=float)
    return {"seed": seed, "instruction": obs["instruction"], "steps": steps, "success": success,
            "first_lifted": watch.first, "target_max_rise_m": round(watch.max_rise, 4),
            "still_at_end": still, "end_offset_m": round(float(np.hypot(*(target - goal)[:2])), 4),
            "end_height_m": round(float(target[2]) - resting_z(world), 4),
            "held_at_end": world.pinched(world.task.target),
            "outcome": classify(success, watch.first, watch.max_rise)}


def resting_z(world) -> float:
    """Height of the target's centre when it rests on the goal (a plate for place, a block for stack)."""
    if world.config.family == "stack":
        return float(world.body_pos(world.task.goal)[2]) + 2 * scene.BLOCK_HALF
    return scene.PLATE_TOP + scene.BLOCK_HALF


def held_over_goal(episode: dict) -> bool:
    """A failed place/stack episode that ends with the target held just above the goal (never let go)."""
    return (not episode["success"] and episode["held_at_end"] and episode["end_offset_m"] < HOVER_OFFSET
            and episode["end_height_m"] < HOVER_HEIGHT)


BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 75.0), (75.0, 90.0))
"""|turn| bins in degrees (the last one closed); the tie between turning either way is at 90."""


def bar_turn_deg(split: str, seed: int) -> float:
    """|turn| in degrees from the hand's reset yaw (0) to the nearest grasp yaw of the pick episode's bar."""
    bars = [p for p in redraw_task("pick", split, seed).placements if p.kind == "bar"]
    if not bars:
        raise DatasetError(f"pick episode seed {seed} on {split!r} has no bar; was the file written by another "
                           "version of the task code? Rewrite it with `python -m research.outcomes classify`")
    return abs(float(orientation_answer("bar", bars[0].yaw, 0.0)[2])) * 90.0


def bar_turn_summary(files: list[Path]) -> dict[str, Any]:
    """Per-bin successes over all files' bar episodes, and per seed the number of files it succeeded in."""
    episodes = []
    for path in files:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read a pick outcome file ({exc})") from exc
        if data.get("family") != "pick" or "episodes" not in data:
            raise DatasetError(f"{path}: not a pick outcome file (family {data.get('family')!r}); write one with "
                               "`python -m research.outcomes classify --family pick --json F`")
        for e in data["episodes"]:
            if e["kind"] == "bar":
                episodes.append((int(e["seed"]), bar_turn_deg(data["split"], int(e["seed"])), bool(e["success"])))
    bins = []
    for lo, hi in BINS:
        inside = [s for _, t, s in episodes if lo <= t < hi or (hi == BINS[-1][1] and t == hi)]
        bins.append({"turn_deg": [lo, hi], "episodes": len(inside), "successes": sum(inside)})
    seeds: dict[int, dict[str, Any]] = {}
    for seed, turn, success in episodes:
        row = seeds.setdefault(seed, {"seed": seed, "turn_deg": round(turn, 1), "runs": 0, "succeeded": 0})
        row["runs"] += 1
        row["succeeded"] += int(success)
    return {"files": [str(p) for p in files], "bins": bins, "seeds": sorted(seeds.values(), key=lambda r: r["seed"])}


# --------------------------------------------------------------------------- command line


@dataclass(frozen=True, kw_only=True)
class ClassifyArgs:
    policy: str = field(metadata={"help": "checkpoint directory (torch backend)"})
    family: str = field(default="stack", metadata={
        "help": "stack or place (classed by the first object lifted), push (by the way it moved) or pick (by what "
                "the fingers did to the target)", "choices": ["stack", "place", "push", "pick"]})
    split: str = field(default="id", metadata={"help": "benchmark split"})
    episodes: int = field(default=100, metadata={"help": "episodes, reset seeds from --seed"})
    seed: int = field(default=100000, metadata={"help": "first reset seed (rlrc-eval's default)"})
    image_size: int = field(default=128, metadata={"help": "rendered frame side (rlrc-eval's default)"})
    json: str | None = field(default=None, metadata={"help": "write the per-episode table and counts here"})

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"--episodes={self.episodes} must be >= 1")
        if self.family not in ("stack", "place", "push", "pick"):
            raise ConfigError(f"--family={self.family!r}: expected stack, place, push or pick")


@dataclass(frozen=True, kw_only=True)
class BarTurnsArgs:
    files: str = field(metadata={"help": "pick outcome JSONs written by `classify --family pick`, comma-separated"})
    json: str | None = field(default=None, metadata={"help": "write the summary here"})

    @property
    def paths(self) -> list[Path]:
        return [Path(p) for p in self.files.split(",") if p]

    def __post_init__(self) -> None:
        if not self.paths:
            raise ConfigError("--files is empty; pass one or more pick outcome JSONs, comma-separated")


def run_classify(args: ClassifyArgs, argv: list[str] | None = None) -> str:
    from tqdm import tqdm

    from rlrc_runtime import load_policy
    from sim import make_env

    policy = load_policy(args.policy, backend="torch")
    env = make_env(suite="tabletop", family=args.family, split=args.split, seed=args.seed, image_size=args.image_size)
    started = Started()
    run = {"push": run_push_episode, "pick": run_pick_episode}.get(args.family, run_episode)
    try:
        episodes = [run(policy, env, seed)
                    for seed in tqdm(range(args.seed, args.seed + args.episodes), desc=args.family, unit="ep")]
    finally:
        env.close()
        policy.close()
    counts = collections.Counter(e["outcome"] for e in episodes)
    width = max(len(k) for k in counts)
    lines = [f"{outcome:<{width}}  {n:4d}/{len(episodes)}" for outcome, n in counts.most_common()]
    stalled = sum(e["still_at_end"] >= 10 for e in episodes)
    lines.append(f"failed episodes that end with the hand still for 10+ steps: {stalled}/{len(episodes)}")
    hovering = None
    if args.family == "pick":
        for kind in sorted({e["kind"] for e in episodes}):
            of_kind = [e for e in episodes if e["kind"] == kind]
            lines.append(f"{kind}: {sum(e['success'] for e in of_kind)}/{len(of_kind)} succeeded")
        bars = [e for e in episodes if e["kind"] == "bar"]
        lines.append(f"bar episodes whose first turn goes the expert's way: "
                     f"{sum(bool(e['first_turn_agrees']) for e in bars)}/{len(bars)}")
    elif args.family != "push":
        hovering = sum(held_over_goal(e) for e in episodes)
        lines.append(f"failed episodes that end holding the target just over the goal: {hovering}/{len(episodes)}")
    if args.json:
        write_report(args.json, {
            "schema": SCHEMA, "policy": args.policy, "family": args.family, "split": args.split, "seed": args.seed,
            "counts": dict(counts.most_common()), "lifted_m": LIFTED, "over_lift_m": OVER_LIFT, "moved_m": MOVED,
            "still_m": STILL, "stalled_10": stalled, "held_over_goal": hovering, "hover_offset_m": HOVER_OFFSET,
            "hover_height_m": HOVER_HEIGHT, "episodes": episodes}, started, command_line(f"{PROG} classify", argv))
    return "\n".join(lines)


def run_bar_turns(args: BarTurnsArgs, argv: list[str] | None = None) -> str:
    started = Started()
    out = bar_turn_summary(args.paths)
    lines = []
    for b in out["bins"]:
        share = b["successes"] / b["episodes"] if b["episodes"] else float("nan")
        lines.append(f"|turn| {b['turn_deg'][0]:>4.0f}-{b['turn_deg'][1]:<4.0f} deg: {b['successes']}/{b['episodes']} "
                     f"({share:.2f})")
    runs = max((r["runs"] for r in out["seeds"]), default=0)
    for k in range(runs + 1):
        turns = [r["turn_deg"] for r in out["seeds"] if r["succeeded"] == k and r["runs"] == runs]
        lines.append(f"bars that succeeded in {k} of {runs} runs: {len(turns)} (|turn| {sorted(round(t) for t in turns)})")
    if args.json:
        write_report(args.json, out, started, command_line(f"{PROG} bar-turns", argv))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    commands = {
        "classify": Subcommand(ClassifyArgs, lambda a: run_classify(a, argv),
                               "replay rlrc-eval's episodes and class each by what the objects did"),
        "bar-turns": Subcommand(BarTurnsArgs, lambda a: run_bar_turns(a, argv),
                                "bar pick success against the expert's turn, over several pick outcome files"),
    }
    return run_subcommands(PROG, __doc__, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
