"""``rlrc-bench``: latency / memory / roofline of a bundle; ``--compare B2`` for interleaved ratios.

``rlrc-bench --project DEVICE`` (agx-orin, orin-nx, orin-nano, thor, all) instead prints the projected
per-action latency of the compressed OpenVLA-7B bundles of a size report on that Jetson: a lower
bound from bytes and FLOPs per stage, labelled as a projection.

Console script: ``rlrc-bench = rlrc_runtime.bench_cli:main`` (also ``python -m rlrc_runtime.bench_cli``).
"""
from __future__ import annotations

import json
import logging
import sys

from rlrc_runtime.bench import BenchConfig, format_table, run_bench, write_json, write_plot
from rlrc_runtime.cli_args import run_command


def bench(cfg: BenchConfig) -> str:
    report = run_bench(cfg)
    lines = [format_table(report)]
    if cfg.json:
        write_json(report, cfg.json)
        lines.append(f"wrote {cfg.json}")
    if cfg.plot and write_plot(report, cfg.plot):
        lines.append(f"wrote {cfg.plot}")
    return "\n".join(lines)


def project(cfg: object) -> str:
    from rlrc_runtime.projection import format_projection, run_projection

    result = run_projection(cfg)
    lines = [format_projection(result)]
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(result, f, indent=2)
        lines.append(f"wrote {cfg.json}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--project" or a.startswith("--project=") for a in argv):
        from rlrc_runtime.projection import ProjectConfig

        return run_command("rlrc-bench --project", __doc__, ProjectConfig, project, argv, log_level=logging.WARNING)
    return run_command("rlrc-bench", __doc__, BenchConfig, bench, argv, log_level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
