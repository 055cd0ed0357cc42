"""research/train_step_speed.py: every mode trains the same step (the losses agree), and the report's schema."""
from __future__ import annotations

import json

import pytest

from research import train_step_speed as speed


@pytest.fixture(scope="module")
def demos(mixed_demos):
    return mixed_demos


def test_modes_train_the_same_step_and_report_it(demos, tmp_path):
    out = tmp_path / "speed.json"
    assert speed.main(["--data", str(demos), "--steps", "1", "--warmup", "1", "--modes", "eager,sdpa_math",
                       "--preset", "base-96", "--threads", "1", "--no-profile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["grounding_rows"] == 13 and report["command"].startswith("python -m research.train_step_speed")
    eager, math_ = report["rows"]
    assert (eager["mode"], math_["mode"]) == ("eager", "sdpa_math")
    # Another attention kernel is a speed option only if it computes the same training step.
    assert eager["final_loss"] == pytest.approx(math_["final_loss"], rel=1e-3)
    assert all(r["steps_per_s"] > 0 and r["samples_per_s"] == pytest.approx(64 * r["steps_per_s"]) for r in report["rows"])
    assert "profile" not in eager and "profile" not in math_


@pytest.mark.slow  # torch.profiler over five more base-128 steps: ~30 s on 2 loaded cores
def test_the_eager_mode_is_profiled(demos, tmp_path):
    out = tmp_path / "profiled.json"
    assert speed.main(["--data", str(demos), "--steps", "1", "--warmup", "1", "--modes", "eager", "--threads", "1",
                       "--json", str(out)]) == 0
    (eager,) = json.loads(out.read_text())["rows"]
    shares = eager["profile"]
    assert "aten::mm" in shares and 0 < sum(shares.values()) <= 1.0 + 1e-6


def test_an_unknown_mode_is_a_usage_error(demos, capsys):
    assert speed.main(["--data", str(demos), "--modes", "eager,jit"]) == 2
    assert "jit" in capsys.readouterr().err


def test_target_head_mode_on_another_preset(demos, tmp_path):
    out = tmp_path / "speed96.json"
    assert speed.main(["--data", str(demos), "--steps", "1", "--warmup", "1", "--modes", "target_head",
                       "--preset", "base-96", "--threads", "1", "--no-profile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert report["preset"] == "base-96" and row["mode"] == "target_head"
    # Zero head rows start every target at 1/V: the first losses sit near log(32064) ~ 10.4, not at a NaN.
    assert 5.0 < row["final_loss"] < 11.0
