"""`rlrc-bench`: latency, memory and roofline of a bundle (or checkpoint) on the machine it runs on.

What it measures, per control step (one frame + instruction -> one 7-D action):
preprocess, vision, prefill, each decode step, postprocess (action decoding) and end to end, as
p50/p90/p99/max; actions per second; weight bytes; host memory (resident growth when the policy
loads, and the process peak); device memory and power where the platform exposes them (NVML,
tegrastats on a Jetson), recorded as absent otherwise; and the device, driver and runtime versions.

Speed-ups are only quoted from ``--compare``: both policies are loaded in one process and their
iterations interleaved (A B, B A, A B, ...) so that machine load, thermal state and clock changes
hit both alike; ratios come from the medians of the same run.

Roofline (design.md §5): decoding reads every LLM weight once per token, so a step cannot beat
``weight_bytes / memory_bandwidth``. The bandwidth comes from the design table when the device is
recognised (Jetson Orin/Thor, H100/H200), from ``--bandwidth-gbs``, or from a memcpy measurement
(``--measure-bandwidth``); without one the bound is reported as unknown, never guessed.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from rlrc_runtime.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA = "rlrc-bench/1"
PERCENTILES = (50, 90, 99)

# Peak memory bandwidth in GB/s (design.md §5), matched against the device name, most specific first.
BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    ("orin nano", 68.0), ("orin nx", 102.4), ("agx orin", 204.8), ("orin", 204.8), ("thor", 273.0),
    ("h200", 4800.0), ("h100", 3350.0),
)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run (the `rlrc-bench` flags)."""

    bundle: str = field(metadata={"help": "bundle directory (or a checkpoint directory for the torch reference)"})
    """Policy to measure."""
    backend: str = field(default="auto", metadata={"help": "backend of --bundle: auto, onnxruntime, tensorrt, torch"})
    """Backend of the measured policy."""
    device: str = field(default="cpu", metadata={"help": "device: cpu, cuda[:i], tensorrt[:i]"})
    """Device for both policies."""
    compare: str | None = field(default=None, metadata={"help": "second bundle/checkpoint, run interleaved; ratios = compare / bundle"})
    """Baseline measured in the same process, interleaved."""
    compare_backend: str = field(default="auto", metadata={"help": "backend of --compare"})
    """Backend of the baseline."""
    iters: int = field(default=20, metadata={"help": "measured iterations (per policy)"})
    """Measured control steps per policy."""
    warmup: int = field(default=3, metadata={"help": "unmeasured warm-up iterations (per policy)"})
    """Warm-up control steps per policy."""
    instruction: str = field(default="pick up the red block", metadata={"help": "instruction of every step"})
    """Language instruction."""
    threads: int | None = field(default=None, metadata={"help": "intra-op threads of onnxruntime sessions (default: all cores)"})
    """onnxruntime intra-op threads (torch uses its own default)."""
    bandwidth_gbs: float | None = field(default=None, metadata={"help": "memory bandwidth for the roofline, GB/s (overrides the table)"})
    """Known memory bandwidth of the device."""
    measure_bandwidth: bool = field(default=False, metadata={"help": "measure host memcpy bandwidth for the roofline (CPU runs)"})
    """Measure a host memcpy bandwidth when no table entry fits."""
    json: str | None = field(default=None, metadata={"help": "write the report as JSON here"})
    """JSON report path."""
    plot: str | None = field(default=None, metadata={"help": "write a PNG of per-stage latency here (needs matplotlib)"})
    """PNG path."""
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    """Progress bar on stderr."""

    def __post_init__(self) -> None:
        if self.iters < 1:
            raise ConfigError(f"--iters={self.iters} must be >= 1")
        if self.warmup < 0:
            raise ConfigError(f"--warmup={self.warmup} must be >= 0")
        if self.bandwidth_gbs is not None and self.bandwidth_gbs <= 0:
            raise ConfigError(f"--bandwidth-gbs={self.bandwidth_gbs} must be > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads={self.threads} must be >= 1")


# --------------------------------------------------------------------------- statistics


def summarize(values: Iterable[float]) -> dict[str, float]:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {}
    out = {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}
    out.update(max=float(arr.max()), mean=float(arr.mean()), n=int(arr.size))
    return out


