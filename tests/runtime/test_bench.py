"""rlrc-bench: report schema, interleaved --compare ratios, JSON and PNG outputs (real runs)."""
from __future__ import annotations

import json

import pytest

from export.onnx_export import OnnxExportConfig, export_onnx
from export.quantize_deploy import QuantizeConfig, quantize_bundle
from rlrc_runtime.bench import BenchConfig, compare_ratios, device_bandwidth, run_bench, summarize
from rlrc_runtime.bench_cli import main
from rlrc_runtime.errors import ConfigError


@pytest.fixture(scope="module")
def bundles(tiny_ckpt, tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    fp32 = export_onnx(tiny_ckpt, base / "fp32", OnnxExportConfig(exporter="torchscript", check=False))
    return {"fp32": fp32, "int8": quantize_bundle(fp32, base / "int8", QuantizeConfig(precision="int8"))}


STAGES = {"preprocess", "vision", "prefill", "decode_step", "llm", "postprocess", "end_to_end"}


def test_cli_compare_writes_json_and_png(bundles, tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["--bundle", str(bundles["int8"]), "--compare", str(bundles["fp32"]), "--iters", "4", "--warmup", "1",
               "--json", str(out), "--plot", str(png), "--bandwidth-gbs", "20", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "end-to-end p50 speed-up" in text and "decode_step" in text and "load average" in text
    rep = json.loads(out.read_text())
    assert rep["schema"] == "rlrc-bench/1" and len(rep["runs"]) == 2
    for run in rep["runs"]:
        assert STAGES | {f"decode_{i}" for i in range(1, 7)} <= set(run["stages_ms"])
        e2e = run["stages_ms"]["end_to_end"]
        assert e2e["n"] == 4 and e2e["p50"] <= e2e["p90"] <= e2e["p99"] <= e2e["max"]
        assert run["stages_ms"]["decode_step"]["n"] == 4 * 6
        assert run["actions_per_s"] == pytest.approx(1e3 / e2e["p50"])
        assert run["weights"]["total_bytes"] > 0 and run["weights"]["read_per_action_bytes"] > run["weights"]["llm_bytes"]
        rf = run["roofline"]
        assert rf["bandwidth_gbs"] == 20 and 0 < rf["decode_step_achieved_fraction"] and rf["end_to_end_bound_ms"] > 0
    a, b = rep["runs"]
    assert a["weights"]["precision"] == "int8" and b["weights"]["precision"] == "fp32"
    r = rep["ratios"]
    assert r["speedup_p50_end_to_end"] == pytest.approx(b["stages_ms"]["end_to_end"]["p50"] / a["stages_ms"]["end_to_end"]["p50"])
    assert r["weight_bytes_ratio"] > 1.5  # int8 LLM weights vs fp32
    assert set(r["speedup_p50_by_stage"]) >= STAGES
    assert rep["device"]["nvml"]["available"] is False and rep["device"]["tegrastats"]["available"] is False
    assert rep["machine"]["cores"] >= 1 and len(rep["load_average"]["before"]) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_against_bundle_and_unknown_bandwidth(bundles, tiny_ckpt):
    rep = run_bench(BenchConfig(bundle=str(bundles["fp32"]), compare=str(tiny_ckpt), iters=2, warmup=0, progress=False))
    torch_run = rep["runs"][1]
    assert torch_run["backend"] == "torch" and "prefill" not in torch_run["stages_ms"]
    assert torch_run["weights"]["precision"] == "float32"
    assert rep["runs"][0]["tokens_last"] == torch_run["tokens_last"]  # fp32 bundle = the PyTorch model
    assert rep["ratios"]["same_tokens_last_step"] is True
    rf = rep["runs"][0]["roofline"]
    assert rf["bandwidth_gbs"] is None and "unknown" in rf["bandwidth_source"] and "end_to_end_bound_ms" not in rf


def test_helpers_and_config_errors():
    s = summarize([1, 2, 3, 4, 100])
    assert s["p50"] == 3 and s["max"] == 100 and s["n"] == 5
    assert device_bandwidth("Jetson AGX Orin Developer Kit") == (204.8, "design.md §5 table (agx orin)")
    assert device_bandwidth("NVIDIA H100 80GB HBM3")[0] == 3350.0 and device_bandwidth("AMD EPYC")[0] is None
    with pytest.raises(ConfigError, match="--iters=0"):
        BenchConfig(bundle="x", iters=0)
    assert compare_ratios(
        {"stages_ms": {"end_to_end": {"p50": 2.0}}, "weights": {"total_bytes": 1, "read_per_action_bytes": 1},
         "host_memory": {"load_rss_delta_bytes": None}, "tokens_last": [1], "actions_per_s": 500.0},
        {"stages_ms": {"end_to_end": {"p50": 6.0}}, "weights": {"total_bytes": 4, "read_per_action_bytes": 2},
         "host_memory": {"load_rss_delta_bytes": 10}, "tokens_last": [1], "actions_per_s": 1e3 / 6},
    )["speedup_p50_end_to_end"] == 3.0


def test_a_chunked_bundle_reports_actions_per_inference(bundles, ckpt_factory, tmp_path):
    """A K = 8 parallel-decoding bundle against the autoregressive one of the same widths: one chunk pass
    instead of prefill + decode steps, and actions per second counting all K actions of a pass."""
    chunked = export_onnx(ckpt_factory("tiny", action_chunk=8), tmp_path / "chunk8",
                          OnnxExportConfig(exporter="torchscript", check=False))
    rep = run_bench(BenchConfig(bundle=str(chunked), compare=str(bundles["fp32"]), iters=2, warmup=0, progress=False,
                                bandwidth_gbs=20))
    a, b = rep["runs"]
    assert a["actions_per_inference"] == 8 and b["actions_per_inference"] == 1
    assert "chunk" in a["stages_ms"] and "decode_step" not in a["stages_ms"] and "chunk" not in b["stages_ms"]
    assert len(a["tokens_last"]) == 8 * 7
    assert a["actions_per_s"] == pytest.approx(8e3 / a["stages_ms"]["end_to_end"]["p50"])
    assert rep["ratios"]["actions_per_s_ratio"] == pytest.approx(a["actions_per_s"] / b["actions_per_s"])
    assert a["weights"]["llm_bytes"] == b["weights"]["llm_bytes"]  # the same model size
    assert a["weights"]["read_per_action_bytes"] == pytest.approx(a["weights"]["read_per_inference_bytes"] / 8)
    assert "decode_step_achieved_fraction" not in a["roofline"] and a["roofline"]["end_to_end_bound_ms"] > 0


def test_measure_interleaved_times_each_policy_in_its_own_process(ckpt_factory, tmp_path):
    from rlrc_runtime.bench import measure_interleaved
    from rlrc_runtime.errors import ConfigError

    ckpt = str(ckpt_factory("tiny-128"))
    out = measure_interleaved({"a": (ckpt, "torch"), "b": (ckpt, "torch")}, iters=6, round_size=3)
    for name in ("a", "b"):
        assert out[name]["n"] == 6 and 0 < out[name]["p50"] <= out[name]["max"]
        assert out[name]["peak_rss_bytes"] > 10 * 2**20  # a process that loaded torch and a model
    with pytest.raises(ConfigError, match="'broken'.*could not run"):
        measure_interleaved({"broken": (str(tmp_path / "missing"), "torch")}, iters=2)
