"""research/outcomes.py: the episode classes on real MuJoCo episodes and a real checkpoint; bar turns over files."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from research import outcomes as outcomes_module
from rlrc_runtime.errors import DatasetError
from sim.recipes.grounding import redraw_task


@pytest.fixture(scope="module")
def outcomes():
    return outcomes_module


@dataclass
class _Result:
    action: np.ndarray


class ExpertPolicy:
    """The scripted expert behind the Policy API's `infer` (it reads the simulator, not the image)."""

    def __init__(self, env):
        from sim.experts import make_expert

        self.expert = make_expert(env)
        self.started = False

    def infer(self, image, instruction, unnorm_key):
        if not self.started:
            self.expert.reset()
            self.started = True
        return _Result(self.expert.act())


class StillPolicy:
    """Never moves, fingers open."""

    def infer(self, image, instruction, unnorm_key):
        return _Result(np.array([0, 0, 0, 0, 0, 0, 1], dtype=np.float32))


def test_classes(outcomes):
    assert outcomes.classify(True, "target", 0.05) == "success"
    assert outcomes.classify(True, "goal", 0.05) == "success after wrong block"
    assert outcomes.classify(False, "goal", 0.20) == "lifted goal first"
    assert outcomes.classify(False, None, 0.0) == "never lifted target"
    assert outcomes.classify(False, "target", outcomes.OVER_LIFT + 0.01) == "over-lift"
    assert outcomes.classify(False, "target", 0.05) == "lifted target, failed place"


@pytest.mark.parametrize("family", ["stack", "place"])
def test_expert_episode_is_a_success_that_lifts_the_target_first(outcomes, family):
    from sim import make_env

    env = make_env(suite="tabletop", family=family, split="id", seed=100000, image_size=64)
    try:
        ep = outcomes.run_episode(ExpertPolicy(env), env, 100000)
        assert ep["outcome"] == "success" and ep["first_lifted"] == "target"
        assert outcomes.LIFTED < ep["target_max_rise_m"] < outcomes.OVER_LIFT
        # Put down on the goal and let go: resting where the success test wants it, fingers off.
        assert ep["end_offset_m"] < 0.025 and abs(ep["end_height_m"]) < 0.006 and not ep["held_at_end"]
        still = outcomes.run_episode(StillPolicy(), env, 100001)
        assert still["outcome"] == "never lifted target" and not still["success"]
        # The target still lies on the table where it started, beside the goal and below its resting place.
        assert still["end_offset_m"] > 0.04 and still["end_height_m"] < 0 and not still["held_at_end"]
        assert not outcomes.held_over_goal(still)
        assert still["steps"] == env.unwrapped.config.episode_steps
    finally:
        env.close()


def test_held_over_goal(outcomes):
    ep = {"success": False, "held_at_end": True, "end_offset_m": 0.01, "end_height_m": 0.012}
    assert outcomes.held_over_goal(ep)
    assert not outcomes.held_over_goal({**ep, "success": True})
    assert not outcomes.held_over_goal({**ep, "held_at_end": False})
    assert not outcomes.held_over_goal({**ep, "end_offset_m": 0.03})
    assert not outcomes.held_over_goal({**ep, "end_height_m": 0.05})


