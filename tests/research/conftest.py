"""Demo files the research probes' tests share, written once per session by the real expert rollouts."""
from __future__ import annotations

from pathlib import Path

import pytest


def _demos(tmp_path_factory: pytest.TempPathFactory, name: str, **config) -> Path:
    from sim.data import DemoConfig, write_demos

    out = tmp_path_factory.mktemp(name) / "demos.hdf5"
    write_demos(DemoConfig(image_size=64, **config), out, progress=False)
    return out


@pytest.fixture(scope="session")
def stack_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 stack episodes of the id split at 64 px (counterfactual pairs, roles, grounding questions)."""
    return _demos(tmp_path_factory, "stack", episodes=8, families=("stack",), seed=5)


@pytest.fixture(scope="session")
def mixed_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 pick and stack episodes of the id split at 64 px."""
    return _demos(tmp_path_factory, "mixed", episodes=4, families=("pick", "stack"), seed=3)
