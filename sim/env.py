"""`TabletopEnv`: the Gymnasium environment of the built-in manipulation benchmark.

Action (the OpenVLA / Bridge convention), float32 [7]:
    [dx, dy, dz, droll, dpitch, dyaw, gripper]
  - dx, dy, dz: end-effector translation for this control step, metres, world frame. Clipped to
    +-MAX_TRANSLATION (0.03 m per step = 0.6 m/s at 20 Hz). The new target is the *measured*
    end-effector pose plus the delta, as on a real delta-EE controller, so a blocked gripper
    does not wind up.
  - droll, dpitch, dyaw: added to the end-effector's extrinsic XYZ Euler angles, radians.
    Clipped to +-MAX_ROTATION (0.15 rad per step). Roll and pitch are then limited to
    +-MAX_TILT from pointing straight down; the scripted experts only use yaw.
  - gripper: absolute opening command in [0, 1], 1 = fully open (9 cm), 0 = closed; values in
    between command a proportional finger position. This is the OpenVLA convention after its
    gripper transform (1 = open). Values outside [0, 1] by more than GRIPPER_TOLERANCE raise
    `ActionError` (there is one convention; a policy emitting [-1, 1] must map it first). The
    tolerance admits the OpenVLA action-token grid, whose bin centres nearest 0 and 1 are
    -1/255 and 1 - 1/255.
  Non-finite values or a wrong shape raise `ActionError`.

Observation dict:
  image        uint8 [H, W, 3] RGB from the fixed "agentview" camera, top row = top of the scene.
  instruction  str, the episode's language instruction.
  proprio      float32 [7]: ee x, y, z (m), roll, pitch, yaw (rad), gripper opening in [0, 1].

Reward: 1.0 on the step the task succeeds (the episode then terminates), else 0.0. With
`shaped_reward=True`, grasp families add GRASP_BONUS once, the first step the target is held
off the table. Episodes truncate at the family's `max_steps`.

Determinism: everything random is drawn from the env's `np_random`, seeded by `reset(seed=...)`
(or the config seed on the first reset); MuJoCo stepping and CPU rendering are deterministic, so
the same seed gives bit-identical images and states.
"""
from __future__ import annotations

import logging
import math
import os
import string
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # headless CPU rendering; must precede `import mujoco`

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from sim import scene  # noqa: E402
from sim.errors import ActionError, SimConfigError, unknown_name  # noqa: E402
from sim.tasks import COLOURS, FAMILIES, SPLITS, TaskInstance, get_family, get_split  # noqa: E402

logger = logging.getLogger(__name__)

ACTION_DIM = 7
PROPRIO_DIM = 7
MAX_TRANSLATION = 0.03  # m per control step
MAX_ROTATION = 0.15  # rad per control step
MAX_TILT = 0.5  # rad, roll/pitch limit
GRIPPER_TOLERANCE = 2.0 / 255.0
GRASP_BONUS = 0.1
# End-effector (pinch point) workspace: above the table, inside its edges. The lower bound puts
# the fingertips 1 mm above the table top.
EE_LOW = np.array([-0.30, -0.38, scene.FINGER_HALF[2] + 0.001])
EE_HIGH = np.array([0.30, 0.38, 0.35])
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"
SUITES = ("tabletop",)


@dataclass(frozen=True)
class TabletopConfig:
    """Configuration of one `TabletopEnv`."""

    family: str = "pick"
    """Task family: one of `sim.list_families()` (pick, push, place, stack)."""
    split: str = "id"
    """Dataset split: one of `sim.list_splits()` (id, id_clutter, ood_combo, ood_distractor, ood_paraphrase, ood_visual, ood)."""
    seed: int | None = None
    """Seed of the first `reset()` when it is called without one; None = fresh OS entropy."""
    image_size: int = 128
    """Side of the square agent-view image, pixels (OpenVLA resizes to 224 itself)."""
    shaped_reward: bool = False
    """Add a one-off GRASP_BONUS when the target is first held off the table (grasp families)."""
    max_steps: int | None = None
    """Episode length limit in control steps; None = the family's default."""

    def __post_init__(self) -> None:
        get_family(self.family)
        get_split(self.split)
        if not isinstance(self.image_size, int) or not 16 <= self.image_size <= 1024:
            raise SimConfigError(
                f"TabletopConfig.image_size={self.image_size!r}: expected an int in [16, 1024] "
                "(square images, e.g. 128 or 224)"
            )
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise SimConfigError(f"TabletopConfig.seed={self.seed!r}: expected a non-negative int or None")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise SimConfigError(f"TabletopConfig.max_steps={self.max_steps!r}: expected a positive int or None")

    @property
    def episode_steps(self) -> int:
        """The effective episode length limit."""
        return self.max_steps if self.max_steps is not None else get_family(self.family).max_steps


