"""``rlrc-predict``: run one frame + instruction through a policy and print the action and timings."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field

import numpy as np

from rlrc_runtime.cli_args import add_arguments, from_namespace
from rlrc_runtime.errors import InputError, RLRCError


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlrc-predict", description=__doc__)
    add_arguments(parser, PredictArgs)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = from_namespace(PredictArgs, ns)
        from rlrc_runtime import load_policy

        image = load_image(args.image) if args.image else test_scene()
        with load_policy(args.policy, backend=args.backend, device=args.device, dtype=args.dtype) as policy:
            for _ in range(args.repeat):
                result = policy.infer(image, args.instruction, args.unnorm_key)
    except RLRCError as exc:
        print(f"rlrc-predict: error: {exc}", file=sys.stderr)
        return 2
    out = {
        "instruction": args.instruction,
        "unnorm_key": result.unnorm_key,
        "action": [round(float(a), 6) for a in result.action],
        "action_tokens": result.action_tokens.tolist(),
        "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"instruction : {args.instruction!r}")
        print(f"action      : {np.array2string(result.action, precision=4, floatmode='fixed')}  ({result.unnorm_key})")
        print(f"tokens      : {out['action_tokens']}")
        print("timings ms  : " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
