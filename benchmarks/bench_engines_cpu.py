"""CPU targets of issue 4 on the `mid` preset: interleaved ratios, token agreement, sizes.

Usage (after building the bundles, see the command block written into the results file):

    .venv/bin/python benchmarks/bench_engines_cpu.py --root /tmp/mid --iters 6 --torch-iters 4

Every speed-up is a ratio of medians from one process with both policies interleaved
(rlrc_runtime.bench.run_bench --compare); absolute times on this shared 2-core machine are not
quoted as results. Pruned comparisons need the pruning issue and are not run here.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path

import numpy as np

import rlrc_runtime as r
from rlrc_runtime.bench import BenchConfig, run_bench

OUT = Path(__file__).resolve().parent / "results"
TEXTS = ["pick up the red block", "open the top drawer", "push the blue cup to the left", "stack the green block on the red one"]


def agreement(ref_path: Path, other_path: Path, n: int) -> dict:
    """Token agreement of ``other`` with ``ref`` over n varied frames/instructions."""
    rng = np.random.default_rng(0)
    a, b = r.load_policy(ref_path), r.load_policy(other_path)
    same_tok = same_seq = 0
    for i in range(n):
        img = rng.integers(0, 256, (int(rng.integers(64, 480)), int(rng.integers(64, 640)), 3), dtype=np.uint8)
        x, y = a.infer(img, TEXTS[i % 4]).action_tokens, b.infer(img, TEXTS[i % 4]).action_tokens
        same_tok += int((x == y).sum())
        same_seq += x.tolist() == y.tolist()
    return {"cases": n, "tokens_equal": same_tok, "tokens_total": 7 * n, "sequences_equal": same_seq}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/mid")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--torch-iters", type=int, default=4)
    ap.add_argument("--agree", type=int, default=10)
    args = ap.parse_args()
    root = Path(args.root)
    pairs = [
        ("ort_fp32_vs_torch_fp32", "fp32", "ckpt", args.torch_iters),
        ("ort_int8_vs_torch_fp32", "int8", "ckpt", args.torch_iters),
        ("ort_int4_vs_torch_fp32", "int4", "ckpt", args.torch_iters),
        ("ort_int8_vs_ort_fp32", "int8", "fp32", args.iters),
        ("ort_int4_vs_ort_fp32", "int4", "fp32", args.iters),
        ("host_embeddings_vs_graph_embeddings", "fp32", "fp32_graphemb", args.iters),
        ("action_head_vs_full_head", "fp32_action", "fp32", args.iters),
    ]
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
               "cores": os.cpu_count(), "root": str(root), "comparisons": {}, "agreement": {}}
    for name, a, b, iters in pairs:
        if not (root / a).exists() or not (root / b).exists():
            continue
        rep = run_bench(BenchConfig(bundle=str(root / a), compare=str(root / b), iters=iters, warmup=1,
                                    measure_bandwidth=True, progress=False))
        (OUT / f"bench_mid_{name}.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
        ra = rep["ratios"]
        results["comparisons"][name] = {
            "bundle": a, "compare": b, "iters": iters,
            "speedup_p50_end_to_end": ra["speedup_p50_end_to_end"],
            "speedup_p50_llm": ra["speedup_p50_by_stage"].get("llm"),
            "speedup_p50_vision": ra["speedup_p50_by_stage"].get("vision"),
            "weight_bytes_ratio": ra["weight_bytes_ratio"], "host_memory_ratio": ra["host_memory_ratio"],
            "weights_mib": {x["label"]: round(x["weights"]["total_bytes"] / 2**20, 1) for x in rep["runs"]},
            "load_average": rep["load_average"],
            "decode_step_achieved_fraction": {x["label"]: x["roofline"].get("decode_step_achieved_fraction")
                                              for x in rep["runs"]},
            "bandwidth": rep["runs"][0]["roofline"]["bandwidth_gbs"],
        }
        print(name, json.dumps(results["comparisons"][name]), flush=True)
    for prec in ("int8", "int4", "fp32_action"):
        if (root / prec).exists():
            results["agreement"][f"{prec}_vs_fp32"] = agreement(root / "fp32", root / prec, args.agree)
            print(prec, results["agreement"][f"{prec}_vs_fp32"], flush=True)
    (OUT / "bench_mid_cpu_summary.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
