"""The robot-side import path must not pull in the training stack."""
import subprocess
import sys


def test_import_rlrc_runtime_is_torch_free():
    code = (
        "import sys, rlrc_runtime, rlrc_runtime.cli;"
        "heavy = [m for m in ('torch', 'transformers', 'rclpy', 'export') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"importing rlrc_runtime imported {proc.stdout.strip()} {proc.stderr[-500:]}"


def test_torch_backend_import_is_lazy(tiny_ckpt):
    code = (
        "import sys, numpy as np, rlrc_runtime as r;"
        "assert 'torch' not in sys.modules;"
        f"p = r.load_policy({str(tiny_ckpt)!r}, backend='torch');"
        "assert 'torch' in sys.modules; print(p.predict_action(np.zeros((48, 64, 3), np.uint8), 'go').shape)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(7,)"
