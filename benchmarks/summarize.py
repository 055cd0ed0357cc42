"""Regenerate the README's results block from the JSON files in benchmarks/results/.

    python benchmarks/summarize.py            # rewrites the block between the README markers
    python benchmarks/summarize.py --check    # exit 1 when the README's block is out of date

Only figures that a results file holds are shown, each with its source file and date; nothing is
typed in. The RLRC table leads, then the base policy it was run on, the size report at OpenVLA-7B
widths, the engine benchmark and the reference checks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(s: dict[str, Any]) -> str:
    lo, hi = s["ci95"]
    return f"{100 * s['success_rate']:.1f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


def rlrc_table(d: dict[str, Any]) -> list[str]:
    out = [f"**RLRC in miniature** (`rlrc_table.md`, {d['date'][:10]}; success with 95 % Wilson intervals, "
           "memory = base checkpoint in bf16 / stored bytes of what the robot loads, speed-up = p50 of "
           "`predict_action`, all rows timed interleaved in one process; ONNX Runtime rows against the base "
           "exported to ONNX Runtime fp32, and against the base in PyTorch; 1-minute load average "
           f"{d['machine']['load_average_before_latency'][0]:.1f} on {d['machine']['cpus']} CPUs when timed):", "",
           "| row | success id | success ood | less memory | faster | faster than the PyTorch base |",
           "|---|---|---|---|---|---|"]
    for r in d["rows"].values():
        speed = f"{r['speedup_vs_base']:.2f}×" if "speedup_vs_base" in r else "—"
        mem = f"{r['memory_ratio_vs_base_bf16']:.2f}×" if "memory_ratio_vs_base_bf16" in r else "—"
        torch_speed = f"{r['speedup_vs_base_torch']:.2f}×" if "speedup_vs_base_torch" in r else "—"
        out.append(f"| {r['label']} | {_pct(r['id'])} | {_pct(r['ood'])} | {mem} | {speed} | {torch_speed} |")
    met = [f"{name.replace('_', ' ')}: {'met' if t['met'] else '**missed**'}" for name, t in d.get("targets", {}).items()]
    if met:
        out += ["", "Targets: " + "; ".join(met) + "."]
    return out


def rows() -> list[str]:
    out: list[str] = []
    table = _load("rlrc_table.json")
    if table:
        out += rlrc_table(table) + [""]
    out += ["| result | figure | source |", "|---|---|---|"]
    for split in ("id", "ood", "id_clutter"):
        d = _load(f"eval_base_{split}.json")
        if d:
            o = d["overall"]
            fams = ", ".join(f"{k} {v['success_rate']:.2f}" for k, v in d["families"].items())
            out.append(f"| base policy (`bash benchmarks/base_policy.sh`), split `{split}`, "
                       f"{d['episodes_per_family']} episodes per family | {_pct(o)}; {fams} | "
                       f"`eval_base_{split}.json` ({d['date'][:10]}) |")
    for path in sorted(RESULTS.glob("eval_base_chunk*_*.json")):
        d = json.loads(path.read_text())
        chunk = path.stem.split("_")[2]  # chunkK
        mode = d.get("config", {}).get("chunk_mode", "open_loop").replace("_", " ")
        out.append(f"| base policy with {chunk[5:]}-action chunks decoded in parallel (`ACTION_CHUNK={chunk[5:]} bash "
                   f"benchmarks/base_policy.sh`, executed {mode}), split `{d['split']}`, {d['episodes_per_family']} "
                   f"episodes per family | {_pct(d['overall'])} | `{path.name}` ({d['date'][:10]}) |")
    chunk_speed = _load("bench_chunk8_vs_autoregressive_mid.json")
    if chunk_speed:
        r = chunk_speed["ratios"]
        out.append(f"| action chunks of 8 vs one action per pass, `mid` preset INT8 bundles of the same size, "
                   f"interleaved on CPU (`{chunk_speed['command']}`) | {r['actions_per_s_ratio']:.2f}× the actions "
                   f"per second | `bench_chunk8_vs_autoregressive_mid.md` ({chunk_speed['date'][:10]}) |")
    size = _load("size_report_openvla7b.json")
    if size:
        for name, r in size.get("bundles", {}).items():
            if not r.get("pruned") or r.get("head") != "action_head":
                continue
            out.append(f"| OpenVLA-7B widths, {size['config']['prune_ratio']:.0%} pruned, {r['precision']} "
                       f"(vision {r['vision_precision']}, {r['head'].replace('_', ' ')}; pieces measured, decoder "
                       f"scaled by layer count) | {r['total_gb']:.2f} GB vs {size['base']['gb']:.2f} GB bf16: "
                       f"{r['ratio_vs_bf16']:.2f}× smaller (paper: 14.86 → 1.77 GB, 8.40×) | "
                       f"`size_report_openvla7b.md` ({size['date'][:10]}) |")
    bench = _load("bench_mid_cpu_summary.json")
    if bench:
        for name, c in bench.get("comparisons", {}).items():
            out.append(f"| engine benchmark, `mid` preset on CPU, {name.replace('_', ' ')} | "
                       f"{c['speedup_p50_end_to_end']:.2f}× faster p50 end-to-end, {c['weight_bytes_ratio']:.2f}× "
                       f"smaller weights | `bench_mid_cpu_summary.json` ({bench['date'][:10]}) |")
    soak = _load("soak.json")
    if soak:
        t, rss = soak["totals"], soak["rss"]
        out.append(f"| soak: the VLA node {soak['config']['minutes']:.0f} min in the loop with the simulated robot "
                   f"(`python benchmarks/soak.py`) | {t['actions_published']} actions, **{t['unsafe']} unsafe**, "
                   f"RSS slope {rss['slope_mb_per_hour']:+.2f} MB/hour | `soak.md` ({soak['date'][:10]}) |")
    parity = _load("parity_official.json")
    if parity:
        out.append(f"| token parity with the official OpenVLA code | identical tokens and actions in every case of "
                   f"{len(parity['runs'])} runs | `parity_official.md` |")
    return out


def render(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + "\n".join(rows()) + "\n" + END + tail


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md lacks the markers {START} / {END}; add them where the results go", file=sys.stderr)
        return 2
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's results block is out of date: run `python benchmarks/summarize.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
