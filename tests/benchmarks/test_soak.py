"""benchmarks/soak.py on tiny budgets: the loop runs, every field is written, nothing unsafe goes out."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("mujoco")
pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def soak(load_script):
    return load_script("soak")


def _check_results(out, windows: int) -> dict:
    result = json.loads(out.with_suffix(".json").read_text())
    assert {"config", "machine", "command", "policy", "bundle_id", "windows", "latency_ms", "rss", "totals"} <= set(result)
    assert len(result["windows"]) == windows
    for w in result["windows"]:
        assert {"latency_ms", "actions_published", "frames_received", "deadline_misses", "unsafe", "rss_mb"} <= set(w)
        assert w["latency_ms"]["n"] > 0 and w["latency_ms"]["p50"] <= w["latency_ms"]["p99"]
    totals = result["totals"]
    assert totals["unsafe"] == 0 and result["unsafe_examples"] == []
    assert 0 < totals["actions_published"] <= totals["frames_received"]
    assert totals["actions_received"] == totals["actions_published"]  # the monitor checked every one
    assert {"slope_mb_per_hour", "start_mb", "end_mb", "peak_mb"} <= set(result["rss"])
    assert len(result["rss"]["samples"]) >= 4 and result["rss"]["peak_mb"] > 0
    assert out.with_suffix(".md").read_text().count("\n| ") == windows + 1  # header + one row per window
    assert out.with_suffix(".png").stat().st_size > 0
    return result


def test_soak_on_the_sim_robot_with_the_default_tiny_policy(soak, tmp_path):
    out = tmp_path / "soak"
    assert soak.main(["--minutes", "0.1", "--window-min", "0.05", "--work", str(tmp_path / "work"),
                      "--out", str(out), "--no-progress"]) == 0
    result = _check_results(out, windows=2)
    assert result["policy"].endswith("tiny-128") and result["sim"]["invalid_actions"] == 0


def test_soak_on_a_looping_recording(soak, tmp_path, ckpt_factory):
    pytest.importorskip("pyrealsense2")
    import numpy as np

    from rlrc_runtime.camera import write_recording

    rng = np.random.default_rng(0)
    recording = write_recording(tmp_path / "loop.db3", [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                                                        for _ in range(3)], instruction="pick up the red block")
    out = tmp_path / "soak_rec"
    assert soak.main(["--minutes", "0.05", "--window-min", "0.05", "--source", "recording", "--recording",
                      str(recording), "--policy", str(ckpt_factory("tiny-128")), "--out", str(out),
                      "--no-progress"]) == 0
    result = _check_results(out, windows=1)
    assert result["sim"] is None and result["totals"]["frames_received"] > 3  # the recording looped


def test_soak_flags_are_checked(soak, tmp_path, capsys):
    assert soak.main(["--minutes", "1", "--window-min", "2"]) == 2
    assert "--window-min 2.0: expected > 0 and <= --minutes 1.0" in capsys.readouterr().err
    assert soak.main(["--source", "recording", "--recording", str(tmp_path / "none.db3")]) == 2
    assert "--source recording needs an existing .db3 file" in capsys.readouterr().err
