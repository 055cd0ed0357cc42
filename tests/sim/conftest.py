"""Fixtures of the simulation tests. Rendering is headless: EGL on the CPU (Mesa llvmpipe)."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from sim.data import DemoConfig, DemoSummary, write_demos  # noqa: E402


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoConfig, DemoSummary]:
    """A tiny demo file (3 demos over pick/push/stack, 32 px) shared by the data tests."""
    config = DemoConfig(episodes=3, families=("pick", "push", "stack"), seed=7, image_size=32)
    path = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    summary = write_demos(config, path, progress=False)
    return path, config, summary


@pytest.fixture()
def libero_file(tmp_path: Path) -> Path:
    """A one-demo file in the LIBERO layout (no episode seeds, so no grounding or swap can be labelled)."""
    import h5py
    import numpy as np

    path = tmp_path / "libero.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group("data/demo_0")
        g.create_dataset("actions", data=np.zeros((3, 7), np.float32))
        g.create_dataset("obs/agentview_rgb", data=np.zeros((3, 32, 32, 3), np.uint8))
        g.attrs["instruction"] = "stack the red block on the blue block"
    return path
