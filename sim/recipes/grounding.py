"""Grounding queries for co-training: "where is the {colour} {object}?" answered from privileged state.

A VLA trained from scratch on a few thousand demonstrations learns slowly to *find* the object an
instruction names: the only signal linking a colour word to a patch of the image is the action
loss, which mixes it with where the hand is and what phase the task is in. OpenVLA's towers come
pretrained and RT-2 co-trains on visual question answering for the same reason. We cannot
download either, but the simulator knows where every object is, so a demonstration frame can also
be a question with an exact answer:

    In: Where is the red block?\nOut: <x> <y> <x - hand x> <y - hand y></s>

The answer is four tokens of the 256-bin action vocabulary (`ANSWER_RANGES` gives the value range
of each), so the model, prompt format and inference path are unchanged: only training sees the
extra sequences (`rlrc-sim train --ground-frac`, sim/recipes/tabletop.py). Every object on the table is asked about, not only
the target, so the same image gets different answers for different names -- exactly the binding
the action head needs.

With ``task_queries`` every untouched frame also gets one question whose "name" is the whole
instruction and whose answer is the object the instruction moves (its target):

    In: Where is the object to move to stack the red block on the blue block?\nOut: <x> <y> <dx> <dy></s>

A colour question teaches which patch is red; this one teaches which of the instruction's colour
words names the object to move: the choice a stack policy gets wrong when it lifts the goal block first.

With ``orientation`` every untouched frame also gets, for each uniquely named block and bar, the question
a bar grasp depends on (the hand must turn to the bar's yaw before it comes down, and the action token
for that turn is the only other signal about the bar's orientation):

    In: How is the red bar turned?\nOut: <sin> <cos> <turn> <hand yaw></s>

sin and cos are of the object's yaw on its symmetry period (pi for a bar, pi/2 for a block: a turn by the period
looks the same), turn is the rotation from the hand's yaw to the nearest grasp yaw (what the scripted expert turns
by, in [-period/2, period/2), over period/2) and hand yaw is where the hand itself is turned (over pi). Cylinders
have no orientation to ask about.

Object positions come from re-sampling the episode's task from its seed (pure numpy, the same draw
`TabletopEnv.reset(seed=...)` makes) and are only valid while nothing has been touched: a frame is
used when the hand has not yet come down below `UNTOUCHED_Z` in that demonstration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.tasks import TaskInstance, get_family

UNTOUCHED_Z = 0.07
"""Frames from the start of a demo until the hand first drops below this height (m) are untouched."""

QUERY_TEMPLATE = "In: Where is the {instruction}?\nOut:"
"""Prompt of a grounding query; {instruction} is "<colour> <object>" or TASK_NAME."""
TASK_NAME = "object to move to {instruction}"
"""The "name" of a task query: the object an instruction moves."""

ORIENT_TEMPLATE = "In: How is the {instruction} turned?\nOut:"
"""Prompt of an orientation query; {instruction} is "<colour> <object>" (blocks and bars)."""
SYMMETRY: dict[str, float] = {"block": math.pi / 2, "bar": math.pi}
"""Yaw period of each kind that has an orientation: the turn after which it looks (and grasps) the same."""

# (low, high) of each answer value in metres; mapped linearly onto the action bins' [-1, 1].
ANSWER_RANGES: tuple[tuple[float, float], ...] = ((-0.25, 0.30), (-0.30, 0.30), (-0.55, 0.55), (-0.55, 0.55))


@dataclass(frozen=True)
class Query:
    """One grounding question about one frame."""

    frame: int
    """Frame index inside its demonstration."""
    name: str
    """"<colour> <object>", e.g. "red block"."""
    answer: np.ndarray
    """float64 [4] in [-1, 1]: object x, y and its offset from the hand, normalised by ANSWER_RANGES; for an
    orientation query (`question` "turn") the values of `orientation_answer`."""
    question: str = "where"
    """"where" (QUERY_TEMPLATE) or "turn" (ORIENT_TEMPLATE)."""

    @property
    def template(self) -> str:
        return ORIENT_TEMPLATE if self.question == "turn" else QUERY_TEMPLATE


def episode_objects(family: str, split: str, seed: int) -> tuple[str, dict[str, tuple[float, float]]]:
    """(instruction, {"<colour> <object>": start xy}) of the episode `reset(seed=seed)` draws.

    Names that occur twice in one scene are left out (the question would have two answers).
    """
    return _objects(redraw_task(family, split, seed))


def episode_target(family: str, split: str, seed: int) -> tuple[float, float]:
    """Start xy of the object the instruction of `reset(seed=seed)` moves."""
    return _target_xy(redraw_task(family, split, seed))


def episode_roles(family: str, split: str, seed: int, instruction: str) -> tuple[str | None, str | None]:
    """Colours of the object the instruction moves and of its goal object (the plate or block it goes on).

    None for a role the task does not have (pick and push have no goal object), for a colour that another
    object of the scene also shows (the colour would not single it out), and for both roles when
    re-sampling the seed does not give the recorded instruction.
    """
    task = redraw_task(family, split, seed)
    if task.instruction != instruction:
        return None, None
    colours = [p.colour for p in task.placements]

    def unique_colour(slot: str | None) -> str | None:
        if slot is None:
            return None
        colour = task.placement(slot).colour
        return colour if colours.count(colour) == 1 else None

    return unique_colour(task.target), unique_colour(task.goal)


def _objects(task) -> tuple[str, dict[str, tuple[float, float]]]:
    names = [f"{p.colour} {p.kind}" for p in task.placements]
    objects = {n: p.xy for n, p in zip(names, task.placements) if names.count(n) == 1}
    return task.instruction, objects


def _target_xy(task) -> tuple[float, float]:
    return next(p.xy for p in task.placements if p.slot == task.target)


def redraw_task(family: str, split: str, seed: int) -> TaskInstance:
    """The task `TabletopEnv.reset(seed=seed)` draws in `split` (pure numpy, no simulator)."""
    from gymnasium.utils import seeding

    rng, _ = seeding.np_random(int(seed))
    return get_family(family).sample(rng, split)


def normalise_answer(values: np.ndarray) -> np.ndarray:
    lo = np.array([r[0] for r in ANSWER_RANGES])
    hi = np.array([r[1] for r in ANSWER_RANGES])
    return np.clip(2.0 * (np.asarray(values, dtype=np.float64) - lo) / (hi - lo) - 1.0, -1.0, 1.0)


def denormalise_answer(values: np.ndarray) -> np.ndarray:
    """Inverse of `normalise_answer` for the first values.shape[-1] answer values: [-1, 1] -> metres."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    lo = np.array([r[0] for r in ANSWER_RANGES[:n]])
    hi = np.array([r[1] for r in ANSWER_RANGES[:n]])
    return lo + (values + 1.0) / 2.0 * (hi - lo)


