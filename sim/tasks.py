"""Task families, language templates and dataset splits of the `tabletop` suite.

This module is pure numpy: it samples *what* an episode is (objects, colours, poses, the
instruction, camera/light shifts) and judges success from positions. `sim.env` turns a
`TaskInstance` into MuJoCo state and renders it.

Splits (selected by name, see `SPLITS`):
  id              seen (colour, object) / (colour, colour) / (colour, side) combinations,
                  training paraphrases, nominal camera and lighting, only the objects the task
                  needs (pick, push: one; place: a block and a plate; stack: two blocks).
  id_clutter      `id` tasks among the family's usual distractors (a second object, a second
                  plate and block, a third block): the instruction has to pick out the target by
                  colour (and shape), a binding a small policy trained from scratch within a CPU
                  budget does not learn (docs/benchmark.md, "Splits").
  ood_combo       target combinations held out of `id` (every colour, shape and side is still
                  seen in `id`, only the pairing is new).
  ood_distractor  `id_clutter` scenes plus two extra distractor objects (the held-out "distractor
                  objects" shift).
  ood_paraphrase  `id` tasks phrased with held-out paraphrases.
  ood_visual      `id` tasks with the camera moved and tilted, the light changed and the table
                  recoloured.
  ood             each episode draws one of the four shifts above at random.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sim import scene
from sim.errors import SimError, unknown_name

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.20),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.75),
    "orange": (1.00, 0.50, 0.05),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
# Push directions in world xy; image-left is world +y, "back" is away from the camera (+x).
SIDES: dict[str, tuple[float, float]] = {
    "left": (0.0, 1.0),
    "right": (0.0, -1.0),
    "front": (-1.0, 0.0),
    "back": (1.0, 0.0),
}

# Where objects may start (table top is x in [-0.32, 0.32], y in [-0.42, 0.42]).
PLAY_X = (-0.13, 0.15)
PLAY_Y = (-0.18, 0.18)
MIN_GAP = 0.035  # free space between footprints, so the open fingers fit between objects

LIFT_HEIGHT = 0.05  # pick succeeds once the object's centre is this far above its rest height
PUSH_DISTANCE = 0.08  # push succeeds once the block has moved this far along the side direction
EXTRA_DISTRACTORS = 2  # added by the ood_distractor shift
LAYOUT_TRIES = 100

OOD_KINDS: tuple[str, ...] = ("combo", "distractor", "paraphrase", "visual")


@dataclass(frozen=True)
class SplitSpec:
    """A named dataset split: which out-of-distribution shifts an episode may receive."""

    name: str
    """Registry name, e.g. "ood_combo"."""
    shifts: tuple[str, ...]
    """OOD shifts an episode draws one from (uniformly); empty for the in-distribution split."""
    description: str
    """One line for `sim.cli list`."""
    clutter: bool = False
    """The family's usual distractors are on the table in every episode (the distractor shift adds them too)."""


SPLITS: dict[str, SplitSpec] = {
    s.name: s
    for s in (
        SplitSpec("id", (), "in-distribution: seen combinations, training paraphrases, nominal view, "
                  "only the objects the task needs"),
        SplitSpec("id_clutter", (), "id tasks among the family's usual distractors (target picked out by "
                  "colour/shape)", clutter=True),
        SplitSpec("ood_combo", ("combo",), "held-out target combinations (colour/object, colour/colour, colour/side)"),
        SplitSpec("ood_distractor", ("distractor",), f"the usual distractors plus {EXTRA_DISTRACTORS} extra objects"),
        SplitSpec("ood_paraphrase", ("paraphrase",), "held-out paraphrases of the instruction"),
        SplitSpec("ood_visual", ("visual",), "shifted camera pose and field of view, changed light, recoloured table"),
        SplitSpec("ood", OOD_KINDS, "each episode gets one of the four OOD shifts at random"),
    )
}


