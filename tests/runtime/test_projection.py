"""rlrc-bench --project: the Jetson projection from a size report's stage bytes and FLOPs."""
from __future__ import annotations

import json

import pytest

from rlrc_runtime.bench_cli import main
from rlrc_runtime.projection import DEVICES, project

REPORT = {"stages": {"prompt_tokens": 279, "decode_steps": 6, "b": {
    "vision": {"bytes": 1e9, "flops": 1e12},        # 4.88 ms of memory vs 23.5 ms of compute on AGX Orin
    "prefill": {"bytes": 2.048e9, "flops": 1e9},    # memory bound: 10 ms
    "decode_step": {"bytes": 1.024e9, "flops": 1e9},  # memory bound: 5 ms
}}}


def test_each_stage_takes_the_slower_of_memory_and_compute():
    out = project(REPORT, DEVICES["agx-orin"])["bundles"]["b"]
    st = out["stages"]
    assert st["vision"]["bound_by"] == "compute" and st["vision"]["ms"] == pytest.approx(1e12 / 42.5e12 * 1e3)
    assert st["prefill"]["bound_by"] == "memory" and st["prefill"]["ms"] == pytest.approx(10.0)
    assert out["ms_per_action"] == pytest.approx(st["vision"]["ms"] + 10.0 + 6 * 5.0)
    faster = project(REPORT, DEVICES["thor"])["bundles"]["b"]["ms_per_action"]
    assert faster < out["ms_per_action"] < project(REPORT, DEVICES["orin-nano"])["bundles"]["b"]["ms_per_action"]


def test_cli_labels_the_projection_and_names_the_anchor(tmp_path, capsys):
    path = tmp_path / "size.json"
    path.write_text(json.dumps(REPORT))
    assert main(["--project", "agx-orin", "--size-report", str(path), "--json", str(tmp_path / "p.json")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("PROJECTION") and "NanoLLM" in text and "336 ms/action" in text
    saved = json.loads((tmp_path / "p.json").read_text())
    assert set(saved["devices"]) == {"agx-orin"} and saved["anchor"]["ms_per_action"] == 336.0
    assert main(["--project", "xavier", "--size-report", str(path)]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["--project", "all", "--size-report", str(tmp_path / "missing.json")]) == 2
    assert "size-report" in capsys.readouterr().err
