"""research/ask.py: the three probes on real MuJoCo scenes, with oracles from the simulator and a real checkpoint."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from research import ask
from sim import make_env
from sim.recipes.counterfactual import swapped_tasks
from sim.recipes.grounding import orientation_answer, redraw_task


# --------------------------------------------------------------------------- binding


class OracleWhere:
    """Answers every "where" question with the position of the object it names (read from the simulator)."""

    def __init__(self, env, swap: bool = False):
        self.env, self.swap = env, swap

    def __call__(self, image, names):
        world = self.env.unwrapped
        task = world.task
        by_name = {f"{p.colour} {p.kind}": p.slot for p in task.placements}
        other = next(p.slot for p in task.placements if p.slot != task.target)
        slots = [by_name.get(n, task.target) for n in names]  # the task question names the target
        if self.swap:  # bound the wrong way round
            slots = [other if s == task.target else task.target for s in slots]
        return np.stack([world.body_pos(s)[:2] for s in slots])


@pytest.mark.parametrize("family", ["stack", "place"])
def test_binding_oracle_is_always_right_and_a_swapped_one_always_wrong(family):
    env = make_env(family=family, split="id", image_size=64)
    try:
        right = [ask.probe_episode(OracleWhere(env), env, 700_000 + i) for i in range(3)]
        wrong = [ask.probe_episode(OracleWhere(env, swap=True), env, 700_000 + i) for i in range(3)]
    finally:
        env.close()
    good, bad = ask.summarise_binding(right), ask.summarise_binding(wrong)
    for q in ask.QUESTIONS:
        assert good[q]["nearer_right"] == 1.0 and good[q]["mean_right_cm"] < 1e-6 < good[q]["mean_wrong_cm"]
        assert bad[q]["nearer_right"] == 0.0 and bad[q]["mean_wrong_cm"] < 1e-6


def test_binding_on_a_checkpoint_gives_the_json(ckpt_factory, tmp_path):
    out = tmp_path / "probe.json"
    assert ask.main(["binding", "--policy", str(ckpt_factory("tiny-128")), "--episodes", "2", "--image-size", "64",
                     "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["episodes"] == 2 and len(report["episodes_detail"]) == 2
    assert report["command"].startswith("python -m research.ask binding") and len(report["loadavg_end"]) == 3
    for q in ask.QUESTIONS:
        s = report["summary"][q]
        assert 0.0 <= s["nearer_right"] <= 1.0 and s["mean_right_cm"] >= 0 and s["mean_wrong_cm"] >= 0
        # Triangle inequality: right + other distance is at least the two objects' separation (> 2 cm here).
        assert all(r[q]["right_m"] + r[q]["wrong_m"] > 0.02 for r in report["episodes_detail"])


def test_bad_arguments_exit_2(capsys):
    assert ask.main(["binding", "--policy", "x", "--episodes", "0"]) == 2
    assert "--episodes=0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ask.main(["action", "--policy", "x", "--family", "pick"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- orientation


class OracleTurn:
    """Answers with the simulator's own orientation values, optionally with the bar turned by ``offset`` rad."""

    def __init__(self, env, offset: float = 0.0):
        self.env, self.offset = env, offset

    def __call__(self, image, name):
        world = self.env.unwrapped
        slot = world.task.target
        assert name == f"{world.task.placement(slot).colour} bar"
        return orientation_answer("bar", float(world.body_yaw(slot)) + self.offset, float(world.ee_euler[2]))


def test_bar_seeds_are_pick_scenes_with_a_bar():
    seeds = ask.bar_seeds(700_000, 5)
    assert len(seeds) == 5 and seeds == sorted(set(seeds))
    for seed in range(seeds[0], seeds[-1] + 1):
        task = redraw_task("pick", "id", seed)
        assert (task.placement(task.target).kind == "bar") == (seed in seeds)