def stage_samples(timings: dict[str, float], steps: dict[str, float]) -> dict[str, list[float]]:
    """One inference's Policy timings + backend step timings -> {stage: [ms, ...]}."""
    out: dict[str, list[float]] = {
        "preprocess": [timings["preprocess"]], "vision": [timings["vision"]], "llm": [timings["llm"]],
        "postprocess": [timings["decode"]], "end_to_end": [timings["total"]],
    }
    if "chunk" in steps:  # parallel decoding: one pass for every token of the chunk
        out["chunk"] = [steps["chunk"]]
    elif steps:
        out["prefill"] = [steps["prefill"]]
        decode = [v for k, v in steps.items() if k.startswith("decode_")]
        out["decode_step"] = decode
        for k, v in steps.items():
            if k.startswith("decode_"):
                out[k] = [v]
    return out


# --------------------------------------------------------------------------- machine facts


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def proc_status_bytes(key: str) -> int | None:
    """VmRSS / VmHWM of this process in bytes (Linux), else None."""
    text = _read("/proc/self/status")
    if text:
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        if m:
            return int(m.group(1)) * 1024
    return None


def nvml_facts() -> dict[str, Any]:
    """GPU name, driver, memory via NVML (nvidia-ml-py), or {'available': False, 'reason': ...}."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "pynvml (nvidia-ml-py) not installed"}
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        name = pynvml.nvmlDeviceGetName(h)
        return {"available": True, "name": name.decode() if isinstance(name, bytes) else name,
                "driver": str(pynvml.nvmlSystemGetDriverVersion()), "memory_used_bytes": int(mem.used),
                "memory_total_bytes": int(mem.total)}
    except Exception as exc:  # NVML raises its own error types (no GPU, no driver)
        return {"available": False, "reason": f"NVML: {exc}"}


class Tegrastats:
    """Samples `tegrastats` (Jetson) in the background: RAM and power rails. Absent elsewhere."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.available = shutil.which("tegrastats") is not None
        self.lines: list[str] = []
        self._proc: subprocess.Popen | None = None
        self.interval_ms = interval_ms

    def __enter__(self) -> "Tegrastats":
        if self.available:
            self._proc = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._reader, daemon=True).start()
        return self

    def _reader(self) -> None:
        stdout = self._proc.stdout if self._proc is not None else None
        for line in stdout or ():
            self.lines.append(line)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def summary(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "reason": "tegrastats not found (not a Jetson)"}
        ram = [int(m.group(1)) for line in self.lines for m in [re.search(r"RAM (\d+)/\d+MB", line)] if m]
        rails: dict[str, list[int]] = {}
        for line in self.lines:
            for name, now in re.findall(r"(\w+) (\d+)mW/\d+mW", line):
                rails.setdefault(name, []).append(int(now))
        return {"available": True, "samples": len(self.lines), "ram_peak_mb": max(ram, default=None),
                "power_mw_mean": {k: float(np.mean(v)) for k, v in rails.items()}}


def machine_facts() -> dict[str, Any]:
    cpu = None
    text = _read("/proc/cpuinfo")
    if text:
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = m.group(1).strip() if m else None
    model = (_read("/proc/device-tree/model") or "").strip("\0\n ") or None
    facts: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cores": os.cpu_count(), "jetson_model": model,
        "memory_total_bytes": _meminfo_total(),
    }
    facts["nvpmodel"] = _run(["nvpmodel", "-q"]) or "absent (nvpmodel not found)"
    clocks = _run(["jetson_clocks", "--show"])
    facts["clocks_locked"] = ("absent (jetson_clocks not found)" if clocks is None
                              else bool(re.search(r"MinFreq=(\d+).*MaxFreq=\1", clocks)))
    versions = {}
    for mod in ("onnxruntime", "tensorrt", "torch", "numpy"):
        if mod in sys.modules or mod in ("onnxruntime", "numpy"):
            try:
                versions[mod] = __import__(mod).__version__
            except ImportError:
                continue
    facts["versions"] = versions
    return facts


def _meminfo_total() -> int | None:
    text = _read("/proc/meminfo")
    m = re.search(r"MemTotal:\s+(\d+) kB", text or "")
    return int(m.group(1)) * 1024 if m else None


def device_bandwidth(name: str | None) -> tuple[float | None, str]:
    """(GB/s, source) from the design table for a device name, or (None, reason)."""
    low = (name or "").lower()
    for key, gbs in BANDWIDTH_GBS:
        if key in low:
            return gbs, f"design.md §5 table ({key})"
    return None, "unknown: device not in the design.md §5 table"


