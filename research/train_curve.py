"""Keep a training run's logged metrics as a small results file, and compare it with others.

    python benchmarks/train_curve.py --run artifacts/attempt13/run --label "attempt 13: ..." \
        --command "BIND_STEPS=1000 SPLITS=id bash benchmarks/base_policy.sh artifacts/attempt13" \
        --machine "2-core AMD EPYC, AVX-512" --out benchmarks/results/train_base_run13_curve.json
    python benchmarks/train_curve.py --compare benchmarks/results/train_base_run9_curve.json \
        benchmarks/results/train_base_run13_curve.json [--every 1000]

The first form reads RUN/metrics.jsonl (one JSON object per logged step, written by rlrc-train) and
writes the schema `rlrc-train-curve/1`: run, command, date, machine and the rows unchanged. Run
directories live in the ignored artifacts/ folder; the curve is what stays in git. The second form
prints one line per compared step: the step and each curve's action CE (and accuracy), so two recipes
can be read side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlrc_runtime.errors import ConfigError  # noqa: E402

SCHEMA = "rlrc-train-curve/1"


def read_metrics(run: Path) -> list[dict]:
    """The rows of RUN/metrics.jsonl, in order; a clear error when the run has none."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: --run must be an rlrc-train --out directory that has logged at "
                          "least one step (see --log-every)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n} is not JSON ({e.msg}); the run was cut off mid-write? Delete that line "
                              "and rerun") from None
        if "step" not in row:
            raise ConfigError(f"{path}:{n} has no 'step': not an rlrc-train metrics file")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path} is empty: the run has not logged a step yet")
    return rows


def make_curve(run: Path, label: str, command: str, machine: str) -> dict:
    return {"schema": SCHEMA, "run": f"{run} ({label})" if label else str(run), "command": command,
            "date": time.strftime("%Y-%m-%d"), "machine": machine, "rows": read_metrics(run)}


def load_curve(path: Path) -> dict:
    curve = json.loads(path.read_text())
    if curve.get("schema") != SCHEMA:
        raise ConfigError(f"{path}: schema {curve.get('schema')!r}, expected {SCHEMA!r} (write it with --run)")
    return curve


def compare(curves: list[dict], every: int) -> list[str]:
    """One line per step that every curve logged and that is a multiple of `every`."""
    by_step = [{r["step"]: r for r in c["rows"]} for c in curves]
    steps = sorted(set.intersection(*(set(b) for b in by_step)))
    lines = ["step  " + "  ".join(f"ce/acc[{i}]" for i in range(len(curves)))]
    for step in steps:
        if step % every:
            continue
        cells = [f"{b[step]['losses/action_ce']:.3f}/{b[step].get('metrics/action_accuracy', float('nan')):.3f}"
                 for b in by_step]
        lines.append(f"{step:5d} " + "  ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="rlrc-train --out directory to export")
    parser.add_argument("--label", default="", help="what the run is (kept beside the path)")
    parser.add_argument("--command", default="", help="the command that trained it")
    parser.add_argument("--machine", default="", help="the machine it trained on")
    parser.add_argument("--out", type=Path, help="curve JSON to write")
    parser.add_argument("--compare", type=Path, nargs="+", help="curve JSONs to print side by side")
    parser.add_argument("--every", type=int, default=500, help="with --compare: print every N steps")
    args = parser.parse_args(argv)
    try:
        if args.compare:
            if args.every < 1:
                raise ConfigError(f"--every={args.every} must be >= 1")
            for i, path in enumerate(args.compare):
                print(f"[{i}] {path}")
            print("\n".join(compare([load_curve(p) for p in args.compare], args.every)))
            return 0
        if not (args.run and args.out):
            raise ConfigError("give --run RUN --out FILE to export a curve, or --compare FILE... to read curves")
        curve = make_curve(args.run, args.label, args.command, args.machine)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(curve, indent=1) + "\n")
        print(f"wrote {len(curve['rows'])} rows (steps {curve['rows'][0]['step']}..{curve['rows'][-1]['step']}) "
              f"to {args.out}")
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
