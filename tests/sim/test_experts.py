from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.experts import make_expert

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("split", ["id", "id_clutter"])
@pytest.mark.parametrize("family", ["pick", "push", "place", "stack"])
def test_expert_succeeds(family: str, split: str) -> None:
    env = sim.make_env(family=family, image_size=32, split=split)
    expert = make_expert(env)
    for seed in SEEDS:
        env.reset(seed=seed)
        expert.reset()
        while True:
            action = expert.act()
            assert action.shape == (7,) and action.dtype == np.float32
            assert env.action_space.contains(action)
            _, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert terminated and info["success"] and reward == 1.0, f"{family} seed {seed}: {env.task.instruction}"
        assert env.steps < env.config.episode_steps


def test_push_moves_the_block_towards_the_named_side() -> None:
    from sim.tasks import SIDES

    env = sim.make_env(family="push", image_size=32)
    expert = make_expert(env)
    for seed in range(4):
        env.reset(seed=seed)
        expert.reset()
        while not any(env.step(expert.act())[2:4]):
            pass
        moved = (env.body_pos(env.task.target) - env.start_pos(env.task.target))[:2]
        assert np.dot(moved, SIDES[env.task.side]) >= 0.08
        assert env.task.side in env.task.instruction


@pytest.mark.slow
@pytest.mark.parametrize("split", ["id", "id_clutter"])
@pytest.mark.parametrize("family", ["pick", "push", "place", "stack"])
def test_expert_success_rate_over_100_seeds(family: str, split: str) -> None:
    env = sim.make_env(family=family, image_size=32, split=split)
    expert = make_expert(env)
    wins = 0
    for seed in range(100):
        env.reset(seed=seed)
        expert.reset()
        while True:
            _, _, terminated, truncated, _ = env.step(expert.act())
            if terminated or truncated:
                break
        wins += terminated
    assert wins >= 95


@pytest.mark.parametrize("family", ["pick", "place", "stack"])
def test_grasping_experts_never_hold_still_with_closed_fingers(family: str) -> None:
    """Closing rises, carrying descends onto the goal: a single-frame policy must not learn
    "fingers closed: hold still" (it cannot see how far they have closed, nor its height precisely)."""
    env = sim.make_env(family=family, image_size=32)
    expert = make_expert(env)
    for seed in SEEDS:
        env.reset(seed=seed)
        expert.reset()
        closed_steps = 0
        while True:
            action = expert.act()
            if action[6] < 0.5:
                closed_steps += 1
                assert np.linalg.norm(action[:3]) > 0.002, f"seed {seed} ({expert.phase}): closed and still: {action}"
                if family == "pick":
                    assert action[2] > 0.002, f"seed {seed}: closed-gripper action {action} does not rise"
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        assert terminated and closed_steps >= 4


def test_pick_expert_grasps_again_after_losing_the_object() -> None:
    env = sim.make_env(family="pick", image_size=32)
    expert = make_expert(env)
    env.reset(seed=1)
    expert.reset()
    while expert.phase != "lift":
        env.step(expert.act())
    for _ in range(4):  # someone opens the hand during the lift: the object stays on the table
        action = expert.act()
        action[6] = 1.0
        env.step(action)
    phases = []
    while True:
        action = expert.act()
        phases.append(expert.phase)
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    # back to approach (straight on to descend: the hand is already over the object), then a new grasp
    assert phases[0] == "descend" and "close" in phases
    assert terminated and info["success"]


def test_funnel_height_is_zero_when_aligned_and_capped_when_far() -> None:
    from sim.experts import HOVER, PUSH_FUNNEL, funnel_height

    heights = [funnel_height(e, 0.0, PUSH_FUNNEL) for e in np.linspace(0.0, 0.3, 61)]
    assert heights[0] == 0.0 and heights[-1] == HOVER
    assert all(b >= a for a, b in zip(heights, heights[1:])), "height must not fall as the error grows"
    assert funnel_height(0.0, 0.3, PUSH_FUNNEL) > funnel_height(0.0, 0.0, PUSH_FUNNEL)


def test_push_approach_goes_down_while_aligned_instead_of_hovering() -> None:
    """Once the hand is behind the block it descends on the same step: no "hover, then descend"
    switch for a single-frame policy to guess (docs/benchmark.md)."""
    family = "push"
    from sim.experts import scene

    env = sim.make_env(family=family, image_size=32)
    expert = make_expert(env)
    checked = 0
    for seed in SEEDS:
        env.reset(seed=seed)
        expert.reset()
        while True:
            phase_before = expert.phase
            action = expert.act()
            if phase_before == "approach" and expert.phase == "approach":
                target = env.body_pos(env.task.target)
                if family == "push":  # aim point: behind the block
                    from sim.tasks import SIDES

                    target = target - np.array([*SIDES[env.task.side], 0.0]) * expert.STANDOFF
                xy_error = float(np.hypot(*(target - env.ee_pos)[:2]))
                bottom = scene.FINGER_HALF[2] + 0.003 if family == "push" else expert._grasp_z(env.task.target)
                if xy_error < 0.01 and env.ee_pos[2] > bottom + 0.02:
                    checked += 1
                    assert action[2] < -0.005, f"seed {seed}: aligned ({xy_error:.3f} m) yet not descending: {action}"
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    assert checked > 0


def test_push_starts_while_still_coming_down() -> None:
    """No hard "come down, then push" switch at the bottom (docs/experiments/results/push_outcomes.md): the
    first push action already moves towards the block, and goes on down when the hand is still high."""
    from sim.experts import PUSH_ENTRY_Z, Z_TOL, scene
    from sim.tasks import SIDES

    env = sim.make_env(family="push", image_size=32)
    expert = make_expert(env)
    high = 0
    for seed in range(6):
        env.reset(seed=seed)
        expert.reset()
        while expert.phase == "approach":
            height = float(env.ee_pos[2]) - (scene.FINGER_HALF[2] + 0.003)
            action = expert.act()  # the last one is the step that switched to "push"
            env.step(action)
        assert np.dot(action[:2], SIDES[env.task.side]) > 0.005, f"seed {seed}: first push action {action}"
        assert height < PUSH_ENTRY_Z
        if height > Z_TOL:
            high += 1
            assert action[2] < -0.003, f"seed {seed}: pushing from {height:.3f} m up without coming down"
    assert high > 0