def measure_memcpy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Best-of-N host copy bandwidth in GB/s, counting bytes read + written (a rough upper bound)."""
    src = np.ones(mib * 2**20 // 8, np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


# --------------------------------------------------------------------------- weights and roofline


def weight_facts(policy: Any) -> dict[str, Any]:
    """Weight bytes: stored total, and bytes read per inference and per action (vision once; then the
    chunk graph once, or prefill once and decode per further token)."""
    manifest = getattr(policy.backend, "manifest", None)
    k = policy.action_chunk
    n_tokens = k * policy.action_dim()
    if manifest is not None:
        g = manifest.graphs
        host = 0
        for f in (manifest.llm.embed_file, manifest.llm.embed_scale_file):
            if f:
                host += (Path(policy.path) / f).stat().st_size
        llm = max(g[n].weight_bytes for n in manifest.llm_graphs)  # one stored copy serves them all
        if manifest.llm.decoding == "parallel":
            step, per_inference = 0, g["vision"].weight_bytes + g["chunk"].weight_bytes
        else:
            step = g["decode"].weight_bytes
            per_inference = g["vision"].weight_bytes + g["prefill"].weight_bytes + (n_tokens - 1) * step
        return {
            "total_bytes": g["vision"].weight_bytes + llm + host,
            "vision_bytes": g["vision"].weight_bytes, "llm_bytes": llm, "host_embedding_bytes": host,
            "decode_step_bytes": step, "read_per_inference_bytes": per_inference,
            "read_per_action_bytes": per_inference / k, "precision": manifest.precision,
        }
    # A checkpoint run by the torch reference: parameters at the compute dtype.
    cfg = policy.config
    itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}.get(policy.backend.dtype, 4)
    llm_params = cfg.llm.param_count()
    embed = cfg.llm.vocab_size * cfg.llm.hidden_size
    vision_params = _vision_params(policy.path)
    step = (llm_params - embed) * itemsize  # the embedding table is gathered, not read whole
    passes = 1 if cfg.decoding == "parallel" else n_tokens
    per_inference = vision_params * itemsize + passes * step
    return {
        "total_bytes": (vision_params + llm_params) * itemsize, "vision_bytes": vision_params * itemsize,
        "llm_bytes": llm_params * itemsize, "host_embedding_bytes": 0,
        "decode_step_bytes": 0 if cfg.decoding == "parallel" else step, "read_per_inference_bytes": per_inference,
        "read_per_action_bytes": per_inference / k, "precision": policy.backend.dtype,
    }


def _vision_params(path: Path) -> int:
    from rlrc_runtime.checkpoint import weight_index

    total = 0
    for key, t in weight_index(path).items():
        if key.startswith(("vision_backbone.", "projector.")):
            total += int(np.prod(t.shape))
    return total


def roofline(weights: dict[str, Any], stages: dict[str, dict[str, float]], bandwidth_gbs: float | None,
             source: str) -> dict[str, Any]:
    out: dict[str, Any] = {"bandwidth_gbs": bandwidth_gbs, "bandwidth_source": source,
                           "read_per_inference_bytes": weights["read_per_inference_bytes"],
                           "read_per_action_bytes": weights["read_per_action_bytes"],
                           "decode_step_bytes": weights["decode_step_bytes"]}
    if bandwidth_gbs is None:
        out["note"] = "no memory bandwidth known for this device: bound and achieved fraction not reported"
        return out
    bw = bandwidth_gbs * 1e9
    out["end_to_end_bound_ms"] = weights["read_per_inference_bytes"] / bw * 1e3
    out["decode_step_bound_ms"] = weights["decode_step_bytes"] / bw * 1e3
    if "end_to_end" in stages:
        out["end_to_end_achieved_fraction"] = out["end_to_end_bound_ms"] / stages["end_to_end"]["p50"]
    if "decode_step" in stages and weights["decode_step_bytes"]:
        out["decode_step_achieved_fraction"] = out["decode_step_bound_ms"] / stages["decode_step"]["p50"]
    return out


# --------------------------------------------------------------------------- the run


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.n = total, enabled, 0
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="rlrc-bench", unit="step", file=sys.stderr)
            except ImportError:
                self.bar = None

    def update(self) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            print(f"\rrlrc-bench {self.n}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def _load(path: str, backend: str, cfg: BenchConfig) -> tuple[Any, int | None]:
    from rlrc_runtime.manifest import is_bundle
    from rlrc_runtime.policy import load_policy

    options: dict[str, Any] = {}
    if is_bundle(path) and backend in ("auto", "onnxruntime"):
        # Spinning idle threads would steal the cores from the other policy between interleaved steps.
        options["allow_spinning"] = not cfg.compare
        if cfg.threads:
            options["intra_op_num_threads"] = cfg.threads
    before = proc_status_bytes("VmRSS")
    policy = load_policy(path, backend=backend, device=cfg.device, **options)
    after = proc_status_bytes("VmRSS")
    return policy, (after - before) if before is not None and after is not None else None


def run_bench(cfg: BenchConfig, image: np.ndarray | None = None) -> dict[str, Any]:
    """Measure ``cfg.bundle`` (and ``cfg.compare``, interleaved) -> the report dict (schema rlrc-bench/1)."""
    from rlrc_runtime.cli import test_scene

    image = test_scene() if image is None else image
    load_before = os.getloadavg()
    specs = [("bundle", cfg.bundle, cfg.backend)]
    if cfg.compare:
        specs.append(("compare", cfg.compare, cfg.compare_backend))
    policies, rss = {}, {}
    for label, path, backend in specs:
        policies[label], rss[label] = _load(path, backend, cfg)
    samples: dict[str, dict[str, list[float]]] = {label: {} for label in policies}
    tokens: dict[str, list[list[int]]] = {label: [] for label in policies}
    order = list(policies)
    bar = _Progress(len(order) * (cfg.warmup + cfg.iters), cfg.progress)
    with Tegrastats() as tegra:
        for it in range(cfg.warmup + cfg.iters):
            for label in (order if it % 2 == 0 else order[::-1]):  # A B, B A, ...: neither always goes first
                policy = policies[label]
                res = policy.infer(image, cfg.instruction)
                bar.update()
                if it < cfg.warmup:
                    continue
                steps = dict(getattr(policy.backend, "step_timings_ms", {}) or {})
                for stage, values in stage_samples(res.timings_ms, steps).items():
                    samples[label].setdefault(stage, []).extend(values)
                tokens[label].append(res.action_tokens.tolist())
    bar.close()
    load_after = os.getloadavg()
    nvml = nvml_facts()
    machine = machine_facts()
    name = nvml.get("name") if nvml.get("available") else (machine.get("jetson_model") or machine.get("cpu"))
    if cfg.bandwidth_gbs:
        bw, source = cfg.bandwidth_gbs, "--bandwidth-gbs"
    else:
        bw, source = device_bandwidth(name if (nvml.get("available") or machine.get("jetson_model")) else None)
        if bw is None and cfg.measure_bandwidth:
            bw, source = measure_memcpy_bandwidth(), "measured: numpy memcpy (read+write bytes), best of 5"
        elif bw is None:
            source = "unknown: CPU host (no table entry); pass --measure-bandwidth or --bandwidth-gbs"
    runs = []
    for label, path, backend in specs:
        policy = policies[label]
        stages = {stage: summarize(v) for stage, v in samples[label].items()}
        weights = weight_facts(policy)
        runs.append({
            "label": label, "path": str(path), "backend": policy.backend.name, "describe": policy.describe(),
            "iters": cfg.iters, "warmup": cfg.warmup, "stages_ms": stages,
            "actions_per_inference": policy.action_chunk,
            "ms_per_inference_p50": stages["end_to_end"]["p50"],
            "actions_per_s": policy.action_chunk * 1e3 / stages["end_to_end"]["p50"],
            "actions_per_s_mean": policy.action_chunk * 1e3 / stages["end_to_end"]["mean"],
            "weights": weights, "host_memory": {"load_rss_delta_bytes": rss[label]},
            "roofline": roofline(weights, stages, bw, source),
            "tokens_last": tokens[label][-1] if tokens[label] else None,
        })
        policy.close()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": " ".join(["rlrc-bench", *sys.argv[1:]]) if Path(sys.argv[0]).name.startswith(("rlrc-bench", "bench_cli")) else None,
        "config": dataclasses.asdict(cfg),
        "instruction": cfg.instruction, "image_shape": list(image.shape),
        "machine": machine,
        "load_average": {"before": list(load_before), "after": list(load_after),
                         "note": "1/5/15-min load averages; other processes share this machine"},
        "device": {"nvml": nvml, "tegrastats": tegra.summary()},
        "host_memory_peak_bytes": proc_status_bytes("VmHWM"),
        "runs": runs,
    }
    if cfg.compare:
        a, b = runs
        report["ratios"] = compare_ratios(a, b)
    return report


def compare_ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Ratios 'compare / bundle' from one interleaved run: > 1 means --bundle is faster / smaller."""

    def ratio(x: float | None, y: float | None) -> float | None:
        # A resident-memory delta can be <= 0 (pages freed or shared with the policy loaded first): no ratio then.
        return None if x is None or y is None or x <= 0 or y <= 0 else x / y

    stages = {s: ratio(b["stages_ms"][s]["p50"], a["stages_ms"][s]["p50"])
              for s in a["stages_ms"] if s in b["stages_ms"]}
    return {
        "meaning": "compare / bundle, from medians of the same interleaved run; > 1: --bundle is faster or smaller",
        "speedup_p50_end_to_end": stages.get("end_to_end"),
        "actions_per_s_ratio": ratio(a["actions_per_s"], b["actions_per_s"]),
        "speedup_p50_by_stage": stages,
        "weight_bytes_ratio": ratio(b["weights"]["total_bytes"], a["weights"]["total_bytes"]),
        "weight_read_per_action_ratio": ratio(b["weights"]["read_per_action_bytes"], a["weights"]["read_per_action_bytes"]),
        "actions_per_s_meaning": "bundle / compare: > 1: --bundle delivers more actions per second",
        "host_memory_ratio": ratio(b["host_memory"]["load_rss_delta_bytes"], a["host_memory"]["load_rss_delta_bytes"]),
        "same_tokens_last_step": a["tokens_last"] == b["tokens_last"],
    }


