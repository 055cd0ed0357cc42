"""research/matmul_kernels.py: every quantized variant computes the fp32 MatMul (to its precision), and the report."""
from __future__ import annotations

import re

import pytest

from research import matmul_kernels as kernels
from rlrc_runtime.errors import ConfigError


def test_variants_agree_with_fp32_and_are_reported(capsys):
    assert kernels.main(["--k", "64", "--n", "48", "--rows", "1,5", "--rounds", "2", "--threads", "1"]) == 0
    report = capsys.readouterr().out
    for m in (1, 5):
        section = report.split(f"## M = {m}")[1].split("## M =")[0]
        rows = dict(re.findall(r"^\| (\w+) \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", section, re.M))
        assert set(rows) == {"fp32", "int8_dynamic", *(f"int4_acc{a}_block{b}" for a in (0, 4) for b in (32, 64, 128))}
        assert float(rows["fp32"]) == 0.0
        # x ~ N(0, 1), w ~ N(0, 0.02), K = 64: outputs ~ N(0, 0.16), up to ~0.5; a wrong kernel is off by that much,
        # while rounding the weights to 8 bits moves them by ~0.003 and to 4 bits by ~0.05
        assert float(rows["int8_dynamic"]) < 0.01
        assert all(float(d) < 0.1 for name, d in rows.items() if name.startswith("int4"))


def test_bad_rows_are_a_clear_error():
    with pytest.raises(ConfigError, match="--rows"):
        kernels.KernelsConfig(rows="1,x")
