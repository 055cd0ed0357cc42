"""bar_turns: the expert's turn redrawn from a pick episode's seed, binned against success across outcome files."""
import json
import math

import pytest

from benchmarks.bar_turns import bar_turn_deg, main, summarise
from rlrc_runtime.errors import ConfigError
from sim.grounding import redraw_task


def _bar_seeds(n):
    return [s for s in range(100000, 100200) if redraw_task("pick", "id", s).placements[0].kind == "bar"][:n]


def test_turn_is_the_nearest_grasp_yaw_from_zero():
    for seed in _bar_seeds(5):
        yaw = redraw_task("pick", "id", seed).placements[0].yaw
        # A bar grasps the same every pi: the smallest |yaw + k pi|, in degrees.
        expected = min(abs(math.degrees(yaw + k * math.pi)) for k in range(-3, 4))
        assert bar_turn_deg("id", seed) == pytest.approx(expected, abs=1e-6)
        assert 0.0 <= bar_turn_deg("id", seed) <= 90.0


def test_bins_and_per_seed_counts(tmp_path):
    seeds = _bar_seeds(6)
    files = []
    for run in range(2):
        episodes = [{"seed": s, "kind": "bar", "success": (i + run) % 2 == 0} for i, s in enumerate(seeds)]
        episodes.append({"seed": 1, "kind": "cylinder", "success": True})  # not a bar: not counted
        path = tmp_path / f"run{run}.json"
        path.write_text(json.dumps({"family": "pick", "split": "id", "episodes": episodes}))
        files.append(path)
    out = summarise(files)
    assert sum(b["episodes"] for b in out["bins"]) == 12 and sum(b["successes"] for b in out["bins"]) == 6
    for b in out["bins"]:
        lo, hi = b["turn_deg"]
        assert b["episodes"] == 2 * sum(lo <= bar_turn_deg("id", s) < hi or (hi == 90.0 and bar_turn_deg("id", s) == 90.0)
                                        for s in seeds)
    assert [r["succeeded"] for r in out["seeds"]] == [1] * 6 and all(r["runs"] == 2 for r in out["seeds"])
    assert main([str(f) for f in files] + ["--json", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["bins"] == out["bins"]


def test_other_files_are_refused(tmp_path, capsys):
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"family": "stack", "split": "id", "episodes": []}))
    with pytest.raises(ConfigError, match="not a pick outcome file"):
        summarise([path])
    assert main([str(path)]) == 2 and "stack_outcomes.py" in capsys.readouterr().err
    cyl = next(s for s in range(100000, 100200) if redraw_task("pick", "id", s).placements[0].kind != "bar")
    with pytest.raises(ConfigError, match="has no bar"):
        bar_turn_deg("id", cyl)
