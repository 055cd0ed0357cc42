"""scripts/main_job.py, the main job's fast path: a small model through every stage (real commands)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _main_job():
    import importlib.util

    spec = importlib.util.spec_from_file_location("main_job", ROOT / "scripts/main_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.ros
def test_the_node_stage_on_a_realsense_recording_returns_its_diagnostics(ckpt_factory, tmp_path, capsys):
    pytest.importorskip("rclpy")
    pytest.importorskip("pyrealsense2")
    from rlrc_runtime.camera import write_recording

    rng = np.random.default_rng(0)
    rec = write_recording(tmp_path / "frames.db3", [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)],
                          instruction="pick up the red block")
    values = _main_job().run_node(ckpt_factory("tiny-128"), tmp_path, "recording", recording=str(rec), serial="",
                                  instruction="pick up the red block", seconds=60.0)
    assert values["camera_source"] == "recording" and values["recording_finished"] == "true"
    assert values["actions_published"] == "3" and values["lifecycle"] == "finalized"
    assert json.loads((tmp_path / "node_diagnostics.json").read_text())["values"] == values


@pytest.mark.ros
def test_the_node_stage_without_a_realsense_names_the_problem(ckpt_factory, tmp_path, capsys):
    pytest.importorskip("rclpy")
    pytest.importorskip("pyrealsense2")
    with pytest.raises(SystemExit) as exc:
        _main_job().run_node(ckpt_factory("tiny-128"), tmp_path, "realsense", recording="", serial="000000000000",
                             instruction="pick up the red block", seconds=5.0)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "activate failed" in err and "no RealSense camera found" in err and "node.log" in err