def euler_to_quat(rpy: np.ndarray) -> np.ndarray:
    """Extrinsic XYZ Euler angles (R = Rz(yaw) Ry(pitch) Rx(roll)) -> MuJoCo quaternion [w, x, y, z]."""
    r, p, y = (float(v) / 2 for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ])


def mat_to_euler(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> extrinsic XYZ Euler angles [roll, pitch, yaw]."""
    pitch = math.asin(float(np.clip(-mat[2, 0], -1.0, 1.0)))
    roll = math.atan2(float(mat[2, 1]), float(mat[2, 2]))
    yaw = math.atan2(float(mat[1, 0]), float(mat[0, 0]))
    return np.array([roll, pitch, yaw])


def wrap_angle(a: float) -> float:
    """Angle in (-pi, pi]."""
    return float((a + math.pi) % (2 * math.pi) - math.pi)


def look_at_quat(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Quaternion of a MuJoCo camera at `eye` looking at `target` with world z up."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    # MuJoCo cameras look along their -z axis with +y up in the image.
    mat = np.stack([right, up, -forward], axis=1)  # columns = camera x, y, z in world
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


class TabletopEnv(gym.Env):
    """Tabletop manipulation with a parallel-jaw gripper; see the module docstring for the API."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / scene.CONTROL_DT))}

    def __init__(self, config: TabletopConfig | None = None, render_mode: str | None = "rgb_array") -> None:
        self.config = config or TabletopConfig()
        if render_mode not in (None, "rgb_array"):
            raise SimConfigError(f"render_mode={render_mode!r}: only 'rgb_array' (or None) is supported")
        self.render_mode = render_mode
        self.family = get_family(self.config.family)
        size = self.config.image_size
        self.model = mujoco.MjModel.from_xml_string(scene.build_mjcf(size))
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None  # created on first render: keeps forked workers GL-free
        self._egl = False  # whether the renderer's context is EGL's, unbound after every frame (_unbind_egl_context)
        self._ids()
        self._nominal = {
            "cam_fovy": self.model.cam_fovy[self._cam].copy(),
            "light_dir": self.model.light_dir[self._light].copy(),
            "light_diffuse": self.model.light_diffuse[self._light].copy(),
            "table_rgba": self.model.geom_rgba[self._table].copy(),
        }
        self.action_space = gym.spaces.Box(
            low=np.array([-MAX_TRANSLATION] * 3 + [-MAX_ROTATION] * 3 + [0.0], dtype=np.float32),
            high=np.array([MAX_TRANSLATION] * 3 + [MAX_ROTATION] * 3 + [1.0], dtype=np.float32),
            dtype=np.float32,
        )
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
            "instruction": gym.spaces.Text(max_length=256, charset=INSTRUCTION_CHARSET),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
        })
        self.task: TaskInstance | None = None
        self._first_reset = True
        self._steps = 0
        self._bonus_paid = False
        self._start_pos: dict[str, np.ndarray] = {}
        self._last_image: np.ndarray | None = None

    # -- model bookkeeping ----------------------------------------------------------------------
    def _ids(self) -> None:
        m = self.model
        name = mujoco.mj_name2id
        self._cam = name(m, mujoco.mjtObj.mjOBJ_CAMERA, "agentview")
        self._light = name(m, mujoco.mjtObj.mjOBJ_LIGHT, "key")
        self._table = name(m, mujoco.mjtObj.mjOBJ_GEOM, "table")
        self._hand = name(m, mujoco.mjtObj.mjOBJ_BODY, "hand")
        self._pinch = name(m, mujoco.mjtObj.mjOBJ_SITE, "pinch")
        self._hand_qpos = m.jnt_qposadr[name(m, mujoco.mjtObj.mjOBJ_JOINT, "hand")]
        self._hand_qvel = m.jnt_dofadr[name(m, mujoco.mjtObj.mjOBJ_JOINT, "hand")]
        self._finger_qpos = [m.jnt_qposadr[name(m, mujoco.mjtObj.mjOBJ_JOINT, f)] for f in ("finger_left", "finger_right")]
        self._finger_geoms = {name(m, mujoco.mjtObj.mjOBJ_GEOM, f) for f in ("finger_left", "finger_right")}
        self._ee_mocap = m.body_mocapid[name(m, mujoco.mjtObj.mjOBJ_BODY, "ee_target")]
        self._slots: dict[str, dict[str, int]] = {}
        index = 0
        for kind in scene.SLOT_COUNTS:
            for slot in scene.slot_names(kind):
                body = name(m, mujoco.mjtObj.mjOBJ_BODY, slot)
                info = {"body": body, "geom": name(m, mujoco.mjtObj.mjOBJ_GEOM, slot), "index": index}
                if kind == "plate":
                    info["mocap"] = int(m.body_mocapid[body])
                else:
                    jnt = name(m, mujoco.mjtObj.mjOBJ_JOINT, slot)
                    info["qpos"], info["qvel"] = int(m.jnt_qposadr[jnt]), int(m.jnt_dofadr[jnt])
                self._slots[slot] = info
                index += 1

    # -- privileged state (used by success checks and the scripted experts) --------------------
    def body_pos(self, slot: str) -> np.ndarray:
        """World position [3] of an object slot's body."""
        return self.data.xpos[self._slots[slot]["body"]].copy()

    def body_yaw(self, slot: str) -> float:
        """Rotation of an object about world z, radians."""
        return float(mat_to_euler(self.data.xmat[self._slots[slot]["body"]].reshape(3, 3))[2])

    def start_pos(self, slot: str) -> np.ndarray:
        """World position [3] of an object slot at the end of `reset()`."""
        return self._start_pos[slot].copy()

    def touching_fingers(self, slot: str) -> bool:
        """True if either finger touches the slot's geom."""
        return bool(self._finger_contacts(slot))

    def pinched(self, slot: str) -> bool:
        """Both fingers touch the object (lifted or not)."""
        return len(self._finger_contacts(slot)) == 2

    def grasped(self, slot: str) -> bool:
        """Both fingers touch the object and it is off the table."""
        kind = self.task.placement(slot).kind if self.task else "block"
        lifted = float(self.body_pos(slot)[2]) > scene.REST_Z[kind] + 0.01
        return self.pinched(slot) and lifted

    def _finger_contacts(self, slot: str) -> set[int]:
        geom = self._slots[slot]["geom"]
        n = self.data.ncon
        g1, g2 = self.data.contact.geom1[:n], self.data.contact.geom2[:n]
        found = set()
        for f in self._finger_geoms:
            if np.any((g1 == geom) & (g2 == f)) or np.any((g2 == geom) & (g1 == f)):
                found.add(f)
        return found

    @property
    def ee_pos(self) -> np.ndarray:
        """Pinch point (between the fingertips' centres), world frame [3]."""
        return self.data.site_xpos[self._pinch].copy()

    @property
    def ee_euler(self) -> np.ndarray:
        """Hand orientation as extrinsic XYZ Euler angles [3]."""
        return mat_to_euler(self.data.xmat[self._hand].reshape(3, 3))

    @property
    def gripper_opening(self) -> float:
        """Mean finger opening in [0, 1], 1 = fully open."""
        q = self.data.qpos[self._finger_qpos]
        return float(np.clip(q.mean() / scene.FINGER_MAX, 0.0, 1.0))

    @property
    def finger_qpos(self) -> np.ndarray:
        """Left and right finger joint positions [2], metres (LIBERO `gripper_states`)."""
        return self.data.qpos[self._finger_qpos].copy()

    @property
    def steps(self) -> int:
        """Control steps taken in the current episode."""
        return self._steps

    # -- gym API -----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is None and self._first_reset:
            seed = self.config.seed
        self._first_reset = False
        super().reset(seed=seed)
        self.task = self.family.sample(self.np_random, self.config.split)
        self._apply_task(self.task)
        self._steps = 0
        self._bonus_paid = False
        obs = self._observation()
        return obs, self._info(success=False)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise SimConfigError("TabletopEnv.step() called before reset(); call env.reset(seed=...) first")
        a = self._validate_action(action)
        pos = np.clip(self.ee_pos + np.clip(a[:3], -MAX_TRANSLATION, MAX_TRANSLATION), EE_LOW, EE_HIGH)
        rpy = self.ee_euler + np.clip(a[3:6], -MAX_ROTATION, MAX_ROTATION)
        rpy[:2] = np.clip(rpy[:2], -MAX_TILT, MAX_TILT)
        rpy[2] = wrap_angle(rpy[2])
        # The pinch site sits at the hand origin, so the hand's target pose is the pinch target.
        self.data.mocap_pos[self._ee_mocap] = pos
        self.data.mocap_quat[self._ee_mocap] = euler_to_quat(rpy)
        self.data.ctrl[:] = float(np.clip(a[6], 0.0, 1.0)) * scene.FINGER_MAX
        mujoco.mj_step(self.model, self.data, nstep=scene.SUBSTEPS)
        self._steps += 1

        success = self.family.success(self.task, self)
        reward = 1.0 if success else 0.0
        if self.config.shaped_reward and self.family.grasps_target and not self._bonus_paid:
            if self.grasped(self.task.target):
                reward += GRASP_BONUS
                self._bonus_paid = True
        truncated = not success and self._steps >= self.config.episode_steps
        return self._observation(), reward, success, truncated, self._info(success=success)

    def render(self) -> np.ndarray | None:
        """The last agent-view frame, uint8 [H, W, 3] (None when render_mode is None)."""
        if self.render_mode is None:
            return None
        return self._last_image.copy() if self._last_image is not None else self._render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- internals ---------------------------------------------------------------------------------
    def _validate_action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,):
            raise ActionError(
                f"action has shape {a.shape}; expected ({ACTION_DIM},) = [dx, dy, dz, droll, dpitch, dyaw, gripper]"
            )
        if not np.all(np.isfinite(a)):
            raise ActionError(f"action {a.tolist()} contains NaN or inf; check the policy's output and unnormalization")
        if not -GRIPPER_TOLERANCE <= a[6] <= 1.0 + GRIPPER_TOLERANCE:
            raise ActionError(
                f"action[6] (gripper) = {a[6]:.4f}; expected [0, 1] with 1 = open, 0 = closed. "
                "If your policy emits [-1, 1] (LIBERO/robosuite: -1 = open), map it with g = clip(1 - a, 0, 1)."
            )
        return a

    def _apply_task(self, task: TaskInstance) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        used = {p.slot: p for p in task.placements}
        for slot, info in self._slots.items():
            kind = slot.rstrip("0123456789")
            p = used.get(slot)
            if p is None:
                xyz, quat = np.array(scene.park_position(info["index"])), np.array([1.0, 0, 0, 0])
            else:
                xyz = np.array([p.xy[0], p.xy[1], scene.REST_Z[kind]])
                quat = euler_to_quat(np.array([0.0, 0.0, p.yaw]))
                m.geom_rgba[info["geom"], :3] = COLOURS[p.colour]
            # Parked bodies neither collide nor fall, so they cost the solver nothing.
            active = p is not None
            m.geom_contype[info["geom"]] = m.geom_conaffinity[info["geom"]] = 1 if active else 0
            m.body_gravcomp[info["body"]] = 0.0 if active else 1.0
            if kind == "plate":
                d.mocap_pos[info["mocap"]], d.mocap_quat[info["mocap"]] = xyz, quat
            else:
                d.qpos[info["qpos"]:info["qpos"] + 3] = xyz
                d.qpos[info["qpos"] + 3:info["qpos"] + 7] = quat
        # Gripper: start above the table, open, pointing down, with a small random offset.
        start = np.array(scene.EE_START) + self.np_random.uniform(-0.02, 0.02, size=3)
        d.qpos[self._hand_qpos:self._hand_qpos + 3] = start
        d.qpos[self._hand_qpos + 3:self._hand_qpos + 7] = [1.0, 0.0, 0.0, 0.0]
        d.mocap_pos[self._ee_mocap], d.mocap_quat[self._ee_mocap] = start, [1.0, 0.0, 0.0, 0.0]
        d.qpos[self._finger_qpos] = scene.FINGER_MAX
        d.ctrl[:] = scene.FINGER_MAX
        self._apply_visual(task)
        mujoco.mj_forward(m, d)
        # Let objects settle onto the table (a few ms) before the policy sees the scene.
        mujoco.mj_step(m, d, nstep=scene.SUBSTEPS)
        self._start_pos = {slot: self.body_pos(slot) for slot in used}

    def _apply_visual(self, task: TaskInstance) -> None:
        m, v = self.model, task.visual
        eye, target = np.array(scene.CAMERA_EYE), np.array(scene.CAMERA_TARGET)
        m.cam_fovy[self._cam] = self._nominal["cam_fovy"]
        m.light_dir[self._light] = self._nominal["light_dir"]
        m.light_diffuse[self._light] = self._nominal["light_diffuse"]
        m.geom_rgba[self._table] = self._nominal["table_rgba"]
        if v is not None:
            eye, target = eye + np.array(v.eye_offset), target + np.array(v.target_offset)
            m.cam_fovy[self._cam] += v.fovy_offset
            m.light_diffuse[self._light] = np.clip(self._nominal["light_diffuse"] * v.light_scale, 0.0, 1.0)
            m.light_dir[self._light] = np.array(v.light_dir) / np.linalg.norm(v.light_dir)
            m.geom_rgba[self._table, :3] = v.table_rgb
        m.cam_pos[self._cam] = eye
        m.cam_quat[self._cam] = look_at_quat(eye, target)

    def _render(self) -> np.ndarray:
        if self._renderer is None:
            size = self.config.image_size
            self._renderer = mujoco.Renderer(self.model, height=size, width=size)
            self._egl = _is_egl(self._renderer)
        self._renderer.update_scene(self.data, camera=self._cam)
        image = self._renderer.render()  # fresh uint8 [H, W, 3] array owned by the caller
        if self._egl:
            _unbind_egl_context()
        return image

    def _proprio(self) -> np.ndarray:
        return np.concatenate([self.ee_pos, self.ee_euler, [self.gripper_opening]]).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        image = self._render() if self.render_mode is not None else np.zeros(
            self.observation_space["image"].shape, np.uint8)
        self._last_image = image
        return {"image": image, "instruction": self.task.instruction, "proprio": self._proprio()}

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "success": success,
            "is_grasped": self.grasped(self.task.target) if self.family.grasps_target else False,
            "family": self.task.family,
            "shift": self.task.shift or "none",
        }


