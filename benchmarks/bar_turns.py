"""Does a bar's pick succeed less often the further the hand must turn? Read pick outcome files and tell.

    python benchmarks/bar_turns.py benchmarks/results/pick_outcomes_attempt{28,31,32,33}.json \
        [--json benchmarks/results/bar_turns.json]

For every bar episode of each file (written by `benchmarks/stack_outcomes.py --family pick`), the turn the
scripted expert makes before it grasps is redrawn from the episode's seed: the rotation from the hand's yaw at
reset (0) to the nearest grasp yaw, |turn| in [0, 90] degrees (`sim.grounding.orientation_answer`). Prints the
success share per |turn| bin over all files, and, per episode seed, in how many of the files it succeeded: a seed
that fails in every run is hard for these policies, one that succeeds in some runs and not others is spread.
"""
from __future__ import annotations

import argparse
import json
import datetime
import math
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlrc_runtime.errors import ConfigError  # noqa: E402
from sim.grounding import orientation_answer, redraw_task  # noqa: E402

BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 75.0), (75.0, 90.0))
"""|turn| bins in degrees (the last one closed); the tie between turning either way is at 90."""


def bar_turn_deg(split: str, seed: int) -> float:
    """|turn| in degrees from the hand's reset yaw (0) to the nearest grasp yaw of the pick episode's bar."""
    bars = [p for p in redraw_task("pick", split, seed).placements if p.kind == "bar"]
    if not bars:
        raise ConfigError(f"pick episode seed {seed} on {split!r} has no bar; was the file written by another "
                          "version of the task code? Rewrite it with benchmarks/stack_outcomes.py")
    return abs(float(orientation_answer("bar", bars[0].yaw, 0.0)[2])) * 90.0


def summarise(files: list[Path]) -> dict:
    """Per-bin successes over all files' bar episodes, and per seed the number of files it succeeded in."""
    episodes = []
    for path in files:
        data = json.loads(path.read_text())
        if data.get("family") != "pick" or "episodes" not in data:
            raise ConfigError(f"{path}: not a pick outcome file (write one with `benchmarks/stack_outcomes.py "
                              "--family pick --json F`)")
        for e in data["episodes"]:
            if e["kind"] == "bar":
                episodes.append((str(path), int(e["seed"]), bar_turn_deg(data["split"], int(e["seed"])),
                                 bool(e["success"])))
    bins = []
    for lo, hi in BINS:
        inside = [s for _, _, t, s in episodes if lo <= t < hi or (hi == BINS[-1][1] and t == hi)]
        bins.append({"turn_deg": [lo, hi], "episodes": len(inside), "successes": sum(inside)})
    seeds: dict[int, dict] = {}
    for _, seed, turn, success in episodes:
        row = seeds.setdefault(seed, {"seed": seed, "turn_deg": round(turn, 1), "runs": 0, "succeeded": 0})
        row["runs"] += 1
        row["succeeded"] += int(success)
    return {"files": [str(p) for p in files], "bins": bins, "seeds": sorted(seeds.values(), key=lambda r: r["seed"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="pick outcome JSONs (benchmarks/stack_outcomes.py)")
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args(argv)
    try:
        out = summarise(args.files)
    except (ConfigError, OSError, json.JSONDecodeError) as exc:
        print(f"bar_turns: {exc}", file=sys.stderr)
        return 2
    for b in out["bins"]:
        share = b["successes"] / b["episodes"] if b["episodes"] else math.nan
        print(f"|turn| {b['turn_deg'][0]:>4.0f}-{b['turn_deg'][1]:<4.0f} deg: {b['successes']}/{b['episodes']} ({share:.2f})")
    runs = max(r["runs"] for r in out["seeds"])
    for k in range(runs + 1):
        turns = [r["turn_deg"] for r in out["seeds"] if r["succeeded"] == k and r["runs"] == runs]
        print(f"bars that succeeded in {k} of {runs} runs: {len(turns)} (|turn| {sorted(round(t) for t in turns)})")
    if args.json:
        out.update(command="python benchmarks/bar_turns.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   machine={"platform": platform.platform(), "cpus": os.cpu_count()},
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
