from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.errors import SimConfigError, UnknownNameError


def _actions(n: int) -> np.ndarray:
    a = np.zeros((n, 7), np.float32)
    a[:, 2] = 0.01
    a[:, 6] = 1.0
    return a


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env_steps(mode: str) -> None:
    venv = sim.make_vector_env(["pick", "push"], split="id", num_envs=2, seed=4, image_size=24, mode=mode)
    try:
        obs, info = venv.reset(seed=4)
        first_push_image = obs["image"][1].copy()
        assert obs["image"].shape == (2, 24, 24, 3) and obs["image"].dtype == np.uint8
        assert obs["proprio"].shape == (2, 7)
        assert len(obs["instruction"]) == 2 and all(isinstance(s, str) for s in obs["instruction"])
        assert list(info["family"]) == ["pick", "push"]
        z0 = obs["proprio"][:, 2].copy()
        for _ in range(3):
            obs, reward, terminated, truncated, info = venv.step(_actions(2))
        assert reward.shape == (2,) and terminated.shape == (2,)
        np.testing.assert_allclose(obs["proprio"][:, 2] - z0, 0.03, atol=0.006)
    finally:
        venv.close()
    # Env i runs families[i % 2] and gymnasium seeds it with seed + i: env 1 = push, seed 5.
    single = sim.make_env(family="push", image_size=24)
    np.testing.assert_array_equal(single.reset(seed=5)[0]["image"], first_push_image)


def test_vector_env_validates_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'place'"):
        sim.make_vector_env(["plce"], num_envs=1)
    with pytest.raises(SimConfigError, match="mode"):
        sim.make_vector_env("pick", num_envs=1, mode="threads")
