"""``rlrc-sim``: the built-in tabletop benchmark's command line.

    rlrc-sim demos --episodes 100 --out demos.hdf5 [--families pick,push] [--split id] [--workers 2]
    rlrc-sim norm-stats --data demos.hdf5 [--key NAME] --out stats.json
    rlrc-sim train --data demos.hdf5 --out run/ [rlrc-train options] [recipe options]
    rlrc-sim list

``rlrc-sim train`` is ``rlrc-train`` with the benchmark's co-training recipe (sim/recipes/tabletop.py).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlrc_runtime.cli_args import Subcommand, combined_config, run_subcommands, split_config


@dataclass(frozen=True)
class DemosArgs:
    out: str = field(metadata={"help": "output .hdf5 (LIBERO/robomimic layout); a .json sidecar records the config"})
    episodes: int = field(metadata={"help": "number of successful demos to write"})
    suite: str = field(default="tabletop", metadata={"help": "benchmark suite (only 'tabletop')"})
    families: str = field(default="pick,push,place,stack", metadata={"help": "comma-separated families, round-robin"})
    split: str = field(default="id", metadata={"help": "split the demos come from (`rlrc-sim list`)"})
    seed: int = field(default=0, metadata={"help": "attempt i uses reset seed SEED + i"})
    image_size: int = field(default=128, metadata={"help": "square frame side, pixels"})
    workers: int = field(default=1, metadata={"help": "rollout processes"})
    max_attempts: int | None = field(default=None, metadata={"help": "give up after this many rollouts "
                                                                     "(default 2N+20)"})
    compression: str = field(default="lzf", metadata={"help": "image compression",
                                                      "choices": ["lzf", "gzip", "none"]})
    dataset_name: str = field(default="rlrc_sim_tabletop", metadata={"help": "norm_stats key stored in the file"})
    action_noise: float = field(default=0.0, metadata={"help": "DART: noise on executed actions as a fraction of the "
                                                               "step limits; labels stay clean"})
    drop_prob: float = field(default=0.0, metadata={"help": "share of pick/place/stack episodes whose executed gripper "
                                                            "is forced open after the grasp (labels stay the expert's, "
                                                            "which grasps again)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


@dataclass(frozen=True)
class NormStatsArgs:
    data: str = field(metadata={"help": "demo .hdf5 (ours or LIBERO)"})
    out: str = field(metadata={"help": "output JSON"})
    key: str | None = field(default=None, metadata={"help": "dataset key (default: the file's dataset_name)"})


@dataclass(frozen=True)
class ListArgs:
    pass


def cmd_demos(args: DemosArgs) -> str:
    from sim.data import DemoConfig, write_demos

    config = DemoConfig(
        suite=args.suite, episodes=args.episodes, families=tuple(f for f in args.families.split(",") if f),
        split=args.split, seed=args.seed, image_size=args.image_size, workers=args.workers,
        max_attempts=args.max_attempts, compression=None if args.compression == "none" else args.compression,
        dataset_name=args.dataset_name, action_noise=args.action_noise, drop_prob=args.drop_prob,
    )
    out = Path(args.out)
    summary = write_demos(config, out, progress=args.progress)
    # The resolved config and the outcome travel next to the data.
    out.with_name(out.name + ".json").write_text(json.dumps({"config": asdict(config), "summary": asdict(summary)},
                                                            indent=2))
    return (f"wrote {summary.written} demos ({summary.total_steps} steps) to {out}; discarded {summary.discarded} "
            f"failed expert rollouts; per family: {summary.per_family}")


def cmd_norm_stats(args: NormStatsArgs) -> str:
    from export.demos import compute_norm_stats, save_norm_stats

    stats = compute_norm_stats(args.data, args.key)
    save_norm_stats(stats, args.out)
    key = next(iter(stats))
    return (f"norm_stats[{key!r}]: {stats[key]['num_trajectories']} trajectories, "
            f"{stats[key]['num_transitions']} transitions -> {args.out}")


def cmd_list(_: ListArgs) -> str:
    from sim.tasks import FAMILIES, SPLITS, family_info

    lines = ["suite: tabletop", "families:"]
    for name in FAMILIES:
        info = family_info(name)
        lines.append(f"  {name} (max {info.max_steps} steps, {len(info.id_combos)} id / "
                     f"{len(info.heldout_combos)} held-out combinations)")
        lines += [f"      id   : {t}" for t in info.id_templates]
        lines += [f"      ood  : {t}" for t in info.ood_templates]
    lines.append("splits:")
    lines += [f"  {split.name:15s} {split.description}" for split in SPLITS.values()]
    return "\n".join(lines)


def _train_command() -> Subcommand:
    from export.train.loop import outcome
    from export.train.sft import TrainConfig, train
    from sim.recipes.tabletop import TabletopRecipe, TabletopRecipeConfig

    def go(args: object) -> str:
        return outcome(train(split_config(args, TrainConfig), TabletopRecipe(split_config(args, TabletopRecipeConfig))))

    return Subcommand(combined_config("SimTrainArgs", TrainConfig, TabletopRecipeConfig), go,
                      "rlrc-train with the benchmark's co-training recipe (grounding questions, counterfactual "
                      "pairs, role attention)")


def main(argv: Sequence[str] | None = None) -> int:
    commands = {
        "demos": Subcommand(DemosArgs, cmd_demos, "roll out scripted experts and write successful episodes to HDF5"),
        "norm-stats": Subcommand(NormStatsArgs, cmd_norm_stats, "OpenVLA-style norm_stats of a demo file"),
        "list": Subcommand(ListArgs, cmd_list, "families, splits, instruction templates"),
        "train": _train_command(),
    }
    return run_subcommands("rlrc-sim", __doc__, commands, None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
