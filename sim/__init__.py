"""Built-in manipulation benchmark: MuJoCo tabletop tasks, scripted experts, demo datasets.

Quick tour:
    env = sim.make_env(suite="tabletop", family="pick", split="id", seed=0, image_size=128)
    obs, info = env.reset()          # obs: image uint8 [H,W,3], instruction str, proprio float32 [7]
    obs, reward, terminated, truncated, info = env.step(action)   # action float32 [7], see sim.env
    sim.list_families(), sim.list_splits()
    sim.make_vector_env(["pick", "push"], split="id", num_envs=4, seed=0, mode="async")
    sim.data: write_demos / DemoReader / compute_norm_stats (LIBERO/robomimic HDF5 layout)

Importing `sim` sets MUJOCO_GL=egl unless the caller chose a GL backend already.
"""
from __future__ import annotations

from sim.env import (
    ACTION_DIM,
    PROPRIO_DIM,
    TabletopConfig,
    TabletopEnv,
    list_families,
    list_splits,
    make_env,
)
from sim.errors import ActionError, DatasetError, SimConfigError, SimError, UnknownNameError
from sim.vector import make_vector_env

__all__ = [
    "ACTION_DIM",
    "PROPRIO_DIM",
    "ActionError",
    "DatasetError",
    "SimConfigError",
    "SimError",
    "TabletopConfig",
    "TabletopEnv",
    "UnknownNameError",
    "list_families",
    "list_splits",
    "make_env",
    "make_vector_env",
]
