"""Projected latency of a compressed OpenVLA-7B bundle on a Jetson (``rlrc-bench --project DEVICE``).

A projection, not a measurement: from the bytes read and the FLOPs of each stage of one control
step (``rlrc-export size-report``, measured stored bytes at real widths), each stage takes at least
``max(bytes / memory bandwidth, FLOPs / peak compute)``. One action = vision + prefill + 6 decode
steps. Weight-only INT4/INT8 kernels dequantize to FP16 and multiply there, so the compute peak
is the GPU's dense FP16 tensor throughput. Real runtimes reach a fraction of this bound; the
report places it next to NanoLLM's measured 336 ms (OpenVLA-7B INT4, AGX Orin, design.md §5).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlrc_runtime.errors import ConfigError, MissingFileError


@dataclass(frozen=True)
class Device:
    """Peak figures of one module (NVIDIA datasheets; dense = the datasheet's sparse figure / 2)."""

    name: str
    bandwidth_gbs: float
    fp16_dense_tflops: float
    source: str


DEVICES: dict[str, Device] = {
    "agx-orin": Device("Jetson AGX Orin 64GB", 204.8, 42.5,
                       "204.8 GB/s LPDDR5; GPU 170 sparse INT8 TOPS -> 85 dense INT8, 42.5 dense FP16"),
    "orin-nx": Device("Jetson Orin NX 16GB", 102.4, 15.0,
                      "102.4 GB/s; GPU of half AGX Orin's cores at 918 MHz (vs 1.3 GHz): 42.5 x 0.5 x 0.71"),
    "orin-nano": Device("Jetson Orin Nano 8GB", 68.0, 10.2,
                        "68 GB/s; GPU of half AGX Orin's cores at 625 MHz: 42.5 x 0.5 x 0.48"),
    "thor": Device("Jetson AGX Thor (T5000)", 273.0, 258.0,
                   "273 GB/s LPDDR5X; 2070 sparse FP4 TFLOPS -> 1035 dense FP4, ~517 FP8, ~258 FP16"),
}

NANOLLM = {"device": "agx-orin", "ms_per_action": 336.0, "what": "NanoLLM (MLC), OpenVLA-7B INT4, AGX Orin 64GB"}
DEFAULT_REPORT = "benchmarks/results/size_report_openvla7b.json"


@dataclass(frozen=True)
class ProjectConfig:
    """`rlrc-bench --project DEVICE` flags."""

    project: str = field(metadata={"help": f"device to project to: {', '.join(DEVICES)}, or 'all'"})
    """Jetson module."""
    size_report: str = field(default=DEFAULT_REPORT, metadata={"help": "rlrc-export size-report JSON (stage bytes and FLOPs)"})
    """Where the per-stage bytes and FLOPs come from."""
    json: str | None = field(default=None, metadata={"help": "write the projection as JSON here"})
    """JSON output path."""

    def __post_init__(self) -> None:
        if self.project != "all" and self.project not in DEVICES:
            raise ConfigError(f"--project {self.project!r}: choose one of {list(DEVICES)} or 'all'")


def stage_bound_ms(stage: dict[str, Any], device: Device) -> dict[str, Any]:
    """One stage's lower bound and which resource sets it."""
    memory = stage["bytes"] / (device.bandwidth_gbs * 1e9) * 1e3
    compute = stage["flops"] / (device.fp16_dense_tflops * 1e12) * 1e3
    return {"ms": max(memory, compute), "memory_ms": memory, "compute_ms": compute,
            "bound_by": "memory" if memory >= compute else "compute"}


def project(report: dict[str, Any], device: Device) -> dict[str, Any]:
    """Per-bundle, per-stage bounds on ``device`` from a size report's ``stages``."""
    stages = report["stages"]
    steps = int(stages["decode_steps"])
    out = {}
    for name, costs in stages.items():
        if not isinstance(costs, dict) or "decode_step" not in costs:
            continue
        per = {s: stage_bound_ms(costs[s], device) for s in ("vision", "prefill", "decode_step")}
        total = per["vision"]["ms"] + per["prefill"]["ms"] + steps * per["decode_step"]["ms"]
        out[name] = {"stages": per, "ms_per_action": total, "actions_per_s": 1e3 / total}
    return {"device": device.name, "bandwidth_gbs": device.bandwidth_gbs, "fp16_dense_tflops": device.fp16_dense_tflops,
            "source": device.source, "decode_steps": steps, "bundles": out}


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; write it with `rlrc-export size-report --like openvla-7b "
                               "--prune-ratio 0.75 --quantize int4,int8 --out benchmarks/results/size_report_openvla7b`")
    report = json.loads(path.read_text())
    if "stages" not in report:
        raise ConfigError(f"{path} has no 'stages' section; rerun `rlrc-export size-report` with this version")
    return report


def run_projection(cfg: ProjectConfig) -> dict[str, Any]:
    report = load_report(cfg.size_report)
    names = list(DEVICES) if cfg.project == "all" else [cfg.project]
    return {"schema": "rlrc-projection/1", "what": "PROJECTION (lower bound from bytes and FLOPs), not a measurement",
            "size_report": str(cfg.size_report), "size_report_command": report.get("command"),
            "anchor": NANOLLM, "devices": {n: project(report, DEVICES[n]) for n in names}}


def format_projection(result: dict[str, Any]) -> str:
    lines = [f"{result['what']}; stage bytes and FLOPs from {result['size_report']}"]
    for key, dev in result["devices"].items():
        lines.append(f"{dev['device']} ({dev['bandwidth_gbs']:g} GB/s, {dev['fp16_dense_tflops']:g} dense FP16 TFLOPS):")
        for name, b in dev["bundles"].items():
            st = b["stages"]
            lines.append(f"  {name:<16} {b['ms_per_action']:7.1f} ms/action ({b['actions_per_s']:5.1f} Hz)  vision "
                         f"{st['vision']['ms']:.1f} ({st['vision']['bound_by']}), prefill {st['prefill']['ms']:.1f} "
                         f"({st['prefill']['bound_by']}), decode step {st['decode_step']['ms']:.1f} "
                         f"({st['decode_step']['bound_by']}) x {dev['decode_steps']}")
        if key == result["anchor"]["device"]:
            lines.append(f"  measured anchor: {result['anchor']['what']}: {result['anchor']['ms_per_action']:.0f} ms/action")
    return "\n".join(lines)
