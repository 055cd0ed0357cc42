"""Actions per second of a chunked (K = 8, parallel decoding) bundle against the autoregressive bundle
of the same size, on the `mid` preset (OpenVLA proportions, random weights), in one interleaved run.

    .venv/bin/python benchmarks/chunk_speed.py [--work artifacts/chunk_speed] [--precision int8] [--iters 10]

Builds both checkpoints (`rlrc-export make-tiny --preset mid [--action-chunk 8]`), exports both the
same way (`rlrc-export pipeline --quantize PRECISION --head action`), then runs
`rlrc-bench --bundle CHUNKED --compare AUTOREGRESSIVE` and writes
benchmarks/results/bench_chunk8_vs_autoregressive_mid.{json,md,png}. Finished steps are reused.
Speed does not depend on what the weights learned, so random weights measure it honestly.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAME = "bench_chunk8_vs_autoregressive_mid"
BIN = Path(sys.executable).parent


def run(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def build(work: Path, k: int, precision: str) -> Path:
    ckpt, bundle = work / f"mid_k{k}", work / f"mid_k{k}_{precision}"
    if not (ckpt / "config.json").is_file():
        run(str(BIN / "rlrc-export"), "make-tiny", "--preset", "mid", "--action-chunk", str(k), "--out", str(ckpt),
            "--overwrite")
    if not (bundle / "manifest.json").is_file():
        run(str(BIN / "rlrc-export"), "pipeline", "--checkpoint", str(ckpt), "--out", str(bundle), "--quantize",
            precision, "--head", "action", "--exporter", "torchscript", "--overwrite")
    return bundle


def markdown(report: dict) -> str:
    chunked, ar = report["runs"]
    ratios = report["ratios"]
    la = report["load_average"]
    rows = [
        f"# Action chunks: K = 8 parallel decoding vs autoregressive (`mid` preset, {chunked['weights']['precision']})",
        "",
        f"Command: `{report['command'] or 'python benchmarks/chunk_speed.py'}`; {report['date']}; "
        f"{report['machine']['cpu']} ({report['machine']['cores']} cores); load average {la['before'][0]:.2f} -> "
        f"{la['after'][0]:.2f}. Ratios come from one interleaved run; absolute times move with the load.",
        "",
        "| bundle | actions per inference | ms per inference (p50) | actions/s | weights MiB |",
        "|---|---|---|---|---|",
    ]
    for run_ in (chunked, ar):
        rows.append(f"| {Path(run_['path']).name} | {run_['actions_per_inference']} | {run_['ms_per_inference_p50']:.1f} "
                    f"| {run_['actions_per_s']:.2f} | {run_['weights']['total_bytes'] / 2**20:.1f} |")
    rows += ["", f"Chunked / autoregressive actions per second: **{ratios['actions_per_s_ratio']:.2f}x** "
             f"(target >= 8x); weights ratio {ratios['weight_bytes_ratio']:.3f}."]
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="artifacts/chunk_speed", help="checkpoints and bundles (reused when present)")
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8", "int4"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default=str(RESULTS / NAME), help="results path without extension")
    args = ap.parse_args()
    work = (ROOT / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    chunked, ar = build(work, 8, args.precision), build(work, 1, args.precision)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run(str(BIN / "rlrc-bench"), "--bundle", str(chunked), "--compare", str(ar), "--iters", str(args.iters),
        "--warmup", "2", "--measure-bandwidth", "--json", f"{out}.json", "--plot", f"{out}.png")
    report = json.loads(Path(f"{out}.json").read_text())
    report["command"] = " ".join(["python", "benchmarks/chunk_speed.py", *sys.argv[1:]])
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
