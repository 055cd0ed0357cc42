"""scripts/main_job.py, the main job's fast path: a small model through every stage (real commands)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ros
def test_main_job_fast_path_writes_every_stage_and_a_true_summary(ckpt_factory, tmp_path):
    pytest.importorskip("rclpy")
    ckpt = ckpt_factory("tiny-128")
    work = tmp_path / "main"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    out = subprocess.run([sys.executable, str(ROOT / "scripts/main_job.py"), "--checkpoint", str(ckpt),
                          "--work", str(work), "--episodes", "1"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads((work / "summary.json").read_text())
    for path in summary["artifacts"].values():
        assert Path(path).exists(), path
    assert (work / "bundle_int8" / "manifest.json").is_file()
    bench = json.loads((work / "bench.json").read_text())
    loop = json.loads((work / "closed_loop_closed_loop.json").read_text())
    # The summary's figures are the ones the stages wrote, and the screen shows them.
    assert summary["speedup_p50_end_to_end"] == bench["ratios"]["speedup_p50_end_to_end"]
    assert summary["bundle_weight_bytes"] == bench["runs"][0]["weights"]["total_bytes"]
    assert summary["bundle_weight_bytes"] < summary["checkpoint_weight_bytes"]
    assert summary["actions_published"] == int(loop["vla_diagnostics"]["actions_published"]) > 0
    assert summary["closed_loop"]["episodes"] == 1
    assert f"{summary['weight_bytes_ratio']:.2f}x smaller" in out.stdout
    assert f"{summary['actions_published']} actions published" in out.stdout
    assert "random weights" not in out.stdout or not summary["closed_loop"]["trained_policy"]


def test_a_failing_stage_names_its_log(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts/main_job.py"), "--checkpoint", str(tmp_path / "nope"),
                          "--work", str(tmp_path / "w")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0
    assert out.returncode == 2 and "nope" in out.stderr and "config.json" in out.stderr
