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