@dataclass(frozen=True)
class Placement:
    """One object of an episode: which model slot plays it, what it looks like, where it starts."""

    slot: str
    """Body name in the model, e.g. "block2"."""
    kind: str
    """"block" | "cylinder" | "bar" | "plate"."""
    colour: str
    """Key of `COLOURS`."""
    xy: tuple[float, float]
    """Start position on the table top, metres."""
    yaw: float
    """Start rotation about world z, radians."""


@dataclass(frozen=True)
class VisualShift:
    """Camera and light perturbation of the ood_visual shift (all zero/one means nominal)."""

    eye_offset: tuple[float, float, float]
    """Added to the camera position, metres."""
    target_offset: tuple[float, float, float]
    """Added to the camera look-at point, metres."""
    fovy_offset: float
    """Added to the vertical field of view, degrees."""
    light_scale: float
    """Multiplies the key light's diffuse colour."""
    light_dir: tuple[float, float, float]
    """Direction of the key light."""
    table_rgb: tuple[float, float, float]
    """Table colour."""


@dataclass(frozen=True)
class TaskInstance:
    """Everything that defines one episode; sampled by a `TaskFamily` from the episode's RNG."""

    family: str
    split: str
    shift: str | None
    """The OOD shift this episode received (one of `OOD_KINDS`), None in the `id` split."""
    instruction: str
    template_index: int
    """Index into the family's `templates`."""
    placements: tuple[Placement, ...]
    target: str
    """Slot of the object to manipulate."""
    goal: str | None = None
    """Slot of the plate (place) or the base block (stack)."""
    side: str | None = None
    """Push direction name (push)."""
    combo: tuple[str, str] = ("", "")
    """The (colour, object) / (colour, colour) / (colour, side) pair the split logic decides on."""
    visual: VisualShift | None = None

    def placement(self, slot: str) -> Placement:
        """The placement of `slot` (raises KeyError if the slot is not used in this episode)."""
        for p in self.placements:
            if p.slot == slot:
                return p
        raise KeyError(slot)


class SceneView(Protocol):
    """What success checks may read from the simulator (privileged state)."""

    def body_pos(self, slot: str) -> np.ndarray:
        """World position [3] of a body."""

    def start_pos(self, slot: str) -> np.ndarray:
        """World position [3] of a body at the start of the episode."""

    def touching_fingers(self, slot: str) -> bool:
        """True if either finger is in contact with the body."""


class _Slots:
    """Hands out unused slot names per kind, so every placement gets its own model body."""

    def __init__(self) -> None:
        self._free = {kind: scene.slot_names(kind) for kind in scene.SLOT_COUNTS}

    def available(self, kind: str) -> int:
        return len(self._free[kind])

    def take(self, kind: str) -> str:
        if not self._free[kind]:  # pragma: no cover - families never ask for more than SLOT_COUNTS
            raise SimError(f"scene has only {scene.SLOT_COUNTS[kind]} {kind} slots; raise SLOT_COUNTS[{kind!r}]")
        return self._free[kind].pop(0)


class _NoRoom(Exception):
    """Earlier objects left no room for the next one; `TaskFamily.sample` redraws the layout."""


def _sample_xy(
    rng: np.random.Generator,
    radius: float,
    taken: Sequence[tuple[tuple[float, float], float]],
    ok: Callable[[np.ndarray], bool] | None = None,
    max_tries: int = 300,
) -> tuple[float, float]:
    """Rejection-sample a start position clear of the `taken` (xy, radius) footprints."""
    for _ in range(max_tries):
        xy = np.array([rng.uniform(*PLAY_X), rng.uniform(*PLAY_Y)])
        if all(np.hypot(*(xy - np.asarray(p))) >= radius + r + MIN_GAP for p, r in taken):
            if ok is None or ok(xy):
                return float(xy[0]), float(xy[1])
    raise _NoRoom