def _is_egl(renderer: mujoco.Renderer) -> bool:
    if os.environ.get("MUJOCO_GL") != "egl":
        return False
    from mujoco import egl

    return isinstance(getattr(renderer, "_gl_context", None), egl.GLContext)


def _unbind_egl_context() -> None:
    """Unbind the current EGL context from this thread.

    mujoco.Renderer leaves its context current in the thread that last rendered, and EGL refuses to make a
    context current in a second thread (EGL_BAD_ACCESS). An env that renders in one thread (a ROS executor)
    and is closed or collected in another (the main thread at shutdown) then fails to free its GL
    resources. Unbound after every frame, any thread can close it; the next render binds it again.
    """
    from mujoco import egl

    if egl.EGL_DISPLAY is not None:  # None once MuJoCo's atexit hook has terminated the display
        egl.EGL.eglMakeCurrent(egl.EGL_DISPLAY, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_CONTEXT)


def make_env(
    suite: str = "tabletop",
    family: str = "pick",
    split: str = "id",
    seed: int | None = None,
    image_size: int = 128,
    shaped_reward: bool = False,
    max_steps: int | None = None,
    render_mode: str | None = "rgb_array",
) -> TabletopEnv:
    """Build one environment of `suite` (only "tabletop" exists). Names are validated with hints."""
    if suite not in SUITES:
        raise unknown_name("suite", suite, SUITES)
    config = TabletopConfig(family=family, split=split, seed=seed, image_size=image_size,
                            shaped_reward=shaped_reward, max_steps=max_steps)
    return TabletopEnv(config, render_mode=render_mode)


def list_families(suite: str = "tabletop") -> list[str]:
    """Names of the task families of `suite`."""
    if suite not in SUITES:
        raise unknown_name("suite", suite, SUITES)
    return list(FAMILIES)


def list_splits(suite: str = "tabletop") -> list[str]:
    """Names of the splits of `suite`."""
    if suite not in SUITES:
        raise unknown_name("suite", suite, SUITES)
    return list(SPLITS)
