"""Exports are atomic and exclusive, reuse only stages with the same inputs, and refuse NaN models.

The interrupted-export cases run the real `rlrc-export` in a subprocess and signal it while its
temporary bundle exists; the rerun afterwards must succeed and leave nothing behind.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import rlrc_runtime as r
from export.bundle import lock_out, private_dir, unlock_out
from export.cli import PipelineArgs, compress_checkpoint
from export.cli import main as export_main
from export.onnx_export import OnnxExportConfig, export_onnx
from rlrc_runtime.errors import CheckpointError, NonFiniteOutputError
from rlrc_runtime.manifest import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]
FAST = OnnxExportConfig(exporter="torchscript", check=False)


def poison(ckpt: Path, match: str, value: float = np.nan) -> str:
    """Write ``value`` into the first element of the first stored tensor whose name contains ``match``."""
    shard = next(ckpt.glob("*.safetensors"))
    tensors = load_file(str(shard))
    name = next(n for n in sorted(tensors) if match in n)
    t = tensors[name].copy()
    t.reshape(-1)[0] = value
    tensors[name] = t
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return name


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# ---------------------------------------------------------------- exclusive

def test_a_second_export_into_a_locked_out_fails_fast_and_names_the_holder(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from export.bundle import lock_out; lock_out(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(60)"), str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        assert export_main(["pipeline", "--checkpoint", str(tiny_ckpt), "--out", str(out), "--quantize", "int8"]) == 2
        assert time.perf_counter() - start < 5  # refused before any export work
        err = capsys.readouterr().err
        assert f"being written by another export (pid {holder.pid}" in err and "Traceback" not in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    export_onnx(tiny_ckpt, out, FAST)  # the kernel released the dead holder's lock
    read_manifest(out)
    assert leftovers(tmp_path, "bundle") == []


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    out = tmp_path / "b"
    lock_out(out)
    lock_out(out)  # the pipeline holds it while its stages take it again
    unlock_out(out)
    probe = subprocess.run([sys.executable, "-c", "import sys; from export.bundle import lock_out; lock_out(sys.argv[1])",
                            str(out)], cwd=REPO, capture_output=True, text=True)
    assert probe.returncode != 0 and "ExportBusyError" in probe.stderr
    unlock_out(out)
    assert not (tmp_path / ".b.lock").exists()
    lock_out(out)  # free again for this process
    unlock_out(out)


def test_a_new_staging_directory_replaces_the_one_a_killed_export_left(tmp_path):
    left = private_dir(tmp_path / "out", "fp32")
    (left / "half.onnx").write_bytes(b"\0")
    fresh = private_dir(tmp_path / "out", "fp32")
    assert fresh != left and fresh.is_dir() and not left.exists() and not any(fresh.iterdir())


# ---------------------------------------------------------------- interrupted

def _interrupted_export(ckpt: Path, out: Path, sig: int, extra: tuple[str, ...] = ()) -> int:
    """Exit status of an export sent ``sig`` as soon as its private staging directory exists (the
    bundle is being written, nothing is committed). On a loaded machine the export can still finish
    first; such an attempt proves nothing and is repeated, up to three times."""
    cmd = [str(REPO / ".venv/bin/rlrc-export"), "onnx", "--checkpoint", str(ckpt), "--out", str(out),
           "--exporter", "torchscript", *extra]
    for _ in range(3):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(f".{out.name}.tmp-") for p in out.parent.iterdir()):
            assert proc.poll() is None, f"the export ended before it could be interrupted: {proc.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
        if rc != 0:
            return rc
    return rc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_overwrite_keeps_the_old_bundle_and_a_rerun_cleans_up(tiny_ckpt, tmp_path, sig):
    out = tmp_path / "bundle"
    export_onnx(tiny_ckpt, out, FAST)
    before = read_manifest(out).files
    assert _interrupted_export(tiny_ckpt, out, sig, ("--overwrite",)) != 0
    assert read_manifest(out).files == before  # the old bundle is whole and verifies
    if sig != signal.SIGKILL:
        assert leftovers(tmp_path, "bundle") == []  # cleaned on the way out
    export_onnx(tiny_ckpt, out, FAST, overwrite=True)  # a rerun removes what a SIGKILL left
    read_manifest(out)
    assert leftovers(tmp_path, "bundle") == []


# ---------------------------------------------------------------- stale stages

def test_pipeline_stages_are_keyed_by_their_inputs(ckpt_factory, tmp_path):
    a, b = ckpt_factory("tiny", seed=0), ckpt_factory("tiny", seed=1)
    work = tmp_path / "stages"

    def prune(ckpt: Path, method: str = "magnitude") -> Path:
        args = PipelineArgs(checkpoint=str(ckpt), out=str(tmp_path / "out"), prune_ratio=0.5, prune_method=method,
                            work=str(work))
        return Path(compress_checkpoint(args))

    pa = prune(a)
    stamp = (pa / "prune_report.json").stat().st_mtime_ns
    assert prune(a) == pa and (pa / "prune_report.json").stat().st_mtime_ns == stamp  # same inputs: reused
    pb = prune(b)
    assert pb != pa  # another checkpoint never gets the first one's pruned weights
    wa, wb = (load_file(str(next(p.glob("*.safetensors")))) for p in (pa, pb))
    assert any(not np.array_equal(wa[k], wb[k]) for k in wa)
    assert prune(a, "random") not in (pa, pb)
    assert json.loads((pb / "prune_report.json").read_text())["config"]["method"] == "magnitude"


# ---------------------------------------------------------------- refusals

def test_a_nan_weight_is_refused_at_export_and_nothing_is_written(ckpt_copy, tmp_path):
    ckpt = ckpt_copy()
    name = poison(ckpt, "lm_head")
    out = tmp_path / "bundle"
    with pytest.raises(CheckpointError, match=rf"weight .*{name.split('.')[-2]}.* NaN/Inf"):
        export_onnx(ckpt, out, FAST)
    assert not out.exists() and leftovers(tmp_path, "bundle") == []


def test_nan_in_a_verified_bundle_is_detected_by_onnxruntime(tiny_ckpt, tmp_path):
    """A bundle whose host embeddings went NaN (and whose manifest was re-hashed): the backend refuses
    the step instead of decoding the argmax of NaN logits into a full-scale action."""
    out = export_onnx(tiny_ckpt, tmp_path / "bundle", FAST)
    table = np.load(out / "embed_tokens.npy")
    table[:] = np.nan
    np.save(out / "embed_tokens.npy", table)
    write_manifest(out, read_manifest(out, verify=False))
    with r.load_policy(out) as policy:
        with pytest.raises(NonFiniteOutputError, match="prefill.onnx logits: .* NaN or Inf"):
            policy.infer(np.zeros((64, 64, 3), np.uint8), "pick up the cup")


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_target_tensorrt_without_tensorrt_fails_before_any_work(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "trt"
    start = time.perf_counter()
    assert export_main(["pipeline", "--checkpoint", str(tiny_ckpt), "--out", str(out), "--quantize", "fp16",
                        "--target", "tensorrt"]) == 2
    assert time.perf_counter() - start < 5 and not out.exists()
    assert "TensorRT is not installed" in capsys.readouterr().err
