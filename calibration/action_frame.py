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

`fit_motion` measures the translation part instead of trusting it: the robot executes small
commanded deltas c_i (what the node sends with the identity frame) and a marker on the gripper is
seen to move by d_i in the robot frame; the orthogonal Procrustes fit d_i ~ s M c_i gives the
command-to-motion map, and `propose_action_frame` inverts it after the policy-to-robot axes the
user declares (A): R = M^T A, translation scale = 1 / s, snapped to a signed permutation when the
leftover rotation is below a threshold. Residuals are reported for the fit and for the file written.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calibration.errors import CalibrationError, read_yaml
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


def matrix_to_rpy(rotation: np.ndarray) -> tuple[float, float, float]:
    """Inverse of `rpy_matrix` for a proper rotation [3, 3], radians (roll, pitch, yaw)."""
    r = rotation
    pitch = math.asin(float(np.clip(-r[2, 0], -1.0, 1.0)))
    return math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0])


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a proper rotation [3, 3], degrees."""
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


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


def nearest_signed_permutation(matrix: np.ndarray) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(permutation, signs) of the signed permutation P (P[i, perm[i]] = sign[i]) closest to ``matrix`` [3, 3]."""
    best, best_score = ((0, 1, 2), (1.0, 1.0, 1.0)), -math.inf
    for perm in itertools.permutations(range(3)):
        signs = tuple(1.0 if matrix[i, j] >= 0 else -1.0 for i, j in enumerate(perm))
        score = sum(abs(matrix[i, j]) for i, j in enumerate(perm))
        if score > best_score:
            best, best_score = (tuple(perm), signs), score
    return best  # type: ignore[return-value]


@dataclass(frozen=True)
class MotionFit:
    """d_i ~ scale * rotation @ c_i: how commanded deltas move the gripper in the robot frame."""

    rotation: np.ndarray
    """M [3, 3], orthogonal (a reflection when the command frame is mirrored): command -> robot frame."""
    scale: float
    """s: metres moved per commanded unit."""
    commands: np.ndarray
    """c [N, 3]: the commanded deltas."""
    observed: np.ndarray
    """d [N, 3]: the marker's measured displacements in the robot frame, metres."""

    def residuals(self, rotation: np.ndarray | None = None, scale: float | None = None) -> np.ndarray:
        """d_i - s M c_i [N, 3] metres, for the fit or for another (rotation, scale)."""
        m = self.rotation if rotation is None else rotation
        s = self.scale if scale is None else scale
        return self.observed - s * self.commands @ m.T


def fit_motion(commands: np.ndarray, observed: np.ndarray) -> MotionFit:
    """Orthogonal Procrustes with scale: commands [N, 3] vs observed displacements [N, 3] (metres)."""
    c, d = np.asarray(commands, np.float64), np.asarray(observed, np.float64)
    if c.ndim != 2 or c.shape[1] != 3 or c.shape != d.shape:
        raise CalibrationError(f"commands {c.shape} and observed motions {d.shape} must both be [N, 3]")
    if len(c) < 3 or not (np.all(np.isfinite(c)) and np.all(np.isfinite(d))):
        raise CalibrationError(f"{len(c)} motion steps: need at least 3, all finite")
    sv = np.linalg.svd(c, compute_uv=False)
    if sv[-1] < 0.2 * sv[0]:
        raise CalibrationError(f"the commanded deltas span fewer than three directions (singular values "
                               f"{np.round(sv, 5).tolist()}); command steps along x, y and z")
    u, sigma, vt = np.linalg.svd(d.T @ c)
    m = u @ vt
    scale = float(np.sum(sigma) / np.sum(c * c))
    if scale <= 0:
        raise CalibrationError("the observed motion does not follow the commands (fitted scale <= 0)")
    return MotionFit(rotation=m, scale=scale, commands=c, observed=d)


def propose_action_frame(fit: MotionFit, declared: ActionFrame, snap_deg: float = 3.0) -> tuple[ActionFrame, dict]:
    """The action frame that makes a policy action a move the gripper by ``declared``'s A a (robot frame),
    given how commands move it (``fit``); gripper, limits and rotation scale are taken from ``declared``.
    Returns the frame and a report of residuals (millimetres) and the fitted numbers."""
    total = fit.rotation.T @ declared.matrix
    perm, signs = nearest_signed_permutation(total)
    p = np.zeros((3, 3))
    for i, (j, s) in enumerate(zip(perm, signs)):
        p[i, j] = s
    leftover = total @ p.T
    if np.linalg.det(leftover) < 0:
        raise CalibrationError("the fitted map is not close to any signed axis permutation with the same handedness; "
                               "check the commands and the marker id (residuals too large to propose a frame)")
    off_deg = rotation_angle_deg(leftover)
    rpy = (0.0, 0.0, 0.0) if off_deg <= snap_deg else matrix_to_rpy(leftover)
    frame = replace(declared, permutation=perm, signs=signs, rotation_rpy=tuple(round(v, 6) for v in rpy),
                    translation_scale=round(declared.translation_scale / fit.scale, 6), source="--from-motion")
    # The map from commands to robot-frame motion that the written file assumes (A R^T, scaled).
    written = declared.matrix @ frame.matrix.T
    fit_res = np.linalg.norm(fit.residuals(), axis=1) * 1e3
    written_res = np.linalg.norm(fit.residuals(written, declared.translation_scale / frame.translation_scale),
                                 axis=1) * 1e3
    report = {
        "steps": int(len(fit.commands)),
        "fitted_scale": round(fit.scale, 6),
        "fitted_matrix": np.round(fit.rotation, 6).tolist(),
        "rotation_off_axes_deg": round(off_deg, 4),
        "snapped": bool(off_deg <= snap_deg),
        "residual_fit_mm": {"rms": round(float(np.sqrt(np.mean(fit_res ** 2))), 4),
                            "max": round(float(fit_res.max()), 4)},
        "residual_written_mm": {"rms": round(float(np.sqrt(np.mean(written_res ** 2))), 4),
                                "max": round(float(written_res.max()), 4),
                                "per_step": [round(float(v), 3) for v in written_res]},
        "step_length_mm": {"mean": round(float(np.mean(np.linalg.norm(fit.observed, axis=1)) * 1e3), 3)},
    }
    return frame, report


def load_action_frame(path: str | Path) -> ActionFrame:
    """Read and validate an action-frame YAML; errors name the file and the field."""
    path = Path(path)
    data = read_yaml(path, "action frame", f"write one with `rlrc-calib action-frame --out {path}`")
    return ActionFrame.from_yaml_dict(data, source=str(path))


__all__ = ["ActionFrame", "MotionFit", "fit_motion", "load_action_frame", "matrix_to_rpy", "nearest_signed_permutation",
           "propose_action_frame", "rotation_angle_deg", "rpy_matrix"]
