"""Action-frame calibration: the policy's action frame -> the robot's base frame.

A VLA emits ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` in the frame of the robot it was
trained on (Bridge: WidowX base; LIBERO: the Panda base). On another robot the axes may be
permuted or flipped, the units scaled, and the gripper convention inverted. This YAML says how,
and the VLA node applies it to every action before it becomes a velocity / gripper command:

    step_linear  = clip(R @ (a[0:3] * scale.translation), +-limits.max_translation)   # robot base frame, m
    step_angular = clip(R @ (a[3:6] * scale.rotation),    +-limits.max_rotation)      # rad (small-angle)
    gripper      = output_closed + (a[6] - input_closed) / (input_open - input_closed)
                                 * (output_open - output_closed), clipped to the output range
    R = Rz(yaw) Ry(pitch) Rx(roll) @ P,   P[i, permutation[i]] = signs[i]

File layout (every key optional except ``version``; defaults = identity)::

    version: 1
    robot_frame: base_link
    axes: {permutation: [0, 1, 2], signs: [1, 1, 1], rotation_rpy: [0.0, 0.0, 0.0]}
    scale: {translation: 1.0, rotation: 1.0}
    gripper: {input_open: 1.0, input_closed: 0.0, output_open: 1.0, output_closed: 0.0}
    limits: {max_translation: 0.05, max_rotation: 0.25}

The rotation part treats the Euler deltas as a small rotation vector, which is what they are at a
control step's size; it is exact for permutations and sign flips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlrc_runtime.config import did_you_mean
from rlrc_runtime.errors import ConfigError

VERSION = 1
SECTIONS = {
    "version": None,
    "robot_frame": None,
    "axes": ("permutation", "signs", "rotation_rpy"),
    "scale": ("translation", "rotation"),
    "gripper": ("input_open", "input_closed", "output_open", "output_closed"),
    "limits": ("max_translation", "max_rotation"),
}


def rpy_matrix(rpy: tuple[float, float, float]) -> np.ndarray:
    """Extrinsic XYZ Euler angles -> rotation matrix [3, 3] (R = Rz Ry Rx)."""
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class ActionFrame:
    """A validated action-frame calibration (see the module docstring for the maths)."""

    permutation: tuple[int, int, int] = (0, 1, 2)
    """Robot axis i takes policy axis permutation[i]."""
    signs: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Sign (+1 / -1) applied to robot axis i after the permutation."""
    rotation_rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Extra rotation of the permuted frame into the robot base frame, radians."""
    translation_scale: float = 1.0
    """Multiplies dx, dy, dz (e.g. unit changes)."""
    rotation_scale: float = 1.0
    """Multiplies droll, dpitch, dyaw."""
    gripper_input_open: float = 1.0
    """Policy gripper value meaning fully open (OpenVLA: 1)."""
    gripper_input_closed: float = 0.0
    """Policy gripper value meaning closed (OpenVLA: 0)."""
    gripper_output_open: float = 1.0
    """Robot gripper command for fully open."""
    gripper_output_closed: float = 0.0
    """Robot gripper command for closed."""
    max_translation: float = 0.05
    """Clamp of each translation component per action, metres."""
    max_rotation: float = 0.25
    """Clamp of each rotation component per action, radians."""
    robot_frame: str = "base_link"
    """Name of the robot frame the result is expressed in."""
    source: str = field(default="<defaults>", compare=False)
    """Where it was loaded from (for error messages)."""

    def __post_init__(self) -> None:
        where = f"action frame {self.source}"
        perm = tuple(self.permutation)
        if len(perm) != 3 or sorted(perm) != [0, 1, 2] or not all(isinstance(i, int) for i in perm):
            raise ConfigError(f"{where}: axes.permutation={list(perm)} must be a permutation of [0, 1, 2]")
        if len(self.signs) != 3 or any(s not in (1, -1, 1.0, -1.0) for s in self.signs):
            raise ConfigError(f"{where}: axes.signs={list(self.signs)} must be three values each +1 or -1")
        if len(self.rotation_rpy) != 3 or not all(math.isfinite(float(v)) for v in self.rotation_rpy):
            raise ConfigError(f"{where}: axes.rotation_rpy={list(self.rotation_rpy)} must be three finite radians")
        for name in ("translation_scale", "rotation_scale", "max_translation", "max_rotation"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{where}: {name}={v!r} must be a finite number > 0")
        for name in ("gripper_input_open", "gripper_input_closed", "gripper_output_open", "gripper_output_closed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where}: {name}={v!r} must be a finite number")
        if self.gripper_input_open == self.gripper_input_closed:
            raise ConfigError(f"{where}: gripper.input_open and gripper.input_closed are both "
                              f"{self.gripper_input_open}; they must differ")
        if not isinstance(self.robot_frame, str) or not self.robot_frame:
            raise ConfigError(f"{where}: robot_frame={self.robot_frame!r} must be a non-empty frame name")

    @property
    def matrix(self) -> np.ndarray:
        """R [3, 3]: policy-frame vector -> robot-frame vector."""
        p = np.zeros((3, 3))
        for i, (j, s) in enumerate(zip(self.permutation, self.signs)):
            p[i, j] = float(s)
        return rpy_matrix(tuple(float(v) for v in self.rotation_rpy)) @ p

    def apply(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Policy action [7] -> (linear step [3] m, angular step [3] rad, gripper command), clamped."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            raise ConfigError(f"action has shape {a.shape}; the action frame maps 7-D actions")
        r = self.matrix
        lin = np.clip(r @ (a[0:3] * self.translation_scale), -self.max_translation, self.max_translation)
        ang = np.clip(r @ (a[3:6] * self.rotation_scale), -self.max_rotation, self.max_rotation)
        t = (a[6] - self.gripper_input_closed) / (self.gripper_input_open - self.gripper_input_closed)
        g = self.gripper_output_closed + t * (self.gripper_output_open - self.gripper_output_closed)
        lo, hi = sorted((self.gripper_output_closed, self.gripper_output_open))
        return lin, ang, float(np.clip(g, lo, hi))

    # -- YAML ----------------------------------------------------------------------------------
    def to_yaml_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "robot_frame": self.robot_frame,
            "axes": {"permutation": list(self.permutation), "signs": [int(s) for s in self.signs],
                     "rotation_rpy": [float(v) for v in self.rotation_rpy]},
            "scale": {"translation": float(self.translation_scale), "rotation": float(self.rotation_scale)},
            "gripper": {"input_open": float(self.gripper_input_open), "input_closed": float(self.gripper_input_closed),
                        "output_open": float(self.gripper_output_open),
                        "output_closed": float(self.gripper_output_closed)},
            "limits": {"max_translation": float(self.max_translation), "max_rotation": float(self.max_rotation)},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "# rlrc_runtime action-frame calibration (see calibration/action_frame.py)\n"
        path.write_text(text + yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))
        return path

    @classmethod
    def from_yaml_dict(cls, data: Any, source: str = "<dict>") -> "ActionFrame":
        if not isinstance(data, dict):
            raise ConfigError(f"action frame {source}: expected a mapping at the top level, got {type(data).__name__}")
        for key, value in data.items():
            if key not in SECTIONS:
                raise ConfigError(f"action frame {source}: unknown key {key!r}; expected {sorted(SECTIONS)}."
                                  f"{did_you_mean(str(key), sorted(SECTIONS))}")
            sub = SECTIONS[key]
            if sub is not None:
                if not isinstance(value, dict):
                    raise ConfigError(f"action frame {source}: {key} must be a mapping with keys {list(sub)}")
                for k in value:
                    if k not in sub:
                        raise ConfigError(f"action frame {source}: unknown key {key}.{k}; expected {list(sub)}."
                                          f"{did_you_mean(str(k), list(sub))}")
        if data.get("version") != VERSION:
            raise ConfigError(f"action frame {source}: version={data.get('version')!r}; expected {VERSION}")
        axes, scale = data.get("axes", {}), data.get("scale", {})
        grip, lim = data.get("gripper", {}), data.get("limits", {})
        d = cls()
        try:
            return cls(
                permutation=tuple(axes.get("permutation", d.permutation)),
                signs=tuple(axes.get("signs", d.signs)),
                rotation_rpy=tuple(axes.get("rotation_rpy", d.rotation_rpy)),
                translation_scale=scale.get("translation", d.translation_scale),
                rotation_scale=scale.get("rotation", d.rotation_scale),
                gripper_input_open=grip.get("input_open", d.gripper_input_open),
                gripper_input_closed=grip.get("input_closed", d.gripper_input_closed),
                gripper_output_open=grip.get("output_open", d.gripper_output_open),
                gripper_output_closed=grip.get("output_closed", d.gripper_output_closed),
                max_translation=lim.get("max_translation", d.max_translation),
                max_rotation=lim.get("max_rotation", d.max_rotation),
                robot_frame=data.get("robot_frame", d.robot_frame),
                source=source,
            )
        except TypeError as exc:  # e.g. a scalar where a list belongs
            raise ConfigError(f"action frame {source}: malformed value ({exc})") from exc


def load_action_frame(path: str | Path) -> ActionFrame:
    """Read and validate an action-frame YAML; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"action frame file {path} does not exist; write one with `rlrc-calib action-frame --out {path}`")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"action frame file {path} is not valid YAML: {exc}") from exc
    return ActionFrame.from_yaml_dict(data, source=str(path))


__all__ = ["ActionFrame", "load_action_frame", "rpy_matrix"]
