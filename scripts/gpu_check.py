"""The GPU paths checked in one run (scripts/gpu_check.sh calls it): parity, then speed, per backend.

    python scripts/gpu_check.py --out DIR [--presets tiny,mid] [--iters 20]

On a machine with an NVIDIA GPU and no network. For each preset (random weights, made here):

1. the torch backend on CUDA against the torch backend on the CPU: action tokens on a few frames,
   fp32 and bf16, then the p50 of one predict_action;
2. the fp32 ONNX bundle on ONNX Runtime's CPU provider against torch on the CPU, and on its CUDA
   provider when onnxruntime-gpu is installed;
3. TensorRT engines (FP16, INT8) built with `rlrc-export engine` when TensorRT is installed, against
   ONNX Runtime on the CPU.

A step whose software is missing is recorded as skipped with the reason, never as passed. Results:
DIR/gpu_check.json (every step: status, token agreement, p50 ms, wall time) and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

INSTRUCTION = "pick up the red block"


def frames(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n)]


def run_policy(path: Path, iters: int, **kwargs: Any) -> dict[str, Any]:
    """Tokens on frames() and the p50 ms of predict_action (after 3 warm-ups)."""
    import rlrc_runtime

    with rlrc_runtime.load_policy(path, **kwargs) as policy:
        tokens = [policy.infer(f, INSTRUCTION).action_tokens.tolist() for f in frames()]
        image = frames(1)[0]
        for _ in range(3):
            policy.predict_action(image, INSTRUCTION)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            policy.predict_action(image, INSTRUCTION)
            times.append((time.perf_counter() - t0) * 1e3)
    return {"tokens": tokens, "p50_ms": float(np.median(times))}


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    return float(np.mean(np.asarray(a) == np.asarray(b)))


class Steps:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], dict[str, Any]], skip: str | None = None) -> dict[str, Any] | None:
        if skip:
            self.rows.append({"step": name, "status": "skipped", "reason": skip})
            print(f"[gpu_check] {name}: skipped ({skip})", flush=True)
            return None
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - one failing step must not hide the others
            self.rows.append({"step": name, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                              "traceback": traceback.format_exc()[-2000:], "wall_s": time.perf_counter() - t0})
            print(f"[gpu_check] {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            return None
        row = {"step": name, "status": "ok", **out, "wall_s": round(time.perf_counter() - t0, 1)}
        self.rows.append(row)
        print(f"[gpu_check] {name}: ok {json.dumps({k: v for k, v in out.items() if k != 'tokens'})}", flush=True)
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--presets", default="tiny,mid")
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from export.tiny import make_tiny

    steps = Steps()
    cuda = torch.cuda.is_available()
    try:
        import onnxruntime as ort
        ort_gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort, ort_gpu = None, False
    try:
        import tensorrt  # noqa: F401
        trt = None
    except ImportError:
        trt = "TensorRT is not installed (carry its wheels in .whl/)"
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "platform": platform.platform(),
            "onnxruntime": getattr(ort, "__version__", None), "onnxruntime_cuda": ort_gpu,
            "tensorrt": trt is None}
    print(f"[gpu_check] {json.dumps(info)}", flush=True)
    for preset in [p for p in a.presets.split(",") if p]:
        ckpt = make_tiny(out / f"ckpt_{preset}", preset=preset, overwrite=True)
        ref = steps.run(f"{preset}: torch cpu fp32", lambda: run_policy(ckpt, 3))
        for dtype in ("float32", "bfloat16"):
            got = steps.run(f"{preset}: torch cuda {dtype}",
                            lambda dtype=dtype: run_policy(ckpt, a.iters, device="cuda", dtype=dtype),
                            None if cuda else "no CUDA device")
            if ref and got:
                steps.rows[-1]["token_agreement_vs_cpu"] = agreement(ref["tokens"], got["tokens"])
        bundle = out / f"bundle_{preset}"
        exported = steps.run(f"{preset}: export onnx fp32", lambda: _export(ckpt, bundle))
        ort_ref = None
        if exported:
            ort_ref = steps.run(f"{preset}: onnxruntime cpu", lambda: run_policy(bundle, 3, backend="onnxruntime"))
            if ort_ref and ref:
                steps.rows[-1]["token_agreement_vs_torch_cpu"] = agreement(ref["tokens"], ort_ref["tokens"])
            got = steps.run(f"{preset}: onnxruntime cuda",
                            lambda: run_policy(bundle, a.iters, backend="onnxruntime", device="cuda"),
                            None if ort_gpu else "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)")
            if got and ort_ref:
                steps.rows[-1]["token_agreement_vs_ort_cpu"] = agreement(ort_ref["tokens"], got["tokens"])
        for precision in ("fp16", "int8"):
            engine = out / f"engine_{preset}_{precision}"
            built = steps.run(f"{preset}: tensorrt build {precision}",
                              lambda engine=engine, precision=precision: _engine(bundle, engine, precision),
                              trt or (None if exported else "no ONNX bundle"))
            if built:
                got = steps.run(f"{preset}: tensorrt {precision}",
                                lambda engine=engine: run_policy(engine, a.iters, backend="tensorrt"))
                if got and ort_ref:
                    steps.rows[-1]["token_agreement_vs_ort_cpu"] = agreement(ort_ref["tokens"], got["tokens"])
    result = {"info": info, "steps": steps.rows}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| step | status | p50 ms | agreement |\n|---|---|---|---|")
    for r in steps.rows:
        agree = next((f"{v:.3f}" for k, v in r.items() if k.startswith("token_agreement")), "-")
        print(f"| {r['step']} | {r['status']} | {r.get('p50_ms', float('nan')):.2f} | {agree} |")
    return 1 if any(r["status"] == "failed" for r in steps.rows) else 0


def _export(ckpt: Path, bundle: Path) -> dict[str, Any]:
    from export.onnx_export import OnnxExportConfig, export_onnx

    export_onnx(ckpt, bundle, OnnxExportConfig(), overwrite=True)  # full head: random weights pick any token
    return {"bundle": str(bundle)}


def _engine(bundle: Path, engine: Path, precision: str) -> dict[str, Any]:
    import shutil

    shutil.rmtree(engine, ignore_errors=True)
    shutil.copytree(bundle, engine)
    cmd = [sys.executable, "-m", "export.cli", "engine", "--bundle", str(engine), "--precision", precision]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"rlrc-export engine exited {done.returncode}: {done.stderr[-1500:]}")
    return {"engine": str(engine)}


if __name__ == "__main__":
    sys.exit(main())
