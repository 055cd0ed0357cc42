"""Speed of the built-in tabletop benchmark on this machine: env steps per second with rendering.

Run from the repository root:
    .venv/bin/python -m benchmarks.sim_speed [--steps 400] [--sizes 128 224]

Measures, per image size: the cost of one offscreen frame, of one physics control step without
rendering, and env steps/s for a single env, a sync vector env x4 and async vector envs x2/x4
(random valid actions, auto-reset on episode end). Writes benchmarks/results/sim_speed.json and
benchmarks/results/sim_speed.md. Numbers are CPU (llvmpipe) timings: compare them as ratios
within one run, not across machines.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

import sim  # noqa: E402

logger = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parent / "results"


def _random_actions(n: int, batch: int | None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, 7) if batch is None else (n, batch, 7)
    a = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    a[..., :3] *= sim.env.MAX_TRANSLATION
    a[..., 3:6] *= sim.env.MAX_ROTATION
    a[..., 6] = (a[..., 6] > 0).astype(np.float32)
    return a


def _timeit(fn: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def _blocks(fn: Callable[[], None], n: int, repeats: int) -> list[float]:
    """Seconds per call of `fn`, for `repeats` blocks of `n` calls (the machine may be shared)."""
    return [_timeit(fn, n) / n for _ in range(repeats)]


def bench_frames(sizes: list[int], n: int, repeats: int) -> dict[int, dict[str, float]]:
    """Per-frame render cost and per-step physics cost, milliseconds, best block.

    Sizes are measured interleaved (128, 224, 128, 224, ...) so that load from other jobs on a
    shared machine hits every size alike instead of whichever happened to run during a spike.
    """
    envs = {size: sim.make_env(family="stack", seed=0, image_size=size) for size in sizes}
    for env in envs.values():
        env.reset()
        env._render()  # the first frame creates the GL context; not part of the steady state
    render: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size, env in envs.items():
            render[size].extend(_blocks(env._render, n, 1))
    for env in envs.values():
        env.close()
    blind = sim.make_env(family="stack", seed=0, image_size=sizes[0], render_mode=None)
    blind.reset()
    actions = iter(_random_actions(n * repeats, None))

    def physics_step() -> None:
        _, _, term, trunc, _ = blind.step(next(actions))
        if term or trunc:
            blind.reset()

    physics = 1e3 * min(_blocks(physics_step, n, repeats))
    return {size: {"render_ms": 1e3 * min(render[size]), "step_no_render_ms": physics} for size in sizes}


def bench_single(size: int, n: int, repeats: int) -> list[float]:
    """Env steps per second of one env, one figure per block of `n` steps."""
    env = sim.make_env(family="pick", seed=0, image_size=size)
    env.reset()
    actions = iter(_random_actions(n * repeats + 20, None))
    for _ in range(20):  # warm-up
        env.step(next(actions))

    def step() -> None:
        _, _, term, trunc, _ = env.step(next(actions))
        if term or trunc:
            env.reset()

    rates = [1.0 / s for s in _blocks(step, n, repeats)]
    env.close()
    return rates


def bench_vector(size: int, n: int, num_envs: int, mode: str, repeats: int) -> list[float]:
    """Env steps per second (batch steps x num_envs), one figure per block of `n` env steps."""
    venv = sim.make_vector_env(sim.list_families(), num_envs=num_envs, seed=0, image_size=size, mode=mode)
    venv.reset(seed=0)
    batches = max(1, n // num_envs)
    actions = iter(_random_actions(batches * repeats + 5, num_envs))
    for _ in range(5):
        venv.step(next(actions))
    rates = [num_envs / s for s in _blocks(lambda: venv.step(next(actions)), batches, repeats)]
    venv.close()
    return rates


def _gl_renderer() -> str:
    try:
        import mujoco
        from OpenGL import GL

        r = mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 16, 16)
        r._gl_context.make_current()
        name = GL.glGetString(GL.GL_RENDERER).decode()
        version = GL.glGetString(GL.GL_VERSION).decode()
        r.close()
        return f"{name} / {version}"
    except Exception as e:  # noqa: BLE001 - informational only; the benchmark itself ran
        return f"unknown ({type(e).__name__})"


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(os.cpu_count())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="env steps timed per configuration")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per configuration; the best is reported")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="image sizes, pixels")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where sim_speed.json/.md go")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    load_before = os.getloadavg()
    frames = bench_frames(args.sizes, args.steps, 3 * args.repeats)
    rows = []
    for size in args.sizes:
        frame = frames[size]
        logger.info("%dpx: render %.2f ms/frame, physics %.2f ms/step", size, frame["render_ms"], frame["step_no_render_ms"])
        for label, k in [("single", 1), ("sync", 4), ("async", 2), ("async", 4)]:
            rates = (bench_single(size, args.steps, args.repeats) if label == "single"
                     else bench_vector(size, args.steps, k, label, args.repeats))
            logger.info("%dpx %s x%d: %s env steps/s", size, label, k, [round(r) for r in rates])
            rows.append({"image_size": size, "mode": label, "num_envs": k,
                         "env_steps_per_s": round(max(rates), 1), "env_steps_per_s_median": round(float(np.median(rates)), 1),
                         **{k2: round(v, 3) for k2, v in frame.items()}})
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.sim_speed", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "nproc": _nproc(), "python": platform.python_version(), "gl": _gl_renderer(),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL"), "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", "(unset)"),
            "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "versions": {"mujoco": __import__("mujoco").__version__, "gymnasium": __import__("gymnasium").__version__},
        "steps_per_block": args.steps,
        "repeats": args.repeats,
        "control_hz": round(1 / sim.scene.CONTROL_DT, 1),
        "results": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "sim_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# Simulation speed (tabletop suite)", "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- machine: {m['platform']}, {m['processor']}, nproc={m['nproc']}, python {m['python']}",
        f"- rendering: MUJOCO_GL={m['MUJOCO_GL']}, {m['gl']}, LP_NUM_THREADS={m['LP_NUM_THREADS']}",
        f"- mujoco {result['versions']['mujoco']}, gymnasium {result['versions']['gymnasium']}; "
        f"control at {result['control_hz']} Hz ({sim.scene.SUBSTEPS} physics substeps per env step); "
        f"random actions, auto-reset; best (and median) of {args.repeats} blocks of {args.steps} env steps",
        f"- 1-minute load average before/after: {m['loadavg_1min_before_after']} (other jobs share this machine)", "",
        "| image | mode | envs | env steps/s best (median) | render ms/frame | step w/o render ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['image_size']} | {r['mode']} | {r['num_envs']} | {r['env_steps_per_s']:.0f} "
                     f"({r['env_steps_per_s_median']:.0f}) | {r['render_ms']:.2f} | {r['step_no_render_ms']:.2f} |")
    lines += ["", "Render and physics columns are per env, best block, measured in this process. CPU timings:",
              "read them as ratios within this run."]
    (args.out_dir / "sim_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
