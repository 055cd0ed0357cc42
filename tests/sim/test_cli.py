from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main
from export.demos import DemoReader

REPO = Path(__file__).resolve().parents[2]


def test_demos_then_norm_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demos.hdf5"
    rc = main(["demos", "--suite", "tabletop", "--episodes", "2", "--out", str(out), "--families", "place,push",
               "--image-size", "24", "--seed", "3", "--no-progress"])
    assert rc == 0 and "wrote 2 demos" in capsys.readouterr().out
    with DemoReader(out) as reader:
        demos = list(reader.iter_demos())
    assert [d.images.shape[1:] for d in demos] == [(24, 24, 3)] * 2
    assert demos[0].instruction.split()[0] in {"put", "place", "set", "move"}
    sidecar = json.loads((tmp_path / "demos.hdf5.json").read_text())
    assert sidecar["config"]["seed"] == 3 and sidecar["summary"]["written"] == 2

    stats_path = tmp_path / "stats.json"
    assert main(["norm-stats", "--data", str(out), "--key", "mine", "--out", str(stats_path)]) == 0
    stats = json.loads(stats_path.read_text())
    assert list(stats) == ["mine"] and stats["mine"]["num_trajectories"] == 2
    assert stats["mine"]["action"]["mask"] == [True] * 6 + [False]


def test_bad_family_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["demos", "--episodes", "1", "--out", str(tmp_path / "x.hdf5"), "--families", "stak", "--no-progress"])
    assert rc == 2 and "rlrc-sim demos: error:" in (err := capsys.readouterr().err) and "Did you mean 'stack'" in err
    assert not (tmp_path / "x.hdf5").exists()


def test_list_via_python_m() -> None:
    run = subprocess.run([sys.executable, "-m", "sim.cli", "list"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    for word in ("pick", "push", "place", "stack", "ood_combo", "ood_paraphrase", "pick up the {colour} {object}"):
        assert word in run.stdout
