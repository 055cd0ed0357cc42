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
    assert image_intake.main(["--rounds", "10", "--out", str(tmp_path / "intake")]) == 0
    result = json.loads((tmp_path / "intake.json").read_text())
    rows = result["rows"]
    assert set(rows) == {*image_intake.RAW, *image_intake.COMPRESSED, "jpeg_full_size", "policy_preprocess",
                         "policy_preprocess_of_scaled_jpeg"}
    assert rows["rgb8"]["ratio_to_rgb8"] == 1.0 and rows["rgb8"]["message_bytes"] == 640 * 480 * 3
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] for r in rows.values())
    scaled = result["scaled_jpeg_vs_full"]  # 640x480 for the mid preset's 224 px: decoded at half size
    assert scaled["decoded_jpeg_shape"] == [240, 320, 3] and scaled["policy_side"] == 224
    assert scaled["mean_abs_diff_levels"] < 1.5
    md = (tmp_path / "intake.md").read_text()
    assert f"| yuv422 | {640 * 480 * 2:,} | {rows['yuv422']['median_ms']:.3f} |" in md


def test_an_odd_width_is_refused(tmp_path, capsys):
    assert image_intake.main(["--width", "65", "--out", str(tmp_path / "x")]) == 2
    assert "even width" in capsys.readouterr().err
