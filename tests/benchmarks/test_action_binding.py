"""benchmarks/action_binding.py: does the first action follow the words? Oracle policies on real MuJoCo scenes."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("action_binding")


class OraclePolicy:
    """Answers with the scripted expert's first action for the instruction it is given (or, `deaf`, for the
    scene's own instruction whatever it is given). Actions are in the env convention; the probe maps them
    with to_env_action, which leaves the translation unchanged."""

    def __init__(self, probe, env, deaf: bool = False):
        self.probe, self.env, self.deaf = probe, env, deaf

    def infer(self, image, instruction):
        from sim.counterfactual import swapped_tasks

        task = self.env.unwrapped.task
        chosen = task if self.deaf else next(t for t in [task, *swapped_tasks(task)] if t.instruction == instruction)
        return SimpleNamespace(action=self.probe.expert_action(self.env, chosen))


@pytest.mark.parametrize("family", ["stack", "push"])
def test_a_bound_oracle_scores_both_and_a_deaf_one_never(probe, family):
    from sim import make_env

    env = make_env(family=family, split="id", image_size=64)
    try:
        bound = [r for i in range(6) for r in probe.probe_scene(OraclePolicy(probe, env), env, 700_000 + i)]
        deaf = [r for i in range(6) for r in probe.probe_scene(OraclePolicy(probe, env, deaf=True), env, 700_000 + i)]
    finally:
        env.close()
    assert bound and len(bound) == len(deaf)
    good, bad = probe.summarise(bound), probe.summarise(deaf)
    assert good["both"] == 1.0 and all(r["own_right_m"] < 1e-6 and r["swapped_right_m"] < 1e-6 for r in bound)
    assert bad["own"] == 1.0 and bad["swapped"] == 0.0 and bad["both"] == 0.0


def test_a_checkpoint_gives_the_json(probe, ckpt_factory, tmp_path):
    out = tmp_path / "action_binding.json"
    assert probe.main(["--policy", str(ckpt_factory("tiny-128")), "--episodes", "4", "--image-size", "64",
                       "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    s = report["summary"]
    assert report["episodes"] == 4 and s["pairs"] == len(report["pairs_detail"]) > 0
    assert 0.0 <= s["both"] <= min(s["own"], s["swapped"]) <= 1.0
    assert all(np.isfinite(r["own_right_m"]) for r in report["pairs_detail"]) and report["wall_s"] >= 0
    with pytest.raises(SystemExit):
        probe.main(["--policy", "x", "--episodes", "0"])
