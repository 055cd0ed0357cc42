"""Vectorised rollouts: `gymnasium.vector` environments over task families and seeds."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym

from sim.env import TabletopConfig, TabletopEnv, make_env
from sim.errors import SimConfigError

logger = logging.getLogger(__name__)

VECTOR_MODES = ("sync", "async")


@dataclass(frozen=True)
class EnvFactory:
    """A picklable `make_env` call, so async workers can be started with forkserver or spawn."""

    family: str
    """Task family of this env."""
    split: str
    """Split of this env."""
    seed: int | None
    """Seed of the env's first reset (gymnasium's vector reset(seed=s) overrides it with s + i)."""
    image_size: int
    """Square frame side, pixels."""
    shaped_reward: bool = False
    """Add the one-off grasp bonus."""

    def __call__(self) -> TabletopEnv:
        return make_env(family=self.family, split=self.split, seed=self.seed,
                        image_size=self.image_size, shaped_reward=self.shaped_reward)


def make_vector_env(
    families: str | Sequence[str] = "pick",
    split: str = "id",
    num_envs: int = 4,
    seed: int = 0,
    image_size: int = 128,
    mode: str = "sync",
    shaped_reward: bool = False,
    context: str | None = "forkserver",
) -> gym.vector.VectorEnv:
    """A vector env whose env i runs family `families[i % len(families)]` seeded `seed + i`.

    Observations are batched by gymnasium: image uint8 [N, H, W, 3], proprio float32 [N, 7],
    instruction a tuple of N str. Episodes auto-reset (gymnasium's NEXT_STEP mode: the step after
    a terminal step is a reset step whose action is ignored).

    `mode="async"` runs each env in its own process. The default `context="forkserver"` starts
    workers from a clean server process, so they never inherit an OpenGL/EGL context that the
    parent may already hold (forking a live EGL context is unsafe); the env also creates its
    renderer lazily, so the dummy env gymnasium builds in the parent touches no GL at all. As
    with any spawn/forkserver start, a script creating async envs needs an
    `if __name__ == "__main__":` guard.
    """
    names = [families] if isinstance(families, str) else list(families)
    if not names:
        raise SimConfigError("make_vector_env(families=[]): give at least one family name, e.g. ['pick']")
    if not isinstance(num_envs, int) or num_envs < 1:
        raise SimConfigError(f"make_vector_env(num_envs={num_envs!r}): expected a positive int")
    if mode not in VECTOR_MODES:
        raise SimConfigError(f"make_vector_env(mode={mode!r}): expected one of {VECTOR_MODES}")
    fns = [EnvFactory(names[i % len(names)], split, seed + i, image_size, shaped_reward) for i in range(num_envs)]
    for name in names:  # validate names here, with a clear error, rather than inside a worker
        TabletopConfig(family=name, split=split, image_size=image_size)
    logger.info("vector env: %d x %s (%s), split=%s, %dpx", num_envs, names, mode, split, image_size)
    if mode == "sync":
        return gym.vector.SyncVectorEnv(fns)
    return gym.vector.AsyncVectorEnv(fns, context=context)
