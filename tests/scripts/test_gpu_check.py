"""scripts/gpu_check.py without a GPU: the CPU steps run and agree, the GPU steps are skipped with why."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_steps_pass_and_gpu_steps_say_why_they_were_skipped(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check.py"), "--out", str(tmp_path), "--presets",
                          "tiny", "--iters", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = {r["step"]: r for r in json.loads((tmp_path / "gpu_check.json").read_text())["steps"]}
    assert rows["tiny: torch cpu fp32"]["status"] == "ok"
    assert rows["tiny: onnxruntime cpu"]["token_agreement_vs_torch_cpu"] == 1.0
    for step in ("tiny: torch cuda float32", "tiny: onnxruntime cuda", "tiny: tensorrt build fp16"):
        assert rows[step]["status"] in ("skipped", "ok"), rows[step]
        if rows[step]["status"] == "skipped":
            assert rows[step]["reason"]
    assert "| tiny: onnxruntime cpu | ok |" in out.stdout


def test_the_wrapper_refuses_a_machine_without_a_gpu(tmp_path):
    if subprocess.run(["bash", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("this machine has nvidia-smi: the wrapper runs the real check here")
    out = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "no NVIDIA GPU" in out.stderr