class TaskFamily:
    """A family of tasks sharing one instruction template, one success test and one expert."""

    name: str = ""
    max_steps: int = 0
    """Episode length limit, control steps (20 Hz)."""
    grasps_target: bool = True
    """Whether the shaped grasp bonus applies (the target is meant to be picked up)."""
    templates: tuple[str, ...] = ()
    """Instruction templates; the first `n_id_templates` belong to id splits, the rest are held out."""
    n_id_templates: int = 4

    # -- combinations -----------------------------------------------------------------------
    def combos(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def heldout_combos(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def id_combos(self) -> list[tuple[str, str]]:
        held = set(self.heldout_combos())
        return [c for c in self.combos() if c not in held]

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, split: str) -> TaskInstance:
        """Draw one episode of this family in `split` from `rng` (deterministic given the RNG state)."""
        if split not in SPLITS:
            raise unknown_name("split", split, SPLITS)
        shifts = SPLITS[split].shifts
        shift = shifts[int(rng.integers(len(shifts)))] if shifts else None
        clutter = SPLITS[split].clutter or shift == "distractor"
        pool = self.heldout_combos() if shift == "combo" else self.id_combos()
        combo = pool[int(rng.integers(len(pool)))]
        # A crowded draw (e.g. two plates and four objects) can leave no room for the last object;
        # then the whole layout is redrawn from the same RNG, which keeps episodes deterministic.
        for _ in range(LAYOUT_TRIES):
            try:
                slots = _Slots()
                placements, target, goal, side = self._layout(rng, combo, slots, clutter)
                if shift == "distractor":
                    placements = placements + self._extra_distractors(rng, placements, slots, side, target)
                break
            except _NoRoom:
                continue
        else:  # pragma: no cover - never seen in 10k draws per family and split
            raise SimError(f"{self.name}: no collision-free layout in {LAYOUT_TRIES} draws; "
                           "reduce EXTRA_DISTRACTORS or enlarge PLAY_X/PLAY_Y")
        if shift == "paraphrase":
            t_index = self.n_id_templates + int(rng.integers(len(self.templates) - self.n_id_templates))
        else:
            t_index = int(rng.integers(self.n_id_templates))
        instruction = self.instruction(self.templates[t_index], placements, target, goal, side)
        visual = _sample_visual_shift(rng) if shift == "visual" else None
        return TaskInstance(
            family=self.name, split=split, shift=shift, instruction=instruction, template_index=t_index,
            placements=tuple(placements), target=target, goal=goal, side=side, combo=combo, visual=visual,
        )

    def _layout(
        self, rng: np.random.Generator, combo: tuple[str, str], slots: _Slots, clutter: bool
    ) -> tuple[list[Placement], str, str | None, str | None]:
        """(placements, target slot, goal slot, side); `clutter` adds the family's usual distractors."""
        raise NotImplementedError

    def instruction(
        self, template: str, placements: Sequence[Placement], target: str, goal: str | None, side: str | None
    ) -> str:
        """`template` filled in for the given target, goal and side on `placements`."""
        by_slot = {p.slot: p for p in placements}
        t = by_slot[target]
        return template.format(
            colour=t.colour, object=t.kind, side=side or "",
            goal_colour=by_slot[goal].colour if goal else "",
        )

    def _extra_distractors(
        self, rng: np.random.Generator, placements: list[Placement], slots: _Slots, side: str | None, target: str
    ) -> list[Placement]:
        """Cylinders and bars: never ambiguous with a block instruction; pick excludes the target's look."""
        t = next(p for p in placements if p.slot == target)
        taken = [(p.xy, scene.FOOTPRINT[p.kind]) for p in placements]
        ok = _push_corridor_ok(t, side, scene.FOOTPRINT) if side else None
        extra: list[Placement] = []
        for _ in range(EXTRA_DISTRACTORS):
            kinds = [k for k in ("cylinder", "bar") if slots.available(k)]
            kind = kinds[int(rng.integers(len(kinds)))]
            colours = [c for c in COLOUR_NAMES if (c, kind) != (t.colour, t.kind)]
            colour = colours[int(rng.integers(len(colours)))]
            r = scene.FOOTPRINT[kind]
            xy = _sample_xy(rng, r, taken, (lambda q, r=r: ok(q, r)) if ok else None)
            taken.append((xy, r))
            extra.append(Placement(slots.take(kind), kind, colour, xy, float(rng.uniform(-math.pi, math.pi))))
        return extra

    # -- success -------------------------------------------------------------------------------
    def success(self, task: TaskInstance, view: SceneView) -> bool:
        raise NotImplementedError


def _cyclic_pairs(offset: int) -> list[tuple[str, str]]:
    """(colour[i], colour[i+offset]) for every i: each colour is held out in exactly one pairing."""
    n = len(COLOUR_NAMES)
    return [(COLOUR_NAMES[i], COLOUR_NAMES[(i + offset) % n]) for i in range(n)]


def _yaw(rng: np.random.Generator) -> float:
    return float(rng.uniform(-math.pi, math.pi))


def _push_corridor_ok(
    target: Placement, side: str | None, footprint: dict[str, float]
) -> Callable[[np.ndarray, float], bool]:
    """A check that keeps other objects out of the strip the pushed block and the pusher sweep."""
    d = np.asarray(SIDES[side or "left"])
    start = np.asarray(target.xy) - d * 0.07
    end = np.asarray(target.xy) + d * 0.17

    def ok(xy: np.ndarray, radius: float) -> bool:
        seg = end - start
        t = float(np.clip(np.dot(xy - start, seg) / np.dot(seg, seg), 0.0, 1.0))
        return float(np.hypot(*(xy - (start + t * seg)))) >= radius + 0.045

    return ok


class PickFamily(TaskFamily):
    name = "pick"
    max_steps = 60
    templates = (
        "pick up the {colour} {object}",
        "grab the {colour} {object}",
        "lift the {colour} {object}",
        "pick the {colour} {object} up",
        "take hold of the {colour} {object} and raise it",
        "raise the {colour} {object} off the table",
    )

    def combos(self) -> list[tuple[str, str]]:
        return [(c, k) for c in COLOUR_NAMES for k in scene.MOVABLE_KINDS]

    def heldout_combos(self) -> list[tuple[str, str]]:
        kinds = scene.MOVABLE_KINDS
        return [(c, kinds[(i + 1) % len(kinds)]) for i, c in enumerate(COLOUR_NAMES)]

    def _layout(self, rng, combo, slots, clutter):
        colour, kind = combo
        target = Placement(slots.take(kind), kind, colour, _sample_xy(rng, scene.FOOTPRINT[kind], []), _yaw(rng))
        placed = [target]
        if not clutter:
            return placed, target.slot, None, None
        # One distractor that differs in colour or shape (often both), so the instruction is unique.
        while True:
            d_kind = scene.MOVABLE_KINDS[int(rng.integers(len(scene.MOVABLE_KINDS)))]
            d_colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
            if (d_colour, d_kind) != combo:
                break
        r = scene.FOOTPRINT[d_kind]
        xy = _sample_xy(rng, r, [(target.xy, scene.FOOTPRINT[kind])])
        placed.append(Placement(slots.take(d_kind), d_kind, d_colour, xy, _yaw(rng)))
        return placed, target.slot, None, None

    def success(self, task, view):
        t = task.placement(task.target)
        return float(view.body_pos(t.slot)[2]) >= scene.REST_Z[t.kind] + LIFT_HEIGHT


class PushFamily(TaskFamily):
    name = "push"
    max_steps = 60
    grasps_target = False
    templates = (
        "push the {colour} block to the {side}",
        "slide the {colour} block to the {side}",
        "nudge the {colour} block towards the {side}",
        "shove the {colour} block to the {side}",
        "move the {colour} block over to the {side} by pushing it",
        "push the {colour} block toward the {side} side of the table",
    )

    def combos(self) -> list[tuple[str, str]]:
        return [(c, s) for c in COLOUR_NAMES for s in SIDES]

    def heldout_combos(self) -> list[tuple[str, str]]:
        sides = tuple(SIDES)
        return [(c, sides[i % len(sides)]) for i, c in enumerate(COLOUR_NAMES)]

    def _layout(self, rng, combo, slots, clutter):
        colour, side = combo
        d = np.asarray(SIDES[side])
        r = scene.FOOTPRINT["block"]

        def room_to_push(xy: np.ndarray) -> bool:
            # The block must end inside the play area (+3 cm) and the pusher must fit behind it.
            end, behind = xy + d * 0.13, xy - d * 0.07
            lo, hi = np.array([PLAY_X[0], PLAY_Y[0]]) - 0.03, np.array([PLAY_X[1], PLAY_Y[1]]) + 0.03
            return bool(np.all(end >= lo) and np.all(end <= hi) and np.all(behind >= lo - 0.05)
                        and np.all(behind <= hi + 0.05))

        target = Placement(slots.take("block"), "block", colour, _sample_xy(rng, r, [], room_to_push), _yaw(rng))
        if not clutter:
            return [target], target.slot, None, side
        ok = _push_corridor_ok(target, side, scene.FOOTPRINT)
        others = [c for c in COLOUR_NAMES if c != colour]
        d_colour = others[int(rng.integers(len(others)))]
        xy = _sample_xy(rng, r, [(target.xy, r)], lambda q: ok(q, r))
        distractor = Placement(slots.take("block"), "block", d_colour, xy, _yaw(rng))
        return [target, distractor], target.slot, None, side

    def success(self, task, view):
        d = np.asarray(SIDES[task.side or "left"])
        pos = view.body_pos(task.target)
        moved = float(np.dot(pos[:2] - view.start_pos(task.target)[:2], d))
        on_table = float(pos[2]) < scene.REST_Z["block"] + 0.01
        return moved >= PUSH_DISTANCE and on_table


class PlaceFamily(TaskFamily):
    name = "place"
    max_steps = 100
    templates = (
        "put the {colour} block on the {goal_colour} plate",
        "place the {colour} block on the {goal_colour} plate",
        "set the {colour} block onto the {goal_colour} plate",
        "move the {colour} block onto the {goal_colour} plate",
        "pick up the {colour} block and drop it on the {goal_colour} plate",
        "the {colour} block goes on the {goal_colour} plate",
    )

    def combos(self) -> list[tuple[str, str]]:
        return [(a, b) for a in COLOUR_NAMES for b in COLOUR_NAMES if a != b]

    def heldout_combos(self) -> list[tuple[str, str]]:
        return _cyclic_pairs(1)

    def _layout(self, rng, combo, slots, clutter):
        block_c, plate_c = combo
        rb, rp = scene.FOOTPRINT["block"], scene.FOOTPRINT["plate"]
        taken: list[tuple[tuple[float, float], float]] = []

        def put(kind: str, colour: str, r: float) -> Placement:
            xy = _sample_xy(rng, r, taken)
            taken.append((xy, r))
            return Placement(slots.take(kind), kind, colour, xy, _yaw(rng))

        plate = put("plate", plate_c, rp)
        if not clutter:
            block = put("block", block_c, rb)
            return [plate, block], block.slot, plate.slot, None
        other_plate = put("plate", COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))], rp)
        if other_plate.colour == plate_c:  # keep the goal plate unique by colour
            others = [c for c in COLOUR_NAMES if c != plate_c]
            other_plate = Placement(other_plate.slot, "plate", others[int(rng.integers(len(others)))],
                                    other_plate.xy, other_plate.yaw)
        block = put("block", block_c, rb)
        others = [c for c in COLOUR_NAMES if c != block_c]
        distractor = put("block", others[int(rng.integers(len(others)))], rb)
        return [plate, other_plate, block, distractor], block.slot, plate.slot, None

    def success(self, task, view):
        b, p = view.body_pos(task.target), view.body_pos(task.goal or "")
        centred = float(np.hypot(*(b[:2] - p[:2]))) < scene.PLATE_RADIUS - 0.015
        resting_z = scene.PLATE_TOP + scene.BLOCK_HALF
        resting = resting_z - 0.006 < float(b[2]) < resting_z + 0.01
        return centred and resting and not view.touching_fingers(task.target)


