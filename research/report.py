"""The JSON report every probe writes with --json: its own fields, then what makes it comparable
with another run (the command, machine, date, load average at start and end, wall time)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Started:
    """When a probe's measured work began (``time.perf_counter``) and the load average then."""

    t0: float = field(default_factory=time.perf_counter)
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "node": platform.node(), "cpus": os.cpu_count()}


def command_line(prog: str, argv: list[str] | None) -> str:
    """How the probe was invoked (``argv`` as given to main, else the process's arguments)."""
    return f"python -m {prog} " + " ".join(sys.argv[1:] if argv is None else argv)


def write_report(path: str | Path, fields: dict[str, Any], started: Started, command: str) -> dict[str, Any]:
    """Write ``fields`` plus command, machine, date, load averages and wall time since ``started``."""
    report = {**fields, "command": command, "machine": machine(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "loadavg_start": list(started.load), "loadavg_end": list(os.getloadavg()),
              "wall_s": round(time.perf_counter() - started.t0, 1)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return report
