import json

import numpy as np
import pytest

from sim.evaluate import EvalConfig, evaluate, to_env_action, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == pytest.approx(1.0)


def test_gripper_is_clipped_to_the_env_range():
    out = to_env_action(np.array([0.1, 0, 0, 0, 0, 0, 1.004], np.float32))
    assert out[6] == 1.0 and out[0] == np.float32(0.1)


def test_eval_report_schema_and_determinism(tiny_ckpt, tmp_path):
    cfg = EvalConfig(policy=str(tiny_ckpt), families="pick", episodes=2, json=str(tmp_path / "r.json"),
                     plot=str(tmp_path / "r.png"), video_dir=str(tmp_path / "vid"), progress=False, image_size=64)
    report = evaluate(cfg)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["schema"] == "rlrc-eval/1" and saved["split"] == "id"
    fam = saved["families"]["pick"]
    assert fam["episodes"] == 2 and 0 <= fam["success_rate"] <= 1
    assert fam["ci95"][0] <= fam["success_rate"] <= fam["ci95"][1]
    assert fam["mean_episode_length"] > 0 and fam["step_latency_ms"]["p50"] > 0
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "vid" / "contact_sheet.png").is_file()
    again = evaluate(EvalConfig(policy=str(tiny_ckpt), families="pick", episodes=2, progress=False, image_size=64))
    assert again["families"]["pick"]["mean_episode_length"] == report["families"]["pick"]["mean_episode_length"]
    assert again["families"]["pick"]["successes"] == report["families"]["pick"]["successes"]
    # Two spawned worker processes score the same episodes the same way.
    split = evaluate(EvalConfig(policy=str(tiny_ckpt), families="pick", episodes=2, progress=False, image_size=64,
                                workers=2))
    assert split["families"]["pick"]["mean_episode_length"] == report["families"]["pick"]["mean_episode_length"]


def test_plot_with_zero_and_full_success(tmp_path):
    from sim.evaluate import plot_report

    fams = {}
    for name, k in (("pick", 0), ("push", 100)):
        fams[name] = {"success_rate": k / 100, "ci95": list(wilson_interval(k, 100))}
    plot_report({"families": fams, "policy": "p", "split": "id", "episodes_per_family": 100}, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0


def test_parallel_map_keeps_order_and_reports_a_dead_worker():
    """Workers are real spawned processes: a worker that dies or cannot start ends the map with an error
    (multiprocessing.Pool would wait forever for the lost episode)."""
    import os

    from sim.evaluate import parallel_map

    assert list(parallel_map(abs, [-1, -2, 3, -4], 2, os.getpid, ())) == [1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="worker process died after 0 of 1 episodes.*--workers 1"):
        list(parallel_map(os._exit, [3], 2, os.getpid, ()))
    with pytest.raises(RuntimeError, match="worker process died"):
        list(parallel_map(abs, [1, 2], 2, os.chdir, ("/nonexistent/rlrc",)))
    with pytest.raises(ValueError, match="math domain error"):  # an error inside a job comes through as is
        import math

        list(parallel_map(math.sqrt, [4.0, -1.0], 2, os.getpid, ()))
