from __future__ import annotations

import numpy as np
import pytest

import sim
from sim import scene
from sim.tasks import EXTRA_DISTRACTORS, FAMILIES, SPLITS, get_family

N = 12


def _tasks(family: str, split: str, n: int = N):
    env = sim.make_env(family=family, split=split, image_size=32)
    out = []
    for seed in range(n):
        obs, _ = env.reset(seed=seed)
        out.append((env.task, obs, env))
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_id_and_ood_combo_are_disjoint(family: str) -> None:
    f = get_family(family)
    held = set(f.heldout_combos())
    assert held and not held & set(f.id_combos())
    for task, *_ in _tasks(family, "id"):
        assert task.combo not in held and task.shift is None
        assert task.template_index < f.n_id_templates
    for task, *_ in _tasks(family, "ood_combo"):
        assert task.combo in held and task.shift == "combo"


def test_every_colour_and_object_is_seen_in_id() -> None:
    for family in FAMILIES.values():
        seen = {part for combo in family.id_combos() for part in combo}
        unseen = {part for combo in family.heldout_combos() for part in combo}
        assert unseen <= seen, family.name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ood_paraphrase_uses_held_out_templates(family: str) -> None:
    f = get_family(family)
    ood_templates = set(range(f.n_id_templates, len(f.templates)))
    tasks = _tasks(family, "ood_paraphrase")
    assert {t.template_index for t, *_ in tasks} <= ood_templates
    id_texts = {t.instruction for t, *_ in _tasks(family, "id", 30)}
    assert not id_texts & {t.instruction for t, *_ in tasks}


# Objects on the table per family: id has only what the task needs, id_clutter the usual distractors.
NEEDED = {"pick": 1, "push": 1, "place": 2, "stack": 2}
CLUTTERED = {"pick": 2, "push": 2, "place": 4, "stack": 3}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_id_has_only_the_objects_the_task_needs(family: str) -> None:
    id_tasks = _tasks(family, "id")
    assert {len(t.placements) for t, *_ in id_tasks} == {NEEDED[family]}
    for task, *_ in id_tasks:
        assert task.target in {p.slot for p in task.placements}
        if task.goal:
            assert task.goal in {p.slot for p in task.placements} and task.goal != task.target
    clutter = _tasks(family, "id_clutter")
    assert {len(t.placements) for t, *_ in clutter} == {CLUTTERED[family]}
    # Same split rules apart from the clutter: seen combinations, training paraphrases, nominal view.
    f = get_family(family)
    for task, *_ in clutter:
        assert task.shift is None and task.visual is None and task.combo not in set(f.heldout_combos())
        assert task.template_index < f.n_id_templates


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ood_distractor_adds_objects(family: str) -> None:
    n_ood = {len(t.placements) for t, *_ in _tasks(family, "ood_distractor")}
    assert n_ood == {CLUTTERED[family] + EXTRA_DISTRACTORS}
    # Distractors never make the instruction ambiguous.
    for task, _, env in _tasks(family, "ood_distractor", 5):
        target = task.placement(task.target)
        twins = [p for p in task.placements if (p.kind, p.colour) == (target.kind, target.colour)]
        assert twins == [target]


def test_ood_visual_moves_camera_and_changes_pixels() -> None:
    env_id = sim.make_env(family="pick", split="id", image_size=48)
    env_vis = sim.make_env(family="pick", split="ood_visual", image_size=48)
    obs_id, _ = env_id.reset(seed=0)
    obs_vis, _ = env_vis.reset(seed=0)
    assert env_vis.task.visual is not None and env_id.task.visual is None
    assert not np.allclose(env_vis.model.cam_pos[env_vis._cam], scene.CAMERA_EYE)
    np.testing.assert_allclose(env_id.model.cam_pos[env_id._cam], scene.CAMERA_EYE)
    assert np.abs(obs_id["image"].astype(int) - obs_vis["image"]).mean() > 5


def test_visual_edits_are_undone_by_the_next_reset() -> None:
    env = sim.make_env(family="pick", split="ood", image_size=32)
    shifts = []
    for seed in range(16):
        env.reset(seed=seed)
        nominal = np.allclose(env.model.cam_pos[env._cam], scene.CAMERA_EYE)
        assert nominal == (env.task.shift != "visual")
        shifts.append(env.task.shift)
    assert "visual" in shifts[:-1] and set(shifts) - {"visual"}


def test_ood_mix_draws_every_shift() -> None:
    shifts = {t.shift for t, *_ in _tasks("stack", "ood", 40)}
    assert shifts == {"combo", "distractor", "paraphrase", "visual"}


@pytest.mark.parametrize("split", list(SPLITS))
def test_every_split_builds_for_every_family(split: str) -> None:
    for family in FAMILIES:
        env = sim.make_env(family=family, split=split, seed=3, image_size=32)
        obs, info = env.reset()
        assert obs["instruction"] and info["family"] == family
