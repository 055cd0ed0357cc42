"""Keep a training run's logged metrics as a small results file, and compare it with others.

    python -m research.train_curve export --run artifacts/base_policy/run --label "the recipe" \
        --command "bash benchmarks/base_policy.sh" --machine "2-core AMD EPYC, AVX-512" --out CURVE.json
    python -m research.train_curve compare --curves A.json,B.json [--every 1000]

``export`` reads RUN/metrics.jsonl (one JSON object per logged step, written by rlrc-train) and writes the
schema `rlrc-train-curve/1`: run, command, date, machine and the rows unchanged. Run directories live in
the ignored artifacts/ folder; the curve is what can be kept (docs/experiments/results/ holds those of
the base-policy attempts). ``compare`` prints one line per step every curve logged: the step and each
curve's action CE (and accuracy), so two recipes can be read side by side.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlrc_runtime.cli_args import Subcommand, run_subcommands
from rlrc_runtime.errors import ConfigError, DatasetError

PROG = "research.train_curve"
SCHEMA = "rlrc-train-curve/1"


def read_metrics(run: Path) -> list[dict]:
    """The rows of RUN/metrics.jsonl, in order; a clear error when the run has none."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist: --run must be an rlrc-train --out directory that has logged at "
                          "least one step (see --log-every)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{n} is not JSON ({e.msg}); the run was cut off mid-write? Delete that line "
                              "and rerun") from None
        if "step" not in row:
            raise DatasetError(f"{path}:{n} has no 'step': not an rlrc-train metrics file")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path} is empty: the run has not logged a step yet")
    return rows


def make_curve(run: Path, label: str, command: str, machine: str) -> dict:
    return {"schema": SCHEMA, "run": f"{run} ({label})" if label else str(run), "command": command,
            "date": time.strftime("%Y-%m-%d"), "machine": machine, "rows": read_metrics(run)}


def load_curve(path: Path) -> dict:
    try:
        curve = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read a curve ({exc})") from exc
    if curve.get("schema") != SCHEMA:
        raise DatasetError(f"{path}: schema {curve.get('schema')!r}, expected {SCHEMA!r} (write one with `export`)")
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


@dataclass(frozen=True, kw_only=True)
class ExportArgs:
    run: str = field(metadata={"help": "rlrc-train --out directory to export"})
    out: str = field(metadata={"help": "curve JSON to write"})
    label: str = field(default="", metadata={"help": "what the run is (kept beside the path)"})
    command: str = field(default="", metadata={"help": "the command that trained it"})
    machine: str = field(default="", metadata={"help": "the machine it trained on"})


@dataclass(frozen=True, kw_only=True)
class CompareArgs:
    curves: str = field(metadata={"help": "curve JSONs to print side by side, comma-separated"})
    every: int = field(default=500, metadata={"help": "print every N steps"})

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"--every={self.every} must be >= 1")
        if not self.paths:
            raise ConfigError("--curves is empty; pass one or more curve JSONs, comma-separated")

    @property
    def paths(self) -> list[Path]:
        return [Path(p) for p in self.curves.split(",") if p]


def run_export(args: ExportArgs) -> str:
    curve = make_curve(Path(args.run), args.label, args.command, args.machine)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(curve, indent=1) + "\n")
    return f"wrote {len(curve['rows'])} rows (steps {curve['rows'][0]['step']}..{curve['rows'][-1]['step']}) to {out}"


def run_compare(args: CompareArgs) -> str:
    names = [f"[{i}] {path}" for i, path in enumerate(args.paths)]
    return "\n".join(names + compare([load_curve(p) for p in args.paths], args.every))


def main(argv: list[str] | None = None) -> int:
    commands = {
        "export": Subcommand(ExportArgs, run_export, "a run's metrics.jsonl -> a curve JSON"),
        "compare": Subcommand(CompareArgs, run_compare, "curves side by side: action CE / accuracy per step"),
    }
    return run_subcommands(PROG, __doc__, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
