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


def bench_frame(size: int, n: int) -> dict[str, float]:
    """Per-frame render cost and per-step physics cost of one env, milliseconds."""
    env = sim.make_env(family="stack", seed=0, image_size=size)
    env.reset()
    env._render()  # first frame creates the GL context; not part of the steady state
    render_s = _timeit(env._render, n)
    env.close()
    blind = sim.make_env(family="stack", seed=0, image_size=size, render_mode=None)
    blind.reset()
    actions = _random_actions(n, None)
    it = iter(actions)

    def physics_step() -> None:
        _, _, term, trunc, _ = blind.step(next(it))
        if term or trunc:
            blind.reset()

    physics_s = _timeit(physics_step, n)
    return {"render_ms": 1e3 * render_s / n, "step_no_render_ms": 1e3 * physics_s / n}


def bench_single(size: int, n: int) -> float:
    env = sim.make_env(family="pick", seed=0, image_size=size)
    env.reset()
    actions = _random_actions(n + 20, None)
    for a in actions[:20]:  # warm-up
        env.step(a)
    t0 = time.perf_counter()
    for a in actions[20:]:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    dt_s = time.perf_counter() - t0
    env.close()
    return n / dt_s


def bench_vector(size: int, n: int, num_envs: int, mode: str) -> float:
    """Env steps per second (batch steps x num_envs)."""
    venv = sim.make_vector_env(sim.list_families(), num_envs=num_envs, seed=0, image_size=size, mode=mode)
    venv.reset(seed=0)
    batches = max(1, n // num_envs)
    actions = _random_actions(batches + 5, num_envs)
    for a in actions[:5]:
        venv.step(a)
    t0 = time.perf_counter()
    for a in actions[5:]:
        venv.step(a)
    dt_s = time.perf_counter() - t0
    venv.close()
    return batches * num_envs / dt_s


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
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="image sizes, pixels")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where sim_speed.json/.md go")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    rows = []
    for size in args.sizes:
        frame = bench_frame(size, args.steps)
        logger.info("%dpx: render %.2f ms/frame, physics %.2f ms/step", size, frame["render_ms"], frame["step_no_render_ms"])
        configs = [("single", 1, "none")] + [("sync", 4, "sync"), ("async", 2, "async"), ("async", 4, "async")]
        for label, k, mode in configs:
            sps = bench_single(size, args.steps) if mode == "none" else bench_vector(size, args.steps, k, mode)
            logger.info("%dpx %s x%d: %.0f env steps/s", size, label, k, sps)
            rows.append({"image_size": size, "mode": label, "num_envs": k, "env_steps_per_s": round(sps, 1),
                         **{k2: round(v, 3) for k2, v in frame.items()}})
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.sim_speed", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "nproc": _nproc(), "python": platform.python_version(), "gl": _gl_renderer(),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL"), "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", "(unset)"),
        },
        "versions": {"mujoco": __import__("mujoco").__version__, "gymnasium": __import__("gymnasium").__version__},
        "steps_per_config": args.steps,
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
        f"{args.steps} env steps timed per row, random actions, auto-reset", "",
        "| image | mode | envs | env steps/s | render ms/frame | step w/o render ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['image_size']} | {r['mode']} | {r['num_envs']} | {r['env_steps_per_s']:.0f} | "
                     f"{r['render_ms']:.2f} | {r['step_no_render_ms']:.2f} |")
    lines += ["", "CPU timings on a shared machine: read them as ratios within this run."]
    (args.out_dir / "sim_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
