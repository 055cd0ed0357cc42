"""`rlrc-sim` command line: generate expert demos, compute norm_stats, list the benchmark.

    python -m sim.cli demos --suite tabletop --episodes 100 --out demos.hdf5 [--families pick push]
                            [--split id] [--seed 0] [--image-size 128] [--workers 2]
    python -m sim.cli norm-stats --data demos.hdf5 [--key NAME] --out stats.json
    python -m sim.cli list
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from sim.errors import SimError

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    from sim.data import DEFAULT_DATASET_NAME
    from sim.tasks import FAMILIES, SPLITS

    p = argparse.ArgumentParser(prog="rlrc-sim", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demos", help="roll out scripted experts and write successful episodes to HDF5")
    d.add_argument("--suite", default="tabletop", help="benchmark suite (only 'tabletop')")
    d.add_argument("--episodes", type=int, required=True, help="number of successful demos to write")
    d.add_argument("--out", type=Path, required=True, help="output .hdf5 (LIBERO/robomimic layout)")
    d.add_argument("--families", nargs="+", default=list(FAMILIES), help=f"families, round-robin ({', '.join(FAMILIES)})")
    d.add_argument("--split", default="id", help=f"split ({', '.join(SPLITS)})")
    d.add_argument("--seed", type=int, default=0, help="attempt i uses reset seed SEED + i")
    d.add_argument("--image-size", type=int, default=128, help="square frame side, pixels")
    d.add_argument("--workers", type=int, default=1, help="rollout processes")
    d.add_argument("--max-attempts", type=int, default=None, help="give up after this many rollouts (default 2N+20)")
    d.add_argument("--compression", default="lzf", choices=["lzf", "gzip", "none"], help="image compression")
    d.add_argument("--dataset-name", default=DEFAULT_DATASET_NAME, help="norm_stats key stored in the file")
    d.add_argument("--action-noise", type=float, default=0.0,
                   help="DART: noise on executed actions as a fraction of the step limits; labels stay clean")
    d.add_argument("--drop-prob", type=float, default=0.0,
                   help="share of pick/place/stack episodes whose executed gripper is forced open after the grasp "
                        "(labels stay the expert's, which grasps again): demos of recovering a dropped block")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    n = sub.add_parser("norm-stats", help="OpenVLA-style norm_stats of a demo file (ours or LIBERO)")
    n.add_argument("--data", type=Path, required=True, help="demo .hdf5")
    n.add_argument("--key", default=None, help="dataset key (default: the file's dataset_name)")
    n.add_argument("--out", type=Path, required=True, help="output JSON")

    sub.add_parser("list", help="families, splits, instruction templates")
    return p


def _cmd_demos(args: argparse.Namespace) -> int:
    from sim.data import DemoConfig, write_demos

    config = DemoConfig(
        suite=args.suite, episodes=args.episodes, families=tuple(args.families), split=args.split,
        seed=args.seed, image_size=args.image_size, workers=args.workers, max_attempts=args.max_attempts,
        compression=None if args.compression == "none" else args.compression, dataset_name=args.dataset_name,
        action_noise=args.action_noise, drop_prob=args.drop_prob,
    )
    summary = write_demos(config, args.out, progress=not args.no_progress)
    # The resolved config and the outcome travel next to the data.
    sidecar = args.out.with_name(args.out.name + ".json")
    sidecar.write_text(json.dumps({"config": asdict(config), "summary": asdict(summary)}, indent=2))
    print(f"wrote {summary.written} demos ({summary.total_steps} steps) to {args.out}; "
          f"discarded {summary.discarded} failed expert rollouts; per family: {summary.per_family}")
    return 0


def _cmd_norm_stats(args: argparse.Namespace) -> int:
    from sim.data import compute_norm_stats, save_norm_stats

    stats = compute_norm_stats(args.data, args.key)
    save_norm_stats(stats, args.out)
    key = next(iter(stats))
    print(f"norm_stats[{key!r}]: {stats[key]['num_trajectories']} trajectories, "
          f"{stats[key]['num_transitions']} transitions -> {args.out}")
    return 0


def _cmd_list(_: argparse.Namespace) -> int:
    from sim.tasks import SPLITS, family_info, FAMILIES

    print("suite: tabletop")
    print("families:")
    for name in FAMILIES:
        info = family_info(name)
        print(f"  {name} (max {info.max_steps} steps, {len(info.id_combos)} id / "
              f"{len(info.heldout_combos)} held-out combinations)")
        for t in info.id_templates:
            print(f"      id   : {t}")
        for t in info.ood_templates:
            print(f"      ood  : {t}")
    print("splits:")
    for split in SPLITS.values():
        print(f"  {split.name:15s} {split.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {"demos": _cmd_demos, "norm-stats": _cmd_norm_stats, "list": _cmd_list}
    try:
        return commands[args.command](args)
    except SimError as e:
        # Our errors already say what to do; a traceback would only bury that.
        logger.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