class StackFamily(TaskFamily):
    name = "stack"
    max_steps = 100
    templates = (
        "stack the {colour} block on the {goal_colour} block",
        "put the {colour} block on top of the {goal_colour} block",
        "place the {colour} block onto the {goal_colour} block",
        "stack the {colour} block on top of the {goal_colour} one",
        "pile the {colour} block onto the {goal_colour} block",
        "set the {colour} block down on the {goal_colour} block",
    )

    def combos(self) -> list[tuple[str, str]]:
        return [(a, b) for a in COLOUR_NAMES for b in COLOUR_NAMES if a != b]

    def heldout_combos(self) -> list[tuple[str, str]]:
        return _cyclic_pairs(2)

    def _layout(self, rng, combo, slots, clutter):
        top_c, base_c = combo
        r = scene.FOOTPRINT["block"]
        taken: list[tuple[tuple[float, float], float]] = []
        placed = []
        others = [c for c in COLOUR_NAMES if c not in combo]
        colours = (top_c, base_c, others[int(rng.integers(len(others)))]) if clutter else (top_c, base_c)
        for colour in colours:
            xy = _sample_xy(rng, r, taken)
            taken.append((xy, r))
            placed.append(Placement(slots.take("block"), "block", colour, xy, _yaw(rng)))
        return placed, placed[0].slot, placed[1].slot, None

    def success(self, task, view):
        top, base = view.body_pos(task.target), view.body_pos(task.goal or "")
        aligned = float(np.hypot(*(top[:2] - base[:2]))) < 0.025
        dz = float(top[2] - base[2])
        resting = 2 * scene.BLOCK_HALF - 0.006 < dz < 2 * scene.BLOCK_HALF + 0.01
        return aligned and resting and not view.touching_fingers(task.target)