@pytest.mark.slow  # a whole 100-step episode of an untrained checkpoint: ~15-30 s on 2 cores
def test_json_report_from_a_checkpoint(outcomes, ckpt_factory, tmp_path):
    out = tmp_path / "outcomes.json"
    ckpt = ckpt_factory("tiny-128")  # 64 patches per tower: an untrained episode runs to its time limit
    assert outcomes.main(["classify", "--policy", str(ckpt), "--episodes", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "rlrc-place-outcomes/1" and report["family"] == "stack"
    assert sum(report["counts"].values()) == len(report["episodes"]) == 1
    assert report["episodes"][0]["outcome"] in report["counts"]
    assert report["command"].startswith("python -m research.outcomes classify") and report["machine"]["cpus"] >= 1


def test_push_classes(outcomes):
    assert outcomes.classify_push(True, "left", "left", True) == "success"
    assert outcomes.classify_push(False, None, "left", True) == "never moved"
    assert outcomes.classify_push(False, "right", "left", True) == "pushed the wrong way"
    assert outcomes.classify_push(False, "left", "left", False) == "off the table plane"
    assert outcomes.classify_push(False, "left", "left", True) == "pushed short"
    assert outcomes.nearest_side(np.array([0.01, 0.05])) == "left"
    assert outcomes.nearest_side(np.array([-0.04, 0.01])) == "front"
    still = outcomes.STILL / 2
    assert outcomes.still_steps([0.03, 0.03, still, still]) == 2
    assert outcomes.still_steps([still, 0.03]) == 0 and outcomes.still_steps([]) == 0


def test_push_expert_episode_moves_the_block_the_instructed_way(outcomes):
    from sim import make_env

    env = make_env(suite="tabletop", family="push", split="id", seed=100000, image_size=64)
    try:
        ep = outcomes.run_push_episode(ExpertPolicy(env), env, 100000)
        assert ep["outcome"] == "success" and ep["first_side"] == ep["side"]
        assert ep["moved_along_side_m"] > 0.05
        assert ep["still_at_end"] == 0
        still = outcomes.run_push_episode(StillPolicy(), env, 100001)
        assert still["outcome"] == "never moved" and still["first_side"] is None
        assert still["still_at_end"] == still["steps"]
        assert still["steps"] == env.unwrapped.config.episode_steps
    finally:
        env.close()


def test_pick_classes(outcomes):
    lifted = outcomes.LIFTED + 0.01
    assert outcomes.classify_pick(True, "target", True, True, 0.06) == "success"
    assert outcomes.classify_pick(False, "distractor", True, True, lifted) == "lifted distractor first"
    assert outcomes.classify_pick(False, "target", True, True, lifted) == "lifted target, dropped/low"
    assert outcomes.classify_pick(False, None, True, True, 0.01) == "pinched, never lifted"
    assert outcomes.classify_pick(False, None, True, False, 0.0) == "touched, never pinched"
    assert outcomes.classify_pick(False, None, False, False, 0.0) == "never touched target"


@pytest.mark.parametrize("split, distractors", [("id", 0), ("id_clutter", 1)])
def test_pick_expert_episode_pinches_and_lifts_the_target(outcomes, split, distractors):
    from sim import make_env

    env = make_env(suite="tabletop", family="pick", split=split, seed=100000, image_size=64)
    try:
        ep = outcomes.run_pick_episode(ExpertPolicy(env), env, 100000)
        assert ep["outcome"] == "success" and ep["first_lifted"] == "target"
        assert ep["touched"] and ep["pinched"] and ep["target_max_rise_m"] > outcomes.LIFTED
        assert ep["kind"] in ("block", "cylinder", "bar") and ep["distractors"] == distractors
        assert ep["first_turn_agrees"] is (None if ep["kind"] == "cylinder" else True)
        still = outcomes.run_pick_episode(StillPolicy(), env, 100001)
        assert still["outcome"] == "never touched target" and still["first_lifted"] is None
        assert not still["touched"] and still["target_max_rise_m"] < outcomes.LIFTED
        # A hand that never turns does not turn the expert's way (the expert turns first unless already aligned).
        assert still["first_turn_agrees"] in ((None,) if still["kind"] == "cylinder" else (False,))
        assert still["steps"] == env.unwrapped.config.episode_steps
    finally:
        env.close()


# --------------------------------------------------------------------------- bar-turns


def _bar_seeds(n):
    return [s for s in range(100000, 100200) if redraw_task("pick", "id", s).placements[0].kind == "bar"][:n]


def test_turn_is_the_nearest_grasp_yaw_from_zero(outcomes):
    for seed in _bar_seeds(5):
        yaw = redraw_task("pick", "id", seed).placements[0].yaw
        # A bar grasps the same every pi: the smallest |yaw + k pi|, in degrees.
        expected = min(abs(math.degrees(yaw + k * math.pi)) for k in range(-3, 4))
        assert outcomes.bar_turn_deg("id", seed) == pytest.approx(expected, abs=1e-6)
        assert 0.0 <= outcomes.bar_turn_deg("id", seed) <= 90.0


def test_bar_turn_bins_and_per_seed_counts(outcomes, tmp_path):
    seeds = _bar_seeds(6)
    files = []
    for run in range(2):
        episodes = [{"seed": s, "kind": "bar", "success": (i + run) % 2 == 0} for i, s in enumerate(seeds)]
        episodes.append({"seed": 1, "kind": "cylinder", "success": True})  # not a bar: not counted
        path = tmp_path / f"run{run}.json"
        path.write_text(json.dumps({"family": "pick", "split": "id", "episodes": episodes}))
        files.append(path)
    out = outcomes.bar_turn_summary(files)
    assert sum(b["episodes"] for b in out["bins"]) == 12 and sum(b["successes"] for b in out["bins"]) == 6
    for b in out["bins"]:
        lo, hi = b["turn_deg"]
        turns = [outcomes.bar_turn_deg("id", s) for s in seeds]
        assert b["episodes"] == 2 * sum(lo <= t < hi or (hi == 90.0 and t == 90.0) for t in turns)
    assert [r["succeeded"] for r in out["seeds"]] == [1] * 6 and all(r["runs"] == 2 for r in out["seeds"])
    report = tmp_path / "o.json"
    assert outcomes.main(["bar-turns", "--files", ",".join(str(f) for f in files), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["bins"] == out["bins"]


def test_other_files_are_refused(outcomes, tmp_path, capsys):
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"family": "stack", "split": "id", "episodes": []}))
    with pytest.raises(DatasetError, match="not a pick outcome file"):
        outcomes.bar_turn_summary([path])
    assert outcomes.main(["bar-turns", "--files", str(path)]) == 2
    assert "classify --family pick" in capsys.readouterr().err
    assert outcomes.main(["bar-turns", "--files", str(tmp_path / "missing.json")]) == 2
    cyl = next(s for s in range(100000, 100200) if redraw_task("pick", "id", s).placements[0].kind != "bar")
    with pytest.raises(DatasetError, match="has no bar"):
        outcomes.bar_turn_deg("id", cyl)
