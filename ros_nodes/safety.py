"""Raw policy action -> robot commands, with the safety rules every published command obeys.

Pure numpy (no rclpy), so the rules are tested without ROS:
- a non-finite action never becomes a command (`ActionPipeline.__call__` returns None);
- the action is scaled (node parameter ``action_scale``), mapped into the robot frame and clamped
  per step by the action-frame calibration, converted to a velocity over ``action_period_s``,
  clamped to ``max_linear_speed`` / ``max_angular_speed``, and the gripper to ``gripper_limits``;
- every output is checked finite again after the maths.

`CommandCheck` states the same rules as checks on published messages, for whoever watches the node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from calibration.action_frame import ActionFrame
from rlrc_runtime.action import ActionStats
from rlrc_runtime.errors import ConfigError


@dataclass(frozen=True)
class CommandLimits:
    """The node parameters that shape commands (see ros_nodes.params)."""

    action_scale: tuple[float, ...] = (1.0,) * 7
    action_period_s: float = 0.2
    max_linear_speed: float = 0.25
    max_angular_speed: float = 1.0
    gripper_limits: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.action_scale) != 7 or not np.all(np.isfinite(self.action_scale)):
            raise ConfigError(f"action_scale={list(self.action_scale)}: expected 7 finite numbers")
        if not self.action_period_s > 0:
            raise ConfigError(f"action_period_s={self.action_period_s}: expected > 0")
        lo, hi = self.gripper_limits
        if not lo <= hi:
            raise ConfigError(f"gripper_limits={list(self.gripper_limits)}: expected [min, max] with min <= max")


@dataclass(frozen=True)
class Command:
    """What one accepted action becomes."""

    raw: np.ndarray
    """[7] float32, the policy's unnormalized action (published on ~/action)."""
    linear: np.ndarray
    """[3] float64 m/s in the robot frame (cmd_twist.twist.linear)."""
    angular: np.ndarray
    """[3] float64 rad/s in the robot frame (cmd_twist.twist.angular)."""
    gripper: float
    """Gripper command (~/gripper), inside gripper_limits."""


class ActionPipeline:
    """Policy action [7] -> `Command`, or None when the action must not be used."""

    def __init__(self, frame: ActionFrame | None = None, limits: CommandLimits | None = None) -> None:
        self.frame = frame or ActionFrame()
        self.limits = limits or CommandLimits()

    def __call__(self, action: np.ndarray) -> Command | None:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            return None
        scaled = a * np.asarray(self.limits.action_scale, dtype=np.float64)
        lin_step, ang_step, grip = self.frame.apply(scaled)
        period = self.limits.action_period_s
        lin = np.clip(lin_step / period, -self.limits.max_linear_speed, self.limits.max_linear_speed)
        ang = np.clip(ang_step / period, -self.limits.max_angular_speed, self.limits.max_angular_speed)
        grip = float(np.clip(grip, *self.limits.gripper_limits))
        if not (np.all(np.isfinite(lin)) and np.all(np.isfinite(ang)) and np.isfinite(grip)):
            return None
        return Command(raw=a.astype(np.float32), linear=lin, angular=ang, gripper=grip)


@dataclass(frozen=True)
class CommandCheck:
    """The rules of this module, checked on published messages from the outside (the fault tests, the
    soak benchmark) instead of trusted: each method returns None for a safe value, else the reason."""

    limits: CommandLimits
    action_low: np.ndarray
    """[7] float64: the lowest raw action the policy can emit (q01 of masked dims, -1 elsewhere)."""
    action_high: np.ndarray
    """[7] float64: the highest (q99 of masked dims, +1 elsewhere)."""

    @classmethod
    def for_policy(cls, limits: CommandLimits, stats: ActionStats) -> "CommandCheck":
        """Bounds from the dataset statistics that unnormalize the policy's actions."""
        low = np.where(stats.mask, stats.q01, -1.0)
        high = np.where(stats.mask, stats.q99, 1.0)
        return cls(limits, low, high)

    def action(self, values: Sequence[float]) -> str | None:
        a = np.asarray(values, dtype=np.float64)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            return f"action {a.tolist()}: expected 7 finite values"
        slack = 1e-6 * np.maximum(1.0, np.abs(self.action_high - self.action_low))  # float32 rounding
        outside = (a < self.action_low - slack) | (a > self.action_high + slack)
        if outside.any():
            return f"action {a.tolist()} outside [{self.action_low.tolist()}, {self.action_high.tolist()}]"
        return None

    def twist(self, linear: Sequence[float], angular: Sequence[float]) -> str | None:
        lin, ang = np.asarray(linear, dtype=np.float64), np.asarray(angular, dtype=np.float64)
        if not (np.all(np.isfinite(lin)) and np.all(np.isfinite(ang))):
            return f"twist linear {lin.tolist()} angular {ang.tolist()} is not finite"
        if np.abs(lin).max() > self.limits.max_linear_speed + 1e-9:
            return f"twist linear {lin.tolist()} exceeds max_linear_speed={self.limits.max_linear_speed}"
        if np.abs(ang).max() > self.limits.max_angular_speed + 1e-9:
            return f"twist angular {ang.tolist()} exceeds max_angular_speed={self.limits.max_angular_speed}"
        return None

    def gripper(self, value: float) -> str | None:
        lo, hi = self.limits.gripper_limits
        if not (np.isfinite(value) and lo - 1e-9 <= value <= hi + 1e-9):
            return f"gripper {value} outside gripper_limits [{lo}, {hi}]"
        return None
