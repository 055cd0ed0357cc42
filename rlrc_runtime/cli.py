"""``rlrc-predict``: run one frame + instruction through a policy and print the action and timings."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field

import numpy as np

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import InputError


@dataclass(frozen=True)
class PredictArgs:
    policy: str = field(metadata={"help": "checkpoint directory"})
    instruction: str = field(default="pick up the red block", metadata={"help": "language instruction"})
    image: str | None = field(default=None, metadata={"help": "RGB image file (PNG/JPEG); default: a generated 480x640 test scene"})
    backend: str = field(default="auto", metadata={"help": "inference backend: auto (torch for checkpoints, "
                                                   "tensorrt/onnxruntime for bundles), torch, onnxruntime, tensorrt"})
    device: str = field(default="cpu", metadata={"help": "device for the torch backend"})
    dtype: str = field(default="float32", metadata={"help": "compute dtype", "choices": ["float32", "bfloat16", "float16"]})
    unnorm_key: str | None = field(default=None, metadata={"help": "dataset of norm_stats (needed when there are several)"})
    repeat: int = field(default=1, metadata={"help": "run this many times and report the last timings (first = warm-up)"})
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of text"})

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise InputError(f"--repeat={self.repeat} must be >= 1")


def test_scene(height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic synthetic tabletop frame (HxWx3 uint8): table, two blocks, a plate."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (190, 200, 210)  # wall
    img[height // 2 :] = (140, 105, 75)  # table
    h, w = height // 8, width // 10
    img[height // 2 + h : height // 2 + 2 * h, w * 2 : w * 3] = (200, 30, 30)  # red block
    img[height // 2 + h : height // 2 + 2 * h, w * 6 : w * 7] = (30, 60, 200)  # blue block
    yy, xx = np.mgrid[:height, :width]
    plate = (yy - int(height * 0.8)) ** 2 + ((xx - width // 2) // 2) ** 2 < (h // 1) ** 2
    img[plate] = (235, 235, 235)
    return img


def load_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path!r}: {exc}") from exc


def predict(args: PredictArgs) -> str:
    from rlrc_runtime import load_policy

    image = load_image(args.image) if args.image else test_scene()
    with load_policy(args.policy, backend=args.backend, device=args.device, dtype=args.dtype) as policy:
        for _ in range(args.repeat):
            result = policy.infer(image, args.instruction, args.unnorm_key)
    out = {
        "instruction": args.instruction,
        "unnorm_key": result.unnorm_key,
        "action": [round(float(a), 6) for a in result.action],
        "chunk": [[round(float(a), 6) for a in row] for row in result.chunk],
        "action_tokens": result.action_tokens.tolist(),
        "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
    }
    if args.json:
        return json.dumps(out)
    lines = [f"instruction : {args.instruction!r}",
             f"action      : {np.array2string(result.action, precision=4, floatmode='fixed')}  ({result.unnorm_key})"]
    if len(result.chunk) > 1:
        lines.append(f"chunk       : {len(result.chunk)} actions (one inference)")
    lines += [f"tokens      : {out['action_tokens']}",
              "timings ms  : " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_command("rlrc-predict", __doc__, PredictArgs, predict, argv, logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
