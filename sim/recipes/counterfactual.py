"""Counterfactual instructions: the same frame, the instruction's words swapped, the expert's action for it.

Three of the four `id` families never need a colour word to choose an object (pick and push show
one object, place a block and a plate); only stack does, and a policy that ignores the word order
there lifts the goal block first about as often as the right one.
In the demonstrations every image comes with exactly one instruction, so a policy that ignores the
word order loses little: nothing in the data says "this same picture, the other block".

The simulator can say it. While nothing has been touched (the hand has not yet come down below
`sim.recipes.grounding.UNTOUCHED_Z`), the scene is the one `reset(seed)` drew, and the scripted expert for
the swapped task is still in its first phase -- it has not reached the other object -- so its
action is a function of the recorded hand pose and the drawn object poses alone. This module
evaluates the real expert classes on that frozen state:

    stack   "stack the red block on the blue block"  ->  "stack the blue block on the red block"
            (same template), label: the stack expert's approach towards the blue block
    push    "push the red block to the left"          ->  "push the red block to the back"
            (each other side), label: the push expert's approach behind the block for that side

A swap is skipped when its (colour, colour) or (colour, side) combination is held out of the `id`
split (it would leak an `ood_combo` task into training). Place and pick have no swap that keeps
the scene valid. Used by the tabletop recipe's `--counterfactual-frac` (`rlrc-sim train`); inference never sees these rows.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sim import scene
from sim.experts import EXPERTS
from sim.recipes.grounding import redraw_task, untouched_frames
from sim.tasks import SIDES, TaskInstance, get_family

FAMILIES = ("stack", "push")
"""Families with a word-swapped counterpart of their instruction."""


@dataclass(frozen=True)
class Counterfactual:
    """One swapped-instruction sample of one demonstration frame."""

    frame: int
    """Frame index inside its demonstration."""
    instruction: str
    """The swapped instruction."""
    action: np.ndarray
    """float32 [7]: the expert's action for the swapped task at this frame (env convention)."""


class _FrozenScene:
    """What an expert reads from `TabletopEnv` in its first phase, for a scene nothing has touched yet."""

    def __init__(self, task: TaskInstance) -> None:
        self.task = task
        self.ee_pos = np.zeros(3)
        self.ee_euler = np.zeros(3)

    def body_pos(self, slot: str) -> np.ndarray:
        p = self.task.placement(slot)
        return np.array([p.xy[0], p.xy[1], scene.REST_Z[p.kind]])

    start_pos = body_pos

    def body_yaw(self, slot: str) -> float:
        return float(self.task.placement(slot).yaw)


def swapped_tasks(task: TaskInstance) -> list[TaskInstance]:
    """The `id` tasks on `task`'s scene whose instruction differs from it only in which object or side
    the words name (see the module docstring); [] for families without one."""
    family = get_family(task.family)
    allowed = set(family.id_combos())
    template = family.templates[task.template_index]
    out = []
    if task.family == "stack" and task.goal is not None:
        combo = (task.placement(task.goal).colour, task.placement(task.target).colour)
        if combo in allowed and combo[0] != combo[1]:
            instruction = family.instruction(template, task.placements, task.goal, task.target, None)
            out.append(replace(task, instruction=instruction, target=task.goal, goal=task.target, combo=combo))
    elif task.family == "push":
        colour = task.placement(task.target).colour
        for side in SIDES:
            if side != task.side and (colour, side) in allowed:
                instruction = family.instruction(template, task.placements, task.target, None, side)
                out.append(replace(task, instruction=instruction, side=side, combo=(colour, side)))
    return out


def demo_counterfactuals(family: str, split: str, seed: int, instruction: str,
                         proprio: np.ndarray) -> list[Counterfactual]:
    """Every (untouched frame, swapped task) sample of one demonstration.

    `proprio` is the demo's [T, >= 6] proprio observation (hand x, y, z, roll, pitch, yaw, ...).
    Returns [] for families without swaps, for splits other than `id` (the swaps keep to `id`
    combinations), and when re-drawing the seed does not give the recorded instruction.
    """
    if family not in FAMILIES or split != "id":
        return []
    task = redraw_task(family, split, seed)
    if task.instruction != instruction:
        return []
    proprio = np.asarray(proprio, dtype=np.float64)
    out = []
    for swapped in swapped_tasks(task):
        view = _FrozenScene(swapped)
        expert = EXPERTS[family](view)  # type: ignore[arg-type]  # duck-typed: see _FrozenScene
        for t in range(untouched_frames(proprio[:, :3])):
            view.ee_pos, view.ee_euler = proprio[t, :3].copy(), proprio[t, 3:6].copy()
            expert.reset()  # first phase: the swapped expert has not reached its object
            out.append(Counterfactual(t, swapped.instruction, expert.act()))
    return out
