"""The JSON report the probe scripts (binding_probe.py, action_binding.py) write with --json."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any


def write_report(path: str | Path, fields: dict[str, Any], t0: float) -> None:
    """Write `fields` plus the machine, the date and the wall time since `t0` (time.perf_counter())."""
    report = {**fields, "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - t0, 1)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1) + "\n")
