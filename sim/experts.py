"""Scripted experts: one per task family, reading privileged simulator state.

Each expert is a small phase machine over waypoints (above the object, straight down to it,
close, lift, carry while descending onto the goal, release; push funnels down behind the block).
Every step it emits the 7-D action of `sim.env` -- a translation delta towards the current
waypoint, a yaw delta towards the grasp yaw, zero roll/pitch corrections that keep the hand level,
and an absolute gripper command (1 = open, 0 = closed) -- so recorded expert actions are exactly
what a policy must learn to produce.

Phases advance on measured state, not on a clock, so the expert recovers from small slips (a
block that rotates while it is pushed, a grasp that lands a few millimetres off, a grasp that
closed on nothing: the expert opens and approaches again).

No step commands "closed: hold still": while the fingers close the hand already rises a little,
and a carried block descends as it nears its goal and is let go on arrival. A single-frame policy
sees neither how far the fingers have closed nor its height precisely, so such a step gives it
near-identical frames with different labels, and it learns to close and hover, or to stall over
the goal (docs/benchmark.md, "Why the experts are written this way"). Push does not wait at a
hover point to switch to "descend" either: its target height is a continuous function of the
remaining xy and yaw error (`funnel_height`), so the hand goes down while it aligns. The grasping
experts keep "hover, then straight down": with a funnel the hand arrives from the side at every
height, and one frame does not tell "at the bottom" from "a few cm up and to the side"; a straight
descent makes "low and directly over it" the one picture where the fingers close.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from sim import scene
from sim.env import MAX_ROTATION, MAX_TRANSLATION, TabletopEnv, wrap_angle
from sim.errors import unknown_name
from sim.tasks import SIDES

logger = logging.getLogger(__name__)

HOVER = 0.08  # m above the grasp (push) height while the hand is far from the object
# Push approach funnel: (m of height per m of xy error, xy error in m at which it reaches the
# bottom). Closed fingers behind the block: touching its near face early only pushes it the right
# way; they must clear its top only when more than 2 cm too far forward.
PUSH_FUNNEL = (3.0, 0.008)
YAW_HEIGHT = 0.1  # m of extra height per rad of yaw error (a bar's ends clear the fingers)
CARRY_Z = 0.11  # pinch height while carrying a block to its goal
POS_TOL = 0.006  # m, waypoint reached (xy)
Z_TOL = 0.008  # m, waypoint reached (z)
YAW_TOL = 0.06  # rad
# Where the push funnel ends and pushing starts. Looser than a waypoint: with noisy actions (DART
# demos, or a policy) xy, z and yaw are rarely all within the waypoint tolerances on the same step.
BOTTOM_XY_TOL = 0.012
BOTTOM_Z_TOL = 0.012
BOTTOM_YAW_TOL = 0.12
# Pushing starts up to PUSH_ENTRY_Z above the push height and up to PUSH_BACK_TOL further back than the
# funnel's end: the hand finishes its descent while closing in. A hard switch at the bottom gives
# near-identical pictures two labels ("keep coming down", "push"): a single-frame policy's prediction
# splits between the two and the hand hovers behind the block (docs/benchmark.md).
PUSH_ENTRY_Z = 0.02
PUSH_BACK_TOL = 0.03
CLOSE_STEPS = 4  # control steps to let the fingers close on the object
CLOSE_LIFT = 0.004  # m the hand rises per step while the fingers close (see `_pick_phases`)
REGRASP_HEIGHT = 0.03  # m the pinch point may rise above a grasp that holds nothing before re-grasping
RELEASE_STEPS = 4
FUNNEL_START = 0.07  # m from the goal (xy) where a carried block starts to descend
FUNNEL_END = 0.01  # m from the goal where it reaches release height
RELEASE_DROP = 0.012  # m above its resting height from which a carried block is let go


def funnel_height(xy_error: float, yaw_error: float, funnel: tuple[float, float]) -> float:
    """Height above the grasp (push) point of the approach target: 0 once aligned, HOVER when far."""
    slope, deadband = funnel
    h = slope * max(xy_error - deadband, 0.0) + YAW_HEIGHT * abs(yaw_error)
    return min(h, HOVER)


def _nearest_equivalent(angle: float, current: float, period: float) -> float:
    """The angle congruent to `angle` modulo `period` that is closest to `current`."""
    k = round((current - angle) / period)
    return wrap_angle(angle + k * period)


@dataclass
class Expert:
    """Base class: owns the phase state; subclasses plan a waypoint per step."""

    env: TabletopEnv
    phase: str = "approach"
    counter: int = 0
    memory: dict[str, np.ndarray | float] = field(default_factory=dict)

    def reset(self) -> None:
        """Call after every `env.reset()`."""
        self.phase, self.counter, self.memory = "approach", 0, {}

    def act(self) -> np.ndarray:
        """Next action, float32 [7] = [dx, dy, dz, droll, dpitch, dyaw, gripper]."""
        target, yaw, grip = self.plan()
        env = self.env
        delta = np.clip(target - env.ee_pos, -MAX_TRANSLATION, MAX_TRANSLATION)
        rpy = env.ee_euler
        rot = np.clip([-rpy[0], -rpy[1], wrap_angle(yaw - rpy[2])], -MAX_ROTATION, MAX_ROTATION)
        return np.concatenate([delta, rot, [grip]]).astype(np.float32)

    def plan(self) -> tuple[np.ndarray, float, float]:
        """(pinch target [3], hand yaw target, gripper command) for this step."""
        raise NotImplementedError

    # helpers shared by the grasping experts -------------------------------------------------------
    def _grasp_yaw(self, slot: str) -> float:
        env = self.env
        kind = env.task.placement(slot).kind
        current = float(env.ee_euler[2])
        if kind == "block":  # any face pair: 90-degree symmetry
            return _nearest_equivalent(env.body_yaw(slot), current, math.pi / 2)
        if kind == "bar":  # close across the bar's short (y) side: the hand y axis along the bar y axis
            return _nearest_equivalent(env.body_yaw(slot), current, math.pi)
        return current  # cylinder: any yaw

    def _grasp_z(self, slot: str) -> float:
        kind = self.env.task.placement(slot).kind
        # Pinch at the object's centre, but keep the fingertips just above the table.
        return max(scene.REST_Z[kind], scene.FINGER_HALF[2] + 0.002)

    def _reached(self, target: np.ndarray, yaw: float | None = None,
                 tol: tuple[float, float, float] = (POS_TOL, Z_TOL, YAW_TOL)) -> bool:
        """The pinch point is within (xy, z) of `target` and, if `yaw` is given, the hand within yaw tol."""
        env = self.env
        err = target - env.ee_pos
        ok = float(np.hypot(err[0], err[1])) < tol[0] and abs(float(err[2])) < tol[1]
        if yaw is not None:
            ok = ok and abs(wrap_angle(yaw - float(env.ee_euler[2]))) < tol[2]
        return ok

    def _pick_phases(self, slot: str) -> tuple[np.ndarray, float, float] | None:
        """approach (hover over it) -> descend (straight down) -> close -> lift; None once lifted."""
        env = self.env
        obj = env.body_pos(slot)
        if self.phase in ("lift", "carry") and self._lost_grip(slot):
            self.phase = "approach"
        if self.phase == "approach":
            yaw = self._grasp_yaw(slot)
            self.memory["yaw"] = yaw
            target = np.array([obj[0], obj[1], self._grasp_z(slot) + HOVER])
            if self._reached(target, yaw):
                self.phase = "descend"
            return target, yaw, 1.0
        yaw = float(self.memory["yaw"])
        if self.phase == "descend":
            target = np.array([obj[0], obj[1], self._grasp_z(slot)])
            if self._reached(target):
                self.phase, self.counter = "close", 0
            return target, yaw, 1.0
        if self.phase == "close":
            self.counter += 1
            if self.counter >= CLOSE_STEPS:
                self.phase = "lift"
            return env.ee_pos + np.array([0.0, 0.0, CLOSE_LIFT]), yaw, 0.0
        return None

    def _funnel_target(self, xy: np.ndarray, bottom_z: float, yaw: float, funnel: tuple[float, float]) -> np.ndarray:
        """Over `xy`, at `bottom_z` plus the funnel height for the hand's current xy and yaw error."""
        env = self.env
        xy_error = float(np.hypot(xy[0] - env.ee_pos[0], xy[1] - env.ee_pos[1]))
        yaw_error = wrap_angle(yaw - float(env.ee_euler[2]))
        return np.array([xy[0], xy[1], bottom_z + funnel_height(xy_error, yaw_error, funnel)])

    def _lost_grip(self, slot: str) -> bool:
        """The hand rose well above the object without it between both fingers."""
        env = self.env
        above = float(env.ee_pos[2] - env.body_pos(slot)[2]) > REGRASP_HEIGHT
        return above and not env.pinched(slot)


