"""Bundle writing: weights stored once for prefill + decode, aligned offsets, the rlrc-export subcommands."""
from __future__ import annotations


import onnx
import pytest

from export.cli import main as export_main
from export.onnx_export import OnnxExportConfig, export_onnx
from rlrc_runtime.manifest import read_manifest


def test_llm_weights_are_stored_once_and_page_aligned(tiny_bundle):
    m = read_manifest(tiny_bundle)
    data = (tiny_bundle / "llm.onnx.data").stat().st_size
    pre, dec = m.graphs["prefill"].weight_bytes, m.graphs["decode"].weight_bytes
    assert data < pre + dec  # shared, not duplicated
    assert data <= max(pre, dec) + 4096 * 64  # one copy plus alignment padding
    for name in ("prefill", "decode"):
        model = onnx.load(str(tiny_bundle / f"{name}.onnx"), load_external_data=False)
        ext = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert ext and all({e.key: e.value for e in t.external_data}["location"] == "llm.onnx.data" for t in ext)
        assert all(int({e.key: e.value for e in t.external_data}["offset"]) % 4096 == 0 for t in ext)
    assert m.graphs["prefill"].data_files == ("llm.onnx.data",)


def test_overwrite_is_explicit(tiny_ckpt, tiny_bundle):
    from rlrc_runtime.errors import CheckpointError

    with pytest.raises(CheckpointError, match="exists and is not empty.*--overwrite"):
        export_onnx(tiny_ckpt, tiny_bundle, OnnxExportConfig(exporter="torchscript", check=False))


def test_cli_onnx_quantize_pipeline(tiny_ckpt, tmp_path, capsys):
    b = tmp_path / "cli"
    assert export_main(["onnx", "--checkpoint", str(tiny_ckpt), "--out", str(b), "--exporter", "torchscript",
                        "--no-check", "--head", "action"]) == 0
    m = read_manifest(b)
    assert m.llm.head == "action" and m.stages[0]["config"]["exporter"] == "torchscript"
    assert export_main(["quantize", "--bundle", str(b), "--out", str(tmp_path / "q"), "--precision", "int4",
                        "--block-size", "16"]) == 0
    q = read_manifest(tmp_path / "q")
    assert q.precision == "int4" and q.stages[1]["config"]["block_size"] == 16
    assert export_main(["pipeline", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "p"), "--quantize", "int8",
                        "--exporter", "torchscript"]) == 0
    p = read_manifest(tmp_path / "p")
    assert p.precision == "int8" and [s["stage"] for s in p.stages] == ["onnx", "quantize"]
    assert not any(x.name.startswith(".p") for x in tmp_path.iterdir())  # the staging bundle is gone
    capsys.readouterr()
    assert export_main(["pipeline", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "t"), "--quantize", "int4",
                        "--target", "tensorrt"]) == 2
    assert "--quantize fp16" in capsys.readouterr().err
    assert export_main(["quantize", "--bundle", str(tmp_path / "q"), "--out", str(tmp_path / "qq"), "--precision", "int8"]) == 2
    assert "starts from an fp32 bundle" in capsys.readouterr().err
    assert export_main(["engine", "--bundle", str(b)]) == 2  # no TensorRT here (or no GPU): a clear error, exit 2
    err = capsys.readouterr().err
    assert "TensorRT" in err or "tensorrt" in err or "CUDA" in err


def test_pipeline_prunes_before_export(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "pruned_bundle"
    assert export_main(["pipeline", "--checkpoint", str(tiny_ckpt), "--out", str(out), "--prune-ratio", "0.5",
                        "--prune-method", "magnitude", "--exporter", "torchscript"]) == 0
    m = read_manifest(out)
    cfg = m.vla_config().llm
    # tiny: 4 layers, first and last kept whole; the middle two lose half their KV groups.
    assert cfg.num_key_value_heads[0] == 2 and cfg.num_key_value_heads[-1] == 2
    assert cfg.num_key_value_heads[1] == 1 and cfg.intermediate_size[1] < cfg.intermediate_size[0]
    assert len(list((tmp_path / "pruned_bundle.stages").glob("pruned_0.5_*/prune_report.json"))) == 1
    from rlrc_runtime.policy import load_policy
    import numpy as np

    with load_policy(out) as policy:
        action = policy.predict_action(np.zeros((224, 224, 3), np.uint8), "pick up the red block")
    assert action.shape == (7,) and np.isfinite(action).all()
    capsys.readouterr()
    assert export_main(["pipeline", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "x"), "--recover", "sft"]) == 2
    assert "--data demos.hdf5" in capsys.readouterr().err
    assert export_main(["pipeline", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "x"), "--recover", "rl,sft",
                        "--data", "d.hdf5"]) == 2
    assert "SFT comes before RL" in capsys.readouterr().err