# --------------------------------------------------------------------------- output


TABLE_STAGES = ("preprocess", "vision", "prefill", "decode_step", "chunk", "llm", "postprocess", "end_to_end")


def format_table(report: dict[str, Any]) -> str:
    lines = []
    for run in report["runs"]:
        w = run["weights"]
        per = (f"{run['actions_per_inference']} actions per {run['ms_per_inference_p50']:.1f} ms inference, "
               if run.get("actions_per_inference", 1) > 1 else "")
        lines.append(f"{run['label']}: {run['path']}  [{run['backend']}, {w['precision']}]  "
                     f"{per}{run['actions_per_s']:.2f} actions/s  weights {w['total_bytes'] / 2**20:.1f} MiB")
        lines.append(f"  {'stage (ms)':<14}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}")
        for s in TABLE_STAGES:
            st = run["stages_ms"].get(s)
            if st:
                lines.append(f"  {s:<14}{st['p50']:>10.2f}{st['p90']:>10.2f}{st['p99']:>10.2f}{st['max']:>10.2f}")
        rf = run["roofline"]
        if rf.get("bandwidth_gbs"):
            lines.append(f"  roofline: {rf['read_per_action_bytes'] / 1e6:.1f} MB read/action at {rf['bandwidth_gbs']:.1f} GB/s "
                         f"({rf['bandwidth_source']}) -> bound {rf['end_to_end_bound_ms']:.2f} ms, achieved "
                         f"{100 * rf.get('end_to_end_achieved_fraction', 0):.1f} % end to end, "
                         f"{100 * rf.get('decode_step_achieved_fraction', 0):.1f} % per decode step")
        else:
            lines.append(f"  roofline: {rf['read_per_action_bytes'] / 1e6:.1f} MB read/action; {rf['bandwidth_source']}")
    if "ratios" in report:
        r = report["ratios"]
        lines.append("ratios (compare / bundle, interleaved in one process):")
        lines.append(f"  actions per second {r['actions_per_s_ratio']:.2f}x (bundle / compare), "
                     f"end-to-end p50 speed-up {r['speedup_p50_end_to_end']:.2f}x, weights {r['weight_bytes_ratio']:.2f}x smaller, "
                     f"host memory ratio {r['host_memory_ratio'] if r['host_memory_ratio'] is None else round(r['host_memory_ratio'], 2)}")
    la = report["load_average"]
    lines.append(f"machine: {report['machine']['cpu']} ({report['machine']['cores']} cores); load average "
                 f"{la['before'][0]:.2f} -> {la['after'][0]:.2f} (shared machine: absolute times are indicative only)")
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: str | Path) -> bool:
    """Per-stage p50 bars with p90 whiskers for each run; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot written (pip install 'rlrc_runtime[onnx]')")
        return False
    stages = [s for s in TABLE_STAGES if all(s in r["stages_ms"] for r in report["runs"])]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(report["runs"])
    for i, run in enumerate(report["runs"]):
        p50 = [run["stages_ms"][s]["p50"] for s in stages]
        p90 = [run["stages_ms"][s]["p90"] - run["stages_ms"][s]["p50"] for s in stages]
        xs = [j + i * width for j in range(len(stages))]
        ax.bar(xs, p50, width, yerr=[[0] * len(p50), p90], capsize=3,
               label=f"{run['label']}: {Path(run['path']).name} ({run['backend']}, {run['weights']['precision']})")
    ax.set_xticks([j + width * (len(report["runs"]) - 1) / 2 for j in range(len(stages))], stages)
    ax.set_ylabel("ms (bar p50, whisker p90)")
    title = "rlrc-bench"
    if "ratios" in report and report["ratios"]["speedup_p50_end_to_end"]:
        title += f": end-to-end speed-up {report['ratios']['speedup_p50_end_to_end']:.2f}x (compare / bundle)"
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- interleaved policies


def _policy_timer(path: str, backend: str, image_size: int, conn: Any) -> None:
    """Child process: load one policy, then time ``predict_action`` whenever the parent asks.

    Replies: "ready" after load and warm-up, "done" after each round, finally a dict with the
    percentiles and this process's peak resident memory (VmHWM: weights + runtime + buffers).
    """
    from rlrc_runtime.policy import load_policy

    try:
        policy = load_policy(path, backend=backend)
        frames = [np.random.default_rng(i).integers(0, 255, (image_size, image_size, 3), dtype=np.uint8) for i in range(4)]
        policy.predict_action(frames[0], "pick up the red block")  # warm-up
    except Exception as exc:  # reported to the parent, which raises with the row's name
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    conn.send("ready")
    times: list[float] = []
    while (n := conn.recv()) is not None:
        for i in range(n):
            t0 = time.perf_counter()
            policy.predict_action(frames[i % 4], "pick up the red block")
            times.append((time.perf_counter() - t0) * 1e3)
        conn.send("done")
    conn.send({**summarize(times), "peak_rss_bytes": proc_status_bytes("VmHWM") or 0, "n": len(times)})
    policy.close()


def measure_interleaved(policies: dict[str, tuple[str, str]], iters: int, round_size: int = 5,
                        image_size: int = 128, timeout_s: float = 600.0) -> dict[str, dict[str, Any]]:
    """p50/p90/p99/max ms of ``predict_action`` for several policies, timed in interleaved rounds.

    ``policies``: name -> (checkpoint or bundle path, backend). Each policy lives in its own
    process (so each gets its own peak-memory figure and none shares caches with another); the
    processes are loaded one at a time and then take turns, ``round_size`` predictions each, so a
    slow phase of the machine hits every policy alike. Ratios of these numbers are what we quote.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs: dict[str, tuple[Any, Any]] = {}

    def reply(name: str) -> Any:
        proc, conn = procs[name]
        if not conn.poll(timeout_s):
            raise ConfigError(f"latency worker for {name!r} ({policies[name][0]}) gave no answer in {timeout_s:.0f} s "
                              f"(alive: {proc.is_alive()}, exit code {proc.exitcode})")
        msg = conn.recv()
        if isinstance(msg, dict) and "error" in msg:
            raise ConfigError(f"latency worker for {name!r} could not run {policies[name][0]}: {msg['error']}")
        return msg

    try:
        for name, (path, backend) in policies.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_policy_timer, args=(path, backend, image_size, child), daemon=True)
            proc.start()
            procs[name] = (proc, parent)
            reply(name)  # loaded one at a time, so loading never overlaps a timed round
        done = 0
        while done < iters:
            n = min(round_size, iters - done)
            for name, (_, conn) in procs.items():
                conn.send(n)
                reply(name)
            done += n
        out = {}
        for name, (_, conn) in procs.items():
            conn.send(None)
            out[name] = reply(name)
        return out
    finally:
        for proc, _ in procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