class PickExpert(Expert):
    """Grasp the target and lift it well above the success height."""

    def plan(self):
        env = self.env
        slot = env.task.target
        step = self._pick_phases(slot)
        if step is not None:
            return step
        target = np.array([env.ee_pos[0], env.ee_pos[1], self._grasp_z(slot) + 0.12])
        return target, float(self.memory["yaw"]), 0.0


class _PlaceOnExpert(Expert):
    """Grasp the target, carry it to the goal descending on the way, open, retreat."""

    def _release_center_z(self) -> float:
        raise NotImplementedError

    def plan(self):
        env = self.env
        slot, goal = env.task.target, env.task.goal
        step = self._pick_phases(slot)
        if step is not None:
            return step
        yaw = float(self.memory["yaw"])
        goal_pos = env.body_pos(goal)
        if self.phase == "lift":
            target = np.array([env.ee_pos[0], env.ee_pos[1], CARRY_Z])
            if abs(CARRY_Z - float(env.ee_pos[2])) < 0.02:
                self.phase = "carry"
            return target, yaw, 0.0
        if self.phase == "carry":
            # Put the *object* (not the pinch point) over the goal's centre, descending as it nears
            # the goal: full carry height beyond FUNNEL_START, 3 mm above resting height within
            # FUNNEL_END. No step ever says "closed: hold still"; see the module docstring.
            obj = env.body_pos(slot)
            dist = float(np.hypot(*(goal_pos[:2] - obj[:2])))
            rest = self._release_center_z()
            frac = float(np.clip((dist - FUNNEL_END) / (FUNNEL_START - FUNNEL_END), 0.0, 1.0))
            want = rest + 0.003 + frac * (CARRY_Z - rest - 0.003)
            target = env.ee_pos + np.array([goal_pos[0] - obj[0], goal_pos[1] - obj[1], want - obj[2]])
            # Let go anywhere below RELEASE_DROP: a policy that judges height from one frame stalls
            # if "open" needs millimetre precision.
            if not (dist < 0.006 and float(obj[2]) - rest < RELEASE_DROP):
                return target, yaw, 0.0
            self.phase, self.counter = "release", 0  # and open on this very step
        if self.phase == "release":
            self.counter += 1
            if self.counter >= RELEASE_STEPS:
                self.phase = "retreat"
            return env.ee_pos, yaw, 1.0
        return np.array([env.ee_pos[0], env.ee_pos[1], CARRY_Z + 0.03]), yaw, 1.0


