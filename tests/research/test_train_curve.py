"""research/train_curve.py: export a run's metrics.jsonl, compare curves, and refuse bad input."""
from __future__ import annotations

import json

import pytest

from research import train_curve as curve_mod
from rlrc_runtime.errors import DatasetError


def _run(tmp_path, name, ces):
    run = tmp_path / name
    run.mkdir()
    rows = [{"losses/action_ce": ce, "metrics/action_accuracy": 0.1 * i, "step": 50 * (i + 1)}
            for i, ce in enumerate(ces)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_export_then_compare(tmp_path, capsys):
    a, b = _run(tmp_path, "a", [9.0, 5.0, 3.5, 3.0]), _run(tmp_path, "b", [9.5, 6.0])
    assert curve_mod.main(["export", "--run", str(a), "--label", "A", "--command", "cmd", "--machine", "m",
                           "--out", str(tmp_path / "a.json")]) == 0
    assert curve_mod.main(["export", "--run", str(b), "--out", str(tmp_path / "b.json")]) == 0
    curve = json.loads((tmp_path / "a.json").read_text())
    assert curve["schema"] == "rlrc-train-curve/1" and curve["command"] == "cmd" and curve["run"].endswith("(A)")
    assert [r["step"] for r in curve["rows"]] == [50, 100, 150, 200]
    capsys.readouterr()
    assert curve_mod.main(["compare", "--curves", f"{tmp_path / 'a.json'},{tmp_path / 'b.json'}", "--every", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # only the steps both curves logged, each with both runs' CE / accuracy
    assert lines[-2:] == ["   50 9.000/0.000  9.500/0.000", "  100 5.000/0.100  6.000/0.100"]


def test_bad_input_names_the_problem(tmp_path, capsys):
    with pytest.raises(DatasetError, match="metrics.jsonl does not exist"):
        curve_mod.read_metrics(tmp_path)
    run = _run(tmp_path, "cut", [9.0])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"losses/action_ce": 8.')  # cut off mid-write
    with pytest.raises(DatasetError, match=r"metrics.jsonl:2 is not JSON"):
        curve_mod.read_metrics(run)
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something/2"}))
    assert curve_mod.main(["compare", "--curves", str(tmp_path / "other.json")]) == 2
    assert "expected 'rlrc-train-curve/1'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        curve_mod.main(["export", "--run", str(run)])  # no --out
    assert exc.value.code == 2
