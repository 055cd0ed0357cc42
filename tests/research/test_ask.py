"""benchmarks/binding_probe.py: which object the answers are nearer to, on real MuJoCo scenes and a real checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("binding_probe")


class OracleAsker:
    """Answers every question with the position of the object it names (read from the simulator)."""

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
def test_an_oracle_is_always_right_and_a_swapped_one_always_wrong(probe, family):
    from sim import make_env

    env = make_env(family=family, split="id", image_size=64)
    try:
        right = [probe.probe_episode(OracleAsker(env), env, 700_000 + i) for i in range(3)]
        wrong = [probe.probe_episode(OracleAsker(env, swap=True), env, 700_000 + i) for i in range(3)]
    finally:
        env.close()
    good, bad = probe.summarise(right), probe.summarise(wrong)
    for q in probe.QUESTIONS:
        assert good[q]["nearer_right"] == 1.0 and good[q]["mean_right_cm"] < 1e-6 < good[q]["mean_wrong_cm"]
        assert bad[q]["nearer_right"] == 0.0 and bad[q]["mean_wrong_cm"] < 1e-6


def test_a_checkpoint_gives_the_json(probe, ckpt_factory, tmp_path):
    out = tmp_path / "probe.json"
    assert probe.main(["--policy", str(ckpt_factory("tiny-128")), "--episodes", "2", "--image-size", "64",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["episodes"] == 2 and len(report["episodes_detail"]) == 2
    for q in probe.QUESTIONS:
        s = report["summary"][q]
        assert 0.0 <= s["nearer_right"] <= 1.0 and s["mean_right_cm"] >= 0 and s["mean_wrong_cm"] >= 0
        # Triangle inequality: right + other distance is at least the two objects' separation (> 2 cm here).
        assert all(r[q]["right_m"] + r[q]["wrong_m"] > 0.02 for r in report["episodes_detail"])
    with pytest.raises(SystemExit):
        probe.main(["--policy", "x", "--episodes", "0"])