def test_turn_oracle_is_exact_and_the_expert_agrees_with_itself():
    from sim.experts import make_expert

    env = make_env(family="pick", split="id", image_size=64)
    try:
        def expert_act(image, instruction):
            return make_expert(env.unwrapped).act()

        seeds = ask.bar_seeds(700_000, 4)
        exact = [ask.probe_bar_scene(OracleTurn(env), expert_act, env, s) for s in seeds]
        turned = [ask.probe_bar_scene(OracleTurn(env, offset=math.radians(30)), expert_act, env, s) for s in seeds]
    finally:
        env.close()
    s = ask.summarise_orient(exact)
    assert s["mean_yaw_error_deg"] < 1e-6 and s["mean_turn_error_deg"] < 1e-6 and s["mean_hand_error_deg"] < 1e-6
    assert s["turn_sign_right"] == 1.0 and s["action_agrees_expert"] == 1.0
    # The expert turns towards the true grasp yaw, the way the exact answer says (unless already aligned).
    assert all(r["action_agrees_answer"] for r in exact if abs(r["truth"][2]) > 0.05)
    assert all(abs(r["yaw_error_deg"] - 30.0) < 1e-6 for r in turned)


def test_yaw_error_wraps_on_the_bar_period():
    a = orientation_answer("bar", math.radians(85), 0.0)
    b = orientation_answer("bar", math.radians(-85), 0.0)  # 170 degrees apart = 10 on a 180-degree period
    assert ask.yaw_error_deg(a, b) == pytest.approx(10.0)
    assert ask.yaw_error_deg(a, a) == pytest.approx(0.0, abs=1e-9)


def test_orient_on_a_checkpoint_gives_the_json(ckpt_factory, tmp_path):
    out = tmp_path / "orient.json"
    assert ask.main(["orient", "--policy", str(ckpt_factory("tiny-128")), "--episodes", "2", "--image-size", "64",
                     "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["episodes"] == 2 and len(report["scenes"]) == 2
    s = report["summary"]
    assert 0.0 <= s["mean_yaw_error_deg"] <= 90.0 and 0.0 <= s["action_agrees_expert"] <= 1.0
    for row in report["scenes"]:
        assert len(row["answer"]) == 4 and np.all(np.abs(row["answer"]) <= 1.0)


# --------------------------------------------------------------------------- first action under swapped words


class OraclePolicy:
    """Answers with the scripted expert's first action for the instruction it is given (or, ``deaf``, for the
    scene's own instruction whatever it is given). Actions are in the env convention; the probe maps them
    with to_env_action, which leaves the translation unchanged."""

    def __init__(self, env, deaf: bool = False):
        self.env, self.deaf = env, deaf

    def infer(self, image, instruction):
        task = self.env.unwrapped.task
        chosen = task if self.deaf else next(t for t in [task, *swapped_tasks(task)] if t.instruction == instruction)
        return SimpleNamespace(action=ask.expert_action(self.env, chosen))


@pytest.mark.parametrize("family", ["stack", "push"])
def test_a_bound_oracle_scores_both_and_a_deaf_one_never(family):
    env = make_env(family=family, split="id", image_size=64)
    try:
        bound = [r for i in range(6) for r in ask.probe_swaps(OraclePolicy(env), env, 700_000 + i)]
        deaf = [r for i in range(6) for r in ask.probe_swaps(OraclePolicy(env, deaf=True), env, 700_000 + i)]
    finally:
        env.close()
    assert bound and len(bound) == len(deaf)
    good, bad = ask.summarise_action(bound), ask.summarise_action(deaf)
    assert good["both"] == 1.0 and all(r["own_right_m"] < 1e-6 and r["swapped_right_m"] < 1e-6 for r in bound)
    assert bad["own"] == 1.0 and bad["swapped"] == 0.0 and bad["both"] == 0.0


def test_action_on_a_checkpoint_gives_the_json(ckpt_factory, tmp_path):
    out = tmp_path / "action_binding.json"
    assert ask.main(["action", "--policy", str(ckpt_factory("tiny-128")), "--episodes", "4", "--image-size", "64",
                     "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    s = report["summary"]
    assert report["episodes"] == 4 and s["pairs"] == len(report["pairs_detail"]) > 0
    assert 0.0 <= s["both"] <= min(s["own"], s["swapped"]) <= 1.0
    assert all(np.isfinite(r["own_right_m"]) for r in report["pairs_detail"]) and report["wall_s"] >= 0