def _sample_visual_shift(rng: np.random.Generator) -> VisualShift:
    """Camera moved 4-8 cm and re-aimed, fov +-6 deg, light dimmer/brighter and re-angled, new table."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    eye = direction * rng.uniform(0.04, 0.08)
    target = rng.uniform(-0.03, 0.03, size=3) * np.array([1.0, 1.0, 0.3])
    light_dir = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), -1.0])
    table_choices = ((0.55, 0.42, 0.30), (0.85, 0.85, 0.85), (0.40, 0.45, 0.50), (0.62, 0.70, 0.58))
    return VisualShift(
        eye_offset=tuple(float(v) for v in eye),
        target_offset=tuple(float(v) for v in target),
        fovy_offset=float(rng.uniform(-6.0, 6.0)),
        light_scale=float(rng.uniform(0.55, 1.35)),
        light_dir=tuple(float(v) for v in light_dir),
        table_rgb=table_choices[int(rng.integers(len(table_choices)))],
    )


FAMILIES: dict[str, TaskFamily] = {f.name: f for f in (PickFamily(), PushFamily(), PlaceFamily(), StackFamily())}


def get_family(name: str) -> TaskFamily:
    """The family registered as `name`; unknown names raise `UnknownNameError` with a hint."""
    if name not in FAMILIES:
        raise unknown_name("family", name, FAMILIES)
    return FAMILIES[name]


def get_split(name: str) -> SplitSpec:
    """The split registered as `name`; unknown names raise `UnknownNameError` with a hint."""
    if name not in SPLITS:
        raise unknown_name("split", name, SPLITS)
    return SPLITS[name]


@dataclass(frozen=True)
class FamilyInfo:
    """Public description of a family for listings (`sim.list_families`)."""

    name: str
    max_steps: int
    id_templates: tuple[str, ...]
    ood_templates: tuple[str, ...]
    id_combos: tuple[tuple[str, str], ...] = field(repr=False)
    heldout_combos: tuple[tuple[str, str], ...] = field(repr=False)


def family_info(name: str) -> FamilyInfo:
    f = get_family(name)
    return FamilyInfo(
        name=f.name, max_steps=f.max_steps,
        id_templates=f.templates[: f.n_id_templates], ood_templates=f.templates[f.n_id_templates:],
        id_combos=tuple(f.id_combos()), heldout_combos=tuple(f.heldout_combos()),
    )
