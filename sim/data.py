"""Demonstration datasets: write expert demos, read ours and LIBERO's, compute norm_stats.

File layout (LIBERO / robomimic HDF5; what we write, and what the reader accepts):

    data/                                   attrs: total, num_demos, env_args (JSON), dataset_name,
                                                   rlrc_sim_format, problem_info (JSON, only when
                                                   every demo shares one instruction)
    data/demo_{i}/                          attrs: num_samples, instruction, family, seed, split, shift
    data/demo_{i}/actions                   float32 [T, 7]  [dx, dy, dz, droll, dpitch, dyaw, gripper]
    data/demo_{i}/rewards                   float32 [T]     reward received after actions[t]
    data/demo_{i}/dones                     uint8   [T]     1 on the last step
    data/demo_{i}/obs/agentview_rgb         uint8   [T, H, W, 3]  observation before actions[t]
    data/demo_{i}/obs/ee_pos                float32 [T, 3]
    data/demo_{i}/obs/ee_ori                float32 [T, 3]  extrinsic XYZ Euler angles
    data/demo_{i}/obs/gripper_states        float32 [T, 2]  finger joint positions, metres
    data/demo_{i}/obs/proprio               float32 [T, 7]  the env's proprio observation

Conventions differ between our files and published LIBERO files, and the reader reconciles them
(a file is "ours" when `data.attrs["rlrc_sim_format"]` exists; anything else is read as LIBERO):
  - images: robosuite renders with OpenGL's bottom-left origin, so LIBERO's agentview/eye-in-hand
    frames are stored rotated by 180 degrees; OpenVLA's LIBERO pipeline undoes it with
    `img[::-1, ::-1]`, and so do we (`flip_images`). Our frames are stored upright.
  - gripper: LIBERO actions use -1 = open, +1 = close; ours (and OpenVLA's training data) use
    1 = open, 0 = closed. LIBERO's last action dim is mapped with OpenVLA's transform
    `clip(1 - a, 0, 1)` (`convert_gripper`).
  - instruction: ours is a per-demo attribute; LIBERO has one per file, in
    `data.attrs["problem_info"]` (JSON, key `language_instruction`).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from sim.errors import DatasetError, SimConfigError, unknown_name
from sim.tasks import FAMILIES, SPLITS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_DATASET_NAME = "rlrc_sim_tabletop"
IMAGE_KEY = "agentview_rgb"
COMPRESSIONS = (None, "lzf", "gzip")


# ------------------------------------------------------------------------------------------------
# Generating expert episodes
# ------------------------------------------------------------------------------------------------
@dataclass
class Episode:
    """One expert rollout. Arrays are per control step t = 0..T-1 (obs before the action)."""

    family: str
    split: str
    seed: int
    instruction: str
    shift: str
    success: bool
    images: np.ndarray  # uint8 [T, H, W, 3]
    actions: np.ndarray  # float32 [T, 7]
    rewards: np.ndarray  # float32 [T]
    dones: np.ndarray  # uint8 [T]
    ee_pos: np.ndarray  # float32 [T, 3]
    ee_ori: np.ndarray  # float32 [T, 3]
    gripper_states: np.ndarray  # float32 [T, 2]
    proprio: np.ndarray  # float32 [T, 7]

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])


# Worker-local env cache: compiling the model and creating a GL context once per process, not
# once per episode, is most of the speed of demo generation.
_ENV_CACHE: dict[tuple[str, str, int], Any] = {}


DROP_WINDOW = 8
"""With `drop_prob`: the forced opening starts 0..DROP_WINDOW-1 steps into the lift/carry phases."""
DROP_STEPS = 3
"""With `drop_prob`: how many steps the executed gripper is held open."""


def run_expert_episode(family: str, split: str, seed: int, image_size: int = 128, action_noise: float = 0.0,
                       drop_prob: float = 0.0) -> Episode:
    """Roll out the family's scripted expert once from `reset(seed=seed)` and record everything.

    With `action_noise` > 0 the env executes the expert's action plus Gaussian noise (std =
    `action_noise` times the per-step translation/rotation limits; the gripper is untouched) while
    the file records the expert's clean action (DART): the closed-loop expert then demonstrates how
    to recover from the small errors a learned policy makes, which plain demos never show.

    With `drop_prob` > 0, in that share of pick/place/stack episodes (drawn from the seed) the env
    executes "open" for DROP_STEPS steps soon after the grasp while the file records the expert's
    "closed": the block falls, and the expert (which sees it has lost the block) goes back and grasps
    it again. Trained base policies that dropped a block in transit never went back for it
    (benchmarks/results/eval_base_attempt16_id.md); the drop-free demos never show a re-grasp.
    """
    from sim.env import MAX_ROTATION, MAX_TRANSLATION
    from sim.env import make_env
    from sim.experts import make_expert

    key = (family, split, image_size)
    if key not in _ENV_CACHE:
        _ENV_CACHE[key] = make_env(family=family, split=split, image_size=image_size)
    env = _ENV_CACHE[key]
    expert = make_expert(env)
    obs, _ = env.reset(seed=seed)
    expert.reset()
    noise_rng = np.random.default_rng([seed, 0xDA27])
    noise_scale = action_noise * np.array([MAX_TRANSLATION] * 3 + [MAX_ROTATION] * 3 + [0.0])
    drop_rng = np.random.default_rng([seed, 0xD209])
    drop_after = (int(drop_rng.integers(DROP_WINDOW)) if family != "push" and drop_rng.random() < drop_prob
                  else None)  # steps into lift/carry before the forced opening; None = no drop
    held, forced = 0, 0
    images, actions, rewards, dones, ee_pos, ee_ori, grip, proprio = [], [], [], [], [], [], [], []
    success = False
    while True:
        action = expert.act()
        images.append(obs["image"])
        proprio.append(obs["proprio"])
        ee_pos.append(env.ee_pos)
        ee_ori.append(env.ee_euler)
        grip.append(env.finger_qpos)
        actions.append(action)
        executed = action + noise_scale * noise_rng.standard_normal(7) if action_noise else action.copy()
        if drop_after is not None and forced < DROP_STEPS:
            held += expert.phase in ("lift", "carry")
            if held > drop_after:
                executed[6], forced = 1.0, forced + 1
        obs, reward, terminated, truncated, _ = env.step(executed.astype(np.float32))
        rewards.append(reward)
        dones.append(terminated or truncated)
        if terminated or truncated:
            success = bool(terminated)
            break
    return Episode(
        family=family, split=split, seed=seed, instruction=env.task.instruction, shift=env.task.shift or "none",
        success=success, images=np.stack(images), actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, np.float32), dones=np.asarray(dones, np.uint8),
        ee_pos=np.stack(ee_pos).astype(np.float32), ee_ori=np.stack(ee_ori).astype(np.float32),
        gripper_states=np.stack(grip).astype(np.float32), proprio=np.stack(proprio).astype(np.float32),
    )


def _run_job(job: tuple[str, str, int, int, float, float]) -> Episode:
    return run_expert_episode(*job)


@dataclass(frozen=True)
class DemoConfig:
    """What `write_demos` generates (the `demos` CLI command saves this next to its output)."""

    suite: str = "tabletop"
    """Benchmark suite; only "tabletop" exists."""
    episodes: int = 10
    """Number of *successful* demos to write (failed expert rollouts are discarded and counted)."""
    families: tuple[str, ...] = tuple(FAMILIES)
    """Families to draw from, round-robin over attempts."""
    split: str = "id"
    """Split the demos come from (normally "id": OOD splits are for evaluation)."""
    seed: int = 0
    """Attempt i uses reset seed `seed + i`."""
    image_size: int = 128
    """Side of the stored square agent-view frames, pixels."""
    workers: int = 1
    """Processes rolling out experts (each renders on the CPU; at most the number of cores helps)."""
    max_attempts: int | None = None
    """Give up after this many rollouts; None = 2 * episodes + 20."""
    compression: str | None = "lzf"
    """HDF5 filter of image datasets: None, "lzf" (fast, default) or "gzip"."""
    dataset_name: str = DEFAULT_DATASET_NAME
    """Key of this dataset in norm_stats (stored as data.attrs["dataset_name"])."""
    action_noise: float = 0.0
    """DART noise on executed actions, as a fraction of the per-step limits (labels stay clean); 0 = off."""
    drop_prob: float = 0.0
    """Share of grasping episodes in which the executed gripper is forced open after the grasp (labels stay
    the expert's, which grasps again; see `run_expert_episode`); 0 = off."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.action_noise <= 1.0:
            raise SimConfigError(f"DemoConfig.action_noise={self.action_noise!r}: expected a fraction in [0, 1]")
        if not 0.0 <= self.drop_prob <= 1.0:
            raise SimConfigError(f"DemoConfig.drop_prob={self.drop_prob!r}: expected a probability in [0, 1]")
        if self.suite != "tabletop":
            raise unknown_name("suite", self.suite, ("tabletop",))
        if not self.families:
            raise SimConfigError("DemoConfig.families is empty; give at least one family, e.g. ('pick',)")
        for name in self.families:
            if name not in FAMILIES:
                raise unknown_name("family", name, FAMILIES)
        if self.split not in SPLITS:
            raise unknown_name("split", self.split, SPLITS)
        for name in ("episodes", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SimConfigError(f"DemoConfig.{name}={value!r}: expected a positive int")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SimConfigError(f"DemoConfig.seed={self.seed!r}: expected a non-negative int")
        if not isinstance(self.image_size, int) or not 16 <= self.image_size <= 1024:
            raise SimConfigError(f"DemoConfig.image_size={self.image_size!r}: expected an int in [16, 1024]")
        if self.max_attempts is not None and self.max_attempts < self.episodes:
            raise SimConfigError(
                f"DemoConfig.max_attempts={self.max_attempts} < episodes={self.episodes}; raise it or leave it None")
        if self.compression not in COMPRESSIONS:
            raise SimConfigError(f"DemoConfig.compression={self.compression!r}: expected one of {COMPRESSIONS}")
        if not self.dataset_name:
            raise SimConfigError("DemoConfig.dataset_name is empty; it becomes the norm_stats key")

    @property
    def attempts(self) -> int:
        return self.max_attempts if self.max_attempts is not None else 2 * self.episodes + 20


@dataclass
class DemoSummary:
    """What `write_demos` did."""

    path: str
    written: int
    discarded: int
    per_family: dict[str, dict[str, int]] = field(default_factory=dict)
    """{family: {"written": n, "discarded": m}}"""
    total_steps: int = 0


def iter_expert_episodes(config: DemoConfig) -> Iterator[Episode]:
    """Expert rollouts (successful or not) in attempt order, using `config.workers` processes."""
    jobs = [(config.families[i % len(config.families)], config.split, config.seed + i, config.image_size,
             config.action_noise, config.drop_prob) for i in range(config.attempts)]
    if config.workers == 1:
        for job in jobs:
            yield _run_job(job)
        return
    # forkserver: workers must not inherit a GL context the parent may hold (see sim.vector).
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(config.workers) as pool:
        yield from pool.imap(_run_job, jobs, chunksize=1)
        # Leaving the `with` terminates workers still busy on attempts nobody needs any more.


def write_demos(config: DemoConfig, out: str | Path, progress: bool = True) -> DemoSummary:
    """Roll out experts and write the successful episodes to `out` (HDF5, layout in module doc)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary(path=str(out), written=0, discarded=0,
                          per_family={f: {"written": 0, "discarded": 0} for f in config.families})
    tmp = out.with_name(out.name + ".partial")  # a crash never leaves a valid-looking half file
    try:
        _write_demo_file(config, tmp, summary, progress)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    logger.info("wrote %d demos (%d steps) to %s; discarded %d failed rollouts",
                summary.written, summary.total_steps, out, summary.discarded)
    return summary


def _write_demo_file(config: DemoConfig, tmp: Path, summary: DemoSummary, progress: bool) -> None:
    from tqdm import tqdm

    instructions: set[str] = set()
    with h5py.File(tmp, "w") as f, tqdm(total=config.episodes, desc="demos", unit="demo", disable=not progress) as bar:
        data = f.create_group("data")
        for episode in iter_expert_episodes(config):
            if not episode.success:
                summary.discarded += 1
                summary.per_family[episode.family]["discarded"] += 1
                logger.debug("discarded %s seed %d (expert failed)", episode.family, episode.seed)
                continue
            _write_episode(data, f"demo_{summary.written}", episode, config.compression)
            instructions.add(episode.instruction)
            summary.written += 1
            summary.total_steps += episode.num_steps
            summary.per_family[episode.family]["written"] += 1
            bar.update(1)
            bar.set_postfix(discarded=summary.discarded)
            if summary.written == config.episodes:
                break
        if summary.written < config.episodes:
            raise DatasetError(
                f"only {summary.written} of {config.episodes} expert rollouts succeeded in "
                f"{config.attempts} attempts (families {config.families}, split {config.split!r}); "
                "raise DemoConfig.max_attempts (--max-attempts) or check the expert"
            )
        data.attrs["total"] = summary.total_steps
        data.attrs["num_demos"] = summary.written
        data.attrs["dataset_name"] = config.dataset_name
        data.attrs["rlrc_sim_format"] = FORMAT_VERSION
        data.attrs["env_args"] = json.dumps({
            "env_name": f"rlrc_sim/{config.suite}", "type": "rlrc_sim",
            "env_kwargs": {"families": list(config.families), "split": config.split,
                           "image_size": config.image_size, "camera_names": ["agentview"]},
        })
        data.attrs["config"] = json.dumps(asdict(config))
        if len(instructions) == 1:  # LIBERO keeps a single instruction per file here
            data.attrs["problem_info"] = json.dumps({
                "problem_name": config.dataset_name, "domain_name": config.suite,
                "language_instruction": next(iter(instructions)),
            })


def _write_episode(data: h5py.Group, name: str, ep: Episode, compression: str | None) -> None:
    g = data.create_group(name)
    g.attrs.update({"num_samples": ep.num_steps, "instruction": ep.instruction, "family": ep.family,
                    "seed": ep.seed, "split": ep.split, "shift": ep.shift})
    g.create_dataset("actions", data=ep.actions)
    g.create_dataset("rewards", data=ep.rewards)
    g.create_dataset("dones", data=ep.dones)
    obs = g.create_group("obs")
    # One chunk per frame: readers fetch single steps, and lzf works per chunk.
    obs.create_dataset(IMAGE_KEY, data=ep.images, compression=compression,
                       chunks=(1, *ep.images.shape[1:]) if compression else None)
    obs.create_dataset("ee_pos", data=ep.ee_pos)
    obs.create_dataset("ee_ori", data=ep.ee_ori)
    obs.create_dataset("gripper_states", data=ep.gripper_states)
    obs.create_dataset("proprio", data=ep.proprio)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
class Step(NamedTuple):
    """One training sample."""

    image: np.ndarray  # uint8 [H, W, 3], upright
    instruction: str
    action: np.ndarray  # float32 [7], gripper 1 = open, 0 = closed


@dataclass
class Demo:
    """One demonstration, converted to our conventions."""

    key: str
    instruction: str
    images: np.ndarray  # uint8 [T, H, W, 3], upright
    actions: np.ndarray  # float32 [T, 7], gripper 1 = open
    proprio: np.ndarray | None  # float32 [T, D] or None when the file has no proprio keys

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def steps(self) -> Iterator[Step]:
        for t in range(len(self)):
            yield Step(self.images[t], self.instruction, self.actions[t])


def _demo_index(key: str) -> int:
    try:
        return int(key.split("_")[-1])
    except ValueError:
        return 1 << 30  # non-numbered groups (e.g. "mask") sort last and are skipped below


class DemoReader:
    """Reads our HDF5 files and published LIBERO files into one stream of `Step`s.

    Args:
        path: HDF5 file.
        image_key: obs key of the frames ("agentview_rgb"; LIBERO also has "eye_in_hand_rgb").
        flip_images: rotate frames by 180 degrees; None = only for LIBERO files (see module doc).
        convert_gripper: map the gripper from LIBERO's -1 open/+1 close to 1 open/0 closed with
            `clip(1 - a, 0, 1)`; None = only for LIBERO files.
        instruction: override for files that carry none.

    Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        path: str | Path,
        image_key: str = IMAGE_KEY,
        flip_images: bool | None = None,
        convert_gripper: bool | None = None,
        instruction: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"demo file {str(self.path)!r} does not exist; generate one with "
                               "`python -m sim.cli demos --out FILE.hdf5` or check the path")
        self._file = h5py.File(self.path, "r")
        if "data" not in self._file:
            self._file.close()
            raise DatasetError(f"{self.path}: no 'data' group; expected the LIBERO/robomimic layout data/demo_i/...")
        self._data = self._file["data"]
        self.is_ours = "rlrc_sim_format" in self._data.attrs
        self.flip_images = (not self.is_ours) if flip_images is None else flip_images
        self.convert_gripper = (not self.is_ours) if convert_gripper is None else convert_gripper
        self.image_key = image_key
        self._instruction_override = instruction
        self.demo_keys = sorted((k for k in self._data if k.startswith("demo_")), key=_demo_index)
        if not self.demo_keys:
            raise DatasetError(f"{self.path}: 'data' has no demo_* groups")
        self._file_instruction = self._problem_info_instruction()

    @property
    def dataset_name(self) -> str | None:
        """data.attrs["dataset_name"] if the file names itself (ours do), else None."""
        name = self._data.attrs.get("dataset_name")
        return _as_str(name) if name is not None else None

    def _problem_info_instruction(self) -> str | None:
        raw = self._data.attrs.get("problem_info")
        if raw is None:
            return None
        try:
            info = json.loads(_as_str(raw))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{self.path}: data.attrs['problem_info'] is not JSON ({e})") from e
        text = info.get("language_instruction")
        if text is None:
            return None
        if isinstance(text, list):  # some LIBERO tooling stores the BDDL token list
            text = " ".join(str(t) for t in text)
        return str(text).strip().strip('"').strip()

    def instruction(self, key: str) -> str:
        """The instruction of demo `key` (override > per-demo attribute > problem_info)."""
        if self._instruction_override is not None:
            return self._instruction_override
        attr = self._data[key].attrs.get("instruction")
        if attr is not None:
            return _as_str(attr)
        if self._file_instruction is not None:
            return self._file_instruction
        raise DatasetError(
            f"{self.path}: demo {key!r} has no 'instruction' attribute and data.attrs has no "
            "problem_info.language_instruction; pass DemoReader(..., instruction='...')"
        )

    def __len__(self) -> int:
        return len(self.demo_keys)

    @property
    def num_transitions(self) -> int:
        return int(sum(self._data[k]["actions"].shape[0] for k in self.demo_keys))

    def read_demo(self, key: str) -> Demo:
        """Load one demo fully into memory, converted to our conventions."""
        g = self._data[key]
        if "actions" not in g or "obs" not in g or self.image_key not in g["obs"]:
            have = sorted(g["obs"].keys()) if "obs" in g else []
            raise DatasetError(
                f"{self.path}: demo {key!r} lacks 'actions' or 'obs/{self.image_key}' (obs keys: {have}); "
                "pass image_key= one of those")
        actions = np.asarray(g["actions"], dtype=np.float32)  # [T, 7]
        if actions.ndim != 2 or actions.shape[1] != 7:
            raise DatasetError(f"{self.path}: {key}/actions has shape {actions.shape}; expected [T, 7]")
        if self.convert_gripper:
            actions = actions.copy()
            actions[:, -1] = np.clip(1.0 - actions[:, -1], 0.0, 1.0)
        images = np.asarray(g["obs"][self.image_key])  # uint8 [T, H, W, 3]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DatasetError(f"{self.path}: {key}/obs/{self.image_key} is {images.dtype} {images.shape}; "
                               "expected uint8 [T, H, W, 3]")
        if images.shape[0] != actions.shape[0]:
            raise DatasetError(f"{self.path}: {key} has {images.shape[0]} frames but {actions.shape[0]} actions")
        if self.flip_images:
            images = np.ascontiguousarray(images[:, ::-1, ::-1])
        return Demo(key=key, instruction=self.instruction(key), images=images, actions=actions,
                    proprio=self._proprio(g["obs"]))

    @staticmethod
    def _proprio(obs: h5py.Group) -> np.ndarray | None:
        if "proprio" in obs:
            return np.asarray(obs["proprio"], dtype=np.float32)
        # LIBERO: end-effector position, orientation and the two finger positions (8-D), the
        # state OpenVLA-OFT feeds its proprio projector.
        parts = [k for k in ("ee_pos", "ee_ori", "gripper_states") if k in obs]
        if len(parts) < 3:
            return None
        return np.concatenate([np.asarray(obs[k], dtype=np.float32) for k in parts], axis=1)

    def episode_info(self, key: str) -> tuple[str, str, int, np.ndarray] | None:
        """(family, split, seed, ee_pos [T, 3]) of one of our demos; None for LIBERO files.

        With these the episode's task can be re-drawn from its seed (`sim.grounding`).
        """
        if not self.is_ours:
            return None
        g = self._data[key]
        a = g.attrs
        if not all(k in a for k in ("family", "split", "seed")) or "ee_pos" not in g["obs"]:
            return None
        return _as_str(a["family"]), _as_str(a["split"]), int(a["seed"]), np.asarray(g["obs"]["ee_pos"], np.float32)

    def iter_demos(self) -> Iterator[Demo]:
        """Demos in index order (demo_0, demo_1, ..., demo_10, ...)."""
        for key in self.demo_keys:
            yield self.read_demo(key)

    def __iter__(self) -> Iterator[Step]:
        """Every step of every demo, in order."""
        for demo in self.iter_demos():
            yield from demo.steps()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DemoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------------------------
