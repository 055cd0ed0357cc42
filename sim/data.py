"""Expert demonstrations of the tabletop tasks, written as LIBERO / robomimic HDF5 files.

The layout, and the reader that training uses, are in ``export/demos.py``; ``rlrc-sim demos``
writes it, with our per-demo attributes (family, split, seed) that let a task be re-drawn.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from export.demos import FORMAT_ATTR, IMAGE_KEY
from sim.errors import DatasetError, SimConfigError, unknown_name
from sim.tasks import FAMILIES, SPLITS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_DATASET_NAME = "rlrc_sim_tabletop"
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
    it again. Drop-free demos never show a re-grasp, so a policy trained on them alone has no
    example of going back for a block it dropped in transit.
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
        data.attrs[FORMAT_ATTR] = FORMAT_VERSION
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
