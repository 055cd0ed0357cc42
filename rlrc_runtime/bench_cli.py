"""``rlrc-bench``: latency / memory / roofline of a bundle; ``--compare B2`` for interleaved ratios.

``rlrc-bench --project DEVICE`` (agx-orin, orin-nx, orin-nano, thor, all) instead prints the projected
per-action latency of the compressed OpenVLA-7B bundles of a size report on that Jetson: a lower
bound from bytes and FLOPs per stage, labelled as a projection.

Console script: ``rlrc-bench = rlrc_runtime.bench_cli:main`` (also ``python -m rlrc_runtime.bench_cli``).
"""
from __future__ import annotations

import argparse
import logging
import sys

from rlrc_runtime.bench import BenchConfig, format_table, run_bench, write_json, write_plot
from rlrc_runtime.cli_args import add_arguments, from_namespace
from rlrc_runtime.errors import RLRCError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlrc-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser, BenchConfig)
    return parser


def project_main(argv: list[str]) -> int:
    import json

    from rlrc_runtime.projection import ProjectConfig, format_projection, run_projection

    parser = argparse.ArgumentParser(prog="rlrc-bench --project", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, ProjectConfig)
    try:
        cfg = from_namespace(ProjectConfig, parser.parse_args(argv))
        result = run_projection(cfg)
    except RLRCError as exc:
        print(f"rlrc-bench: error: {exc}", file=sys.stderr)
        return 2
    print(format_projection(result))
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {cfg.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--project" or a.startswith("--project=") for a in argv):
        return project_main(argv)
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = from_namespace(BenchConfig, ns)
        report = run_bench(cfg)
    except RLRCError as exc:
        print(f"rlrc-bench: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if cfg.json:
        write_json(report, cfg.json)
        print(f"wrote {cfg.json}")
    if cfg.plot:
        if write_plot(report, cfg.plot):
            print(f"wrote {cfg.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