# norm_stats (OpenVLA convention)
# ------------------------------------------------------------------------------------------------
def _stats(x: np.ndarray, mask: Sequence[bool]) -> dict[str, list[float] | list[bool]]:
    x = x.astype(np.float64)  # [N, D]; float64 so quantiles/std do not depend on storage dtype
    return {
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "max": x.max(0).tolist(),
        "min": x.min(0).tolist(),
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
        "mask": [bool(m) for m in mask],
    }


def norm_stats_from_arrays(
    dataset_key: str, actions: np.ndarray, proprio: np.ndarray | None, num_trajectories: int
) -> dict[str, dict[str, Any]]:
    """OpenVLA-style norm_stats for one dataset.

    actions: float [N, 7] over all transitions; proprio: float [N, D] or None (then zeros [7], as
    OpenVLA stores for datasets without proprio). Action mask is True for every dim but the last
    (the gripper, which OpenVLA leaves unnormalized); proprio mask is all True.
    """
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise DatasetError(f"norm_stats: actions have shape {actions.shape}; expected a non-empty [N, D] array")
    d = actions.shape[1]
    if proprio is None:
        proprio_stats = _stats(np.zeros((1, 7)), [True] * 7)
    else:
        proprio_stats = _stats(proprio, [True] * proprio.shape[1])
    return {
        dataset_key: {
            "action": _stats(actions, [True] * (d - 1) + [False]),
            "proprio": proprio_stats,
            "num_transitions": int(actions.shape[0]),
            "num_trajectories": int(num_trajectories),
        }
    }


