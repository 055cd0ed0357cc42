"""research/jpeg_decode.py: a row per quality, larger files at higher quality, and clear errors."""
from __future__ import annotations

import re

import pytest

from research import jpeg_decode
from rlrc_runtime.errors import ConfigError

pytest.importorskip("cv2", reason="OpenCV (the [ros] extra) decodes the JPEGs")


def test_one_row_per_quality(capsys):
    assert jpeg_decode.main(["--qualities", "50,95", "--repeats", "2"]) == 0
    rows = re.findall(r"^\| (\d+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", capsys.readouterr().out, re.M)
    assert [r[0] for r in rows] == ["50", "95"]
    assert int(rows[0][1].replace(",", "")) < int(rows[1][1].replace(",", ""))  # quality 95 keeps more bytes
    assert all(float(ms) > 0 for r in rows for ms in r[2:])


def test_bad_quality_is_a_clear_error():
    with pytest.raises(ConfigError, match="--qualities"):
        jpeg_decode.DecodeConfig(qualities="90,101")
