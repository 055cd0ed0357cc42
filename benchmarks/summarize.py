"""Regenerate the README's benchmark table from the JSON files in benchmarks/results/.

    python benchmarks/summarize.py            # rewrites the block between the README markers

Only figures that a results file holds are shown, each with its source file; nothing is typed in.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def rows() -> list[str]:
    out = ["| result | figure | source |", "|---|---|---|"]
    summary = RESULTS / "bench_mid_cpu_summary.json"
    if summary.is_file():
        d = json.loads(summary.read_text())
        for name, c in d.get("comparisons", {}).items():
            out.append(f"| `mid` preset, CPU, {name.replace('_', ' ')} | {c['speedup_p50_end_to_end']:.2f}× faster p50 end-to-end, "
                       f"{c['weight_bytes_ratio']:.2f}× smaller weights | `{summary.name}` ({d['date'][:10]}, loaded 2-core CPU) |")
    for path in sorted(RESULTS.glob("eval_*.json")):
        d = json.loads(path.read_text())
        o = d["overall"]
        fams = ", ".join(f"{k} {v['success_rate']:.2f}" for k, v in d["families"].items())
        split = f"`{d['split']}`" + (" (pre-0.4 scenes, with distractors)" if d.get("split_note") else "")
        attempt = re.search(r"attempt\d+", path.stem)
        if attempt:
            who = f"base policy {attempt.group(0).replace('attempt', 'attempt ')}"
            if "diagnostic" in d:  # an experiment on that checkpoint, not its shipped decoding
                who += f" (diagnostic: {d['diagnostic']['decoding']})"
            if "variant" in d:  # another checkpoint of that run (e.g. its weight average)
                who += f" ({d['variant']})"
            tag = path.stem[attempt.end():].removesuffix("_" + d["split"]).strip("_")
            if tag and "variant" not in d and "diagnostic" not in d:  # e.g. a rerun: eval_base_attempt9_repro_id
                who += f" ({tag.replace('_', ' ')})"
        elif path.stem.startswith("eval_base_") and "bundle" not in path.stem:
            who = "base policy (current recipe, `eval_base_id.md`)"
        else:
            who = f"`{Path(d['policy']).parent.name or d['policy']}`"
        out.append(f"| success, {who} on split {split} "
                   f"({d['episodes_per_family']} ep/family) | mean {o['mean_family_success']:.3f} "
                   f"(overall 95 % CI [{o['ci95'][0]:.2f}, {o['ci95'][1]:.2f}]); {fams} | `{path.name}` ({d['date'][:10]}) |")
    table = RESULTS / "rlrc_table.json"
    if table.is_file():
        d = json.loads(table.read_text())
        for r in d["rows"].values():
            out.append(f"| RLRC table: {r['label']} | success id {r['id']['success_rate']:.2f}, ood {r['ood']['success_rate']:.2f}; "
                       f"{r['memory_ratio_vs_base_bf16']:.2f}× less memory, {r['speedup_vs_base']:.2f}× faster | "
                       f"`{table.name}` ({d['date'][:10]}) |")
    parity = RESULTS / "parity_official.json"
    if parity.is_file():
        out.append(f"| token parity with the official OpenVLA code | identical tokens and actions on every case of "
                   f"{len(json.loads(parity.read_text())['runs'])} runs | `parity_official.md` |")
    return out


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md lacks the markers {START} / {END}", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + "\n".join(rows()) + "\n" + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