def orientation_answer(kind: str, yaw: float, hand_yaw: float) -> np.ndarray:
    """float64 [4] in [-1, 1] answering "how is the <object> turned?" for a block or bar at `yaw` (rad) with the
    hand at `hand_yaw`: sin and cos of the yaw on the kind's period, the turn to the nearest grasp yaw over half the
    period, the hand's yaw over pi."""
    period = SYMMETRY[kind]
    phase = 2.0 * math.pi * yaw / period
    turn = (yaw - hand_yaw + period / 2) % period - period / 2  # nearest equivalent, in [-period/2, period/2)
    hand = (hand_yaw + math.pi) % (2 * math.pi) - math.pi
    return np.clip(np.array([math.sin(phase), math.cos(phase), turn / (period / 2), hand / math.pi]), -1.0, 1.0)


def untouched_frames(ee_pos: np.ndarray, z: float = UNTOUCHED_Z) -> int:
    """How many leading frames precede the hand's first descent below `z` (objects still at rest)."""
    low = np.flatnonzero(np.asarray(ee_pos)[:, 2] < z)
    return int(low[0]) if low.size else int(len(ee_pos))


def demo_queries(family: str, split: str, seed: int, instruction: str, ee_pos: np.ndarray,
                 task_queries: bool = False, hand_yaw: np.ndarray | None = None,
                 orient_kinds: tuple[str, ...] = tuple(SYMMETRY)) -> list[Query]:
    """Every (untouched frame, object) question of one demonstration; with `task_queries` also one
    (untouched frame, TASK_NAME) question per frame, answered with the target's position; with `hand_yaw`
    (the hand's yaw per frame, rad: proprio[:, 5] of our demos) also one orientation question per frame and
    uniquely named object whose kind is in `orient_kinds` (a subset of SYMMETRY's: blocks and bars).

    Returns [] when re-sampling the seed does not give the recorded instruction (a file written by
    another version of the task code): wrong answers would be worse than none.
    """
    task = redraw_task(family, split, seed)
    drawn, objects = _objects(task)
    if drawn != instruction:
        return []
    asked = list(objects.items())
    if task_queries:
        asked.append((TASK_NAME.format(instruction=instruction), _target_xy(task)))
    turned = [(f"{p.colour} {p.kind}", p.kind, p.yaw) for p in task.placements
              if p.kind in SYMMETRY and p.kind in orient_kinds and f"{p.colour} {p.kind}" in objects]
    out = []
    for t in range(untouched_frames(ee_pos)):
        hand = np.asarray(ee_pos[t][:2], dtype=np.float64)
        for name, xy in asked:
            obj = np.asarray(xy, dtype=np.float64)
            out.append(Query(t, name, normalise_answer(np.concatenate([obj, obj - hand]))))
        if hand_yaw is not None:
            for name, kind, yaw in turned:
                out.append(Query(t, name, orientation_answer(kind, yaw, float(hand_yaw[t])), "turn"))
    return out
