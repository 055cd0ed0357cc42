"""benchmarks/image_intake.py on small frames: every encoding decoded, the table matches the JSON."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("sensor_msgs")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import image_intake  # noqa: E402


def test_every_encoding_is_timed_against_rgb8(tmp_path):
    assert image_intake.main(["--width", "64", "--height", "48", "--rounds", "10", "--out",
                              str(tmp_path / "intake")]) == 0
    result = json.loads((tmp_path / "intake.json").read_text())
    rows = result["rows"]
    assert set(rows) == {*image_intake.RAW, *image_intake.COMPRESSED, "policy_preprocess"}
    assert rows["rgb8"]["ratio_to_rgb8"] == 1.0 and rows["rgb8"]["message_bytes"] == 64 * 48 * 3
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] for r in rows.values())
    md = (tmp_path / "intake.md").read_text()
    assert f"| yuv422 | {64 * 48 * 2:,} | {rows['yuv422']['median_ms']:.3f} |" in md


def test_an_odd_width_is_refused(tmp_path, capsys):
    assert image_intake.main(["--width", "65", "--out", str(tmp_path / "x")]) == 2
    assert "even width" in capsys.readouterr().err