def compute_norm_stats(
    source: str | Path | DemoReader, dataset_key: str | None = None
) -> dict[str, dict[str, Any]]:
    """norm_stats of a demo file (ours or LIBERO), actions in our gripper convention.

    `dataset_key` defaults to the file's data.attrs["dataset_name"]; LIBERO files carry none,
    so pass it (e.g. "libero_spatial_no_noops").
    """
    reader = source if isinstance(source, DemoReader) else DemoReader(source)
    try:
        key = dataset_key or reader.dataset_name
        if not key:
            raise DatasetError(f"{reader.path}: no data.attrs['dataset_name']; pass dataset_key (CLI: --key NAME)")
        actions, proprio = [], []
        for demo_key in reader.demo_keys:
            g = reader._data[demo_key]
            a = np.asarray(g["actions"], dtype=np.float32)
            if reader.convert_gripper:
                a = a.copy()
                a[:, -1] = np.clip(1.0 - a[:, -1], 0.0, 1.0)
            actions.append(a)
            proprio.append(reader._proprio(g["obs"]) if "obs" in g else None)
        has_proprio = all(p is not None for p in proprio)
        return norm_stats_from_arrays(
            key, np.concatenate(actions), np.concatenate(proprio) if has_proprio else None, len(actions))
    finally:
        if not isinstance(source, DemoReader):
            reader.close()


def save_norm_stats(stats: dict[str, Any], out: str | Path) -> None:
    """Write norm_stats as JSON (the format of OpenVLA's config.json `norm_stats`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=2))


def iter_steps(paths: Iterable[str | Path], **reader_kwargs: Any) -> Iterator[Step]:
    """Steps of several files in turn (e.g. our demos plus LIBERO files)."""
    for path in paths:
        with DemoReader(path, **reader_kwargs) as reader:
            yield from reader
