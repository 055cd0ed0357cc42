"""rlrc-calib: calibration tools for the robot.

    rlrc-calib capture --out DIR --instruction TEXT [--instruction TEXT ...] [--recording R.db3 | --serial S]
                       [--frames 64] [--every 1] [--record]
    rlrc-calib intrinsics --out camera.yaml [--recording R.db3 | --serial S --width 640 --height 480 --fps 30]
    rlrc-calib action-frame --out frame.yaml [--permutation 1,0,2] [--signs=-1,1,1] [--rotation-rpy 0,0,0]
                       [--translation-scale 1] [--rotation-scale 1] [--gripper-invert] [--max-translation 0.05]
                       [--max-rotation 0.25] [--robot-frame base_link]
    rlrc-calib action-frame --check frame.yaml [--action 0.01,0,0,0,0,0,1]
    rlrc-calib devices

Errors exit with status 2 and a message naming the value at fault.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from rlrc_runtime.errors import RLRCError


def _floats(text: str, n: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{name}={text!r}: expected {n} comma-separated numbers") from exc
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{name}={text!r}: expected {n} comma-separated numbers, got {len(values)}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlrc-calib", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("capture", help="frames + instructions for quantization calibration")
    cap.add_argument("--out", type=Path, required=True, help="new output directory")
    cap.add_argument("--instruction", action="append", required=True,
                     help="instruction paired with frames (repeat for several; round-robin)")
    src = cap.add_mutually_exclusive_group()
    src.add_argument("--recording", type=Path, help="read a RealSense recording (.db3) instead of a camera")
    src.add_argument("--serial", default="", help="RealSense serial (default: the first camera)")
    cap.add_argument("--frames", type=int, default=64, help="frames to keep (default 64)")
    cap.add_argument("--every", type=int, default=1, help="keep every n-th frame (default 1)")
    cap.add_argument("--width", type=int, default=640)
    cap.add_argument("--height", type=int, default=480)
    cap.add_argument("--fps", type=int, default=30)
    cap.add_argument("--record", action="store_true", help="also write OUT/recording.db3 (+ instruction sidecar)")

    intr = sub.add_parser("intrinsics", help="colour camera intrinsics to a ROS camera_info YAML")
    intr.add_argument("--out", type=Path, required=True)
    src = intr.add_mutually_exclusive_group()
    src.add_argument("--recording", type=Path, help="take them from a RealSense recording")
    src.add_argument("--serial", default="", help="RealSense serial (default: the first camera)")
    intr.add_argument("--width", type=int, default=640)
    intr.add_argument("--height", type=int, default=480)
    intr.add_argument("--fps", type=int, default=30)
    intr.add_argument("--camera-name", default="camera")

    af = sub.add_parser("action-frame", help="write or check an action-frame calibration YAML")
    mode = af.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, help="write a new calibration file")
    mode.add_argument("--check", type=Path, help="validate a file and show what it does to --action")
    af.add_argument("--permutation", default="0,1,2", help="robot axis i takes policy axis p[i] (default 0,1,2)")
    af.add_argument("--signs", default="1,1,1", help="sign per robot axis after the permutation (default 1,1,1)")
    af.add_argument("--rotation-rpy", default="0,0,0", help="extra rotation into the robot frame, radians")
    af.add_argument("--translation-scale", type=float, default=1.0)
    af.add_argument("--rotation-scale", type=float, default=1.0)
    af.add_argument("--gripper-invert", action="store_true",
                    help="robot gripper command 0 = open, 1 = closed (the policy's 1 = open)")
    af.add_argument("--max-translation", type=float, default=0.05, help="metres per action (default 0.05)")
    af.add_argument("--max-rotation", type=float, default=0.25, help="radians per action (default 0.25)")
    af.add_argument("--robot-frame", default="base_link")
    af.add_argument("--action", default="0.01,0.0,0.0,0.0,0.0,0.1,1.0",
                    help="example policy action shown with --check")

    sub.add_parser("devices", help="list connected RealSense cameras")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "capture":
        from calibration.capture import CaptureConfig, capture

        out = capture(CaptureConfig(out=args.out, instructions=tuple(args.instruction), frames=args.frames,
                                    every=args.every, recording=args.recording, serial=args.serial or "",
                                    width=args.width, height=args.height, fps=args.fps, record=args.record))
        print(f"calibration set written to {out}")
    elif args.command == "intrinsics":
        from calibration.intrinsics import export_intrinsics

        info = export_intrinsics(args.out, recording=args.recording, serial=args.serial or "", width=args.width,
                                 height=args.height, fps=args.fps, camera_name=args.camera_name)
        print(f"{info['image_width']}x{info['image_height']} intrinsics written to {args.out}")
    elif args.command == "action-frame":
        from calibration.action_frame import ActionFrame, load_action_frame

        if args.out is not None:
            frame = ActionFrame(
                permutation=tuple(int(v) for v in _floats(args.permutation, 3, "--permutation")),
                signs=_floats(args.signs, 3, "--signs"),
                rotation_rpy=_floats(args.rotation_rpy, 3, "--rotation-rpy"),
                translation_scale=args.translation_scale, rotation_scale=args.rotation_scale,
                gripper_output_open=0.0 if args.gripper_invert else 1.0,
                gripper_output_closed=1.0 if args.gripper_invert else 0.0,
                max_translation=args.max_translation, max_rotation=args.max_rotation,
                robot_frame=args.robot_frame, source="command line")
            frame.save(args.out)
            print(f"action frame written to {args.out}")
        else:
            frame = load_action_frame(args.check)
            action = np.asarray(_floats(args.action, 7, "--action"))
            lin, ang, grip = frame.apply(action)
            print(json.dumps({"file": str(args.check), "valid": True, "matrix": frame.matrix.round(6).tolist(),
                              "action": action.tolist(), "linear_step": lin.round(6).tolist(),
                              "angular_step": ang.round(6).tolist(), "gripper": round(grip, 6)}, indent=2))
    elif args.command == "devices":
        from ros_nodes.realsense import list_devices

        devices = list_devices()
        print(json.dumps(devices, indent=2) if devices else "no RealSense camera connected")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    except (RLRCError, OSError) as exc:
        print(f"rlrc-calib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