class PlaceExpert(_PlaceOnExpert):
    def _release_center_z(self) -> float:
        return scene.PLATE_TOP + scene.BLOCK_HALF


class StackExpert(_PlaceOnExpert):
    def _release_center_z(self) -> float:
        return float(self.env.body_pos(self.env.task.goal)[2]) + 2 * scene.BLOCK_HALF


class PushExpert(Expert):
    """Close the fingers, funnel down behind the block, push it along the side direction."""

    STANDOFF = scene.BLOCK_HALF * 1.42 + 2 * scene.FINGER_HALF[1] + 0.012  # clear of a rotated cube's corner
    PRESS = 0.02  # how far inside the block face the pinch target is put while pushing

    def plan(self):
        env = self.env
        slot = env.task.target
        d = np.array([*SIDES[env.task.side], 0.0])
        # Hand y axis along the push direction: the 4 cm finger pads then face the block squarely.
        yaw = _nearest_equivalent(math.atan2(d[1], d[0]) - math.pi / 2, float(env.ee_euler[2]), math.pi)
        obj = env.body_pos(slot)
        push_z = scene.FINGER_HALF[2] + 0.003
        if self.phase == "approach":
            start = obj - d * self.STANDOFF
            if not self._ready_to_push(start, push_z, yaw, d):
                return self._funnel_target(start, push_z, yaw, PUSH_FUNNEL), yaw, 0.0
            self.phase = "push"
        moved = float(np.dot((obj - env.start_pos(slot))[:2], d[:2]))
        if moved > 0.105:  # overshoot the success distance a little, then hold still
            return env.ee_pos, yaw, 0.0
        contact = scene.BLOCK_HALF + scene.FINGER_HALF[1] * 2
        # Still coming down: close in to just short of the near face (touching it high up could tip it).
        gap = self.PRESS if float(env.ee_pos[2]) - push_z < Z_TOL else -0.005
        target = obj - d * (contact - gap)
        target[2] = push_z
        return target, yaw, 0.0

    def _ready_to_push(self, start: np.ndarray, push_z: float, yaw: float, d: np.ndarray) -> bool:
        """The hand is low enough, square to the block and in line behind it (see PUSH_ENTRY_Z)."""
        env = self.env
        off = env.ee_pos[:2] - start[:2]
        along = float(off @ d[:2])  # > 0: past the start point, towards the block
        across = float(off[0] * d[1] - off[1] * d[0])
        height = float(env.ee_pos[2]) - push_z
        return (-PUSH_BACK_TOL < along < BOTTOM_XY_TOL and abs(across) < BOTTOM_XY_TOL
                and -BOTTOM_Z_TOL < height < PUSH_ENTRY_Z
                and abs(wrap_angle(yaw - float(env.ee_euler[2]))) < BOTTOM_YAW_TOL)


EXPERTS: dict[str, type[Expert]] = {
    "pick": PickExpert, "push": PushExpert, "place": PlaceExpert, "stack": StackExpert,
}


def make_expert(env: TabletopEnv) -> Expert:
    """The scripted expert for `env`'s family. Call `expert.reset()` after each `env.reset()`."""
    family = env.unwrapped.config.family
    if family not in EXPERTS:
        raise unknown_name("family", family, EXPERTS)
    return EXPERTS[family](env.unwrapped)
