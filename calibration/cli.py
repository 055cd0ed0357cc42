"""rlrc-calib: calibrate a robot's camera and action frame (step by step: docs/robot.md).

    rlrc-calib devices                                         connected RealSense cameras
    rlrc-calib intrinsics --out camera.yaml [--recording R.db3 | --serial S]
    rlrc-calib board --out board.png [--board charuco --squares-x 7 --squares-y 5 ...]   print this
    rlrc-calib extrinsics --out camera_pose.yaml --board-pose x,y,z,roll,pitch,yaw [--recording R.db3 | --serial S]
    rlrc-calib action-frame --out frame.yaml [--permutation 1,0,2 --signs=-1,1,1 --gripper-invert ...]
    rlrc-calib action-frame --out frame.yaml --from-motion motion.db3 --extrinsics camera_pose.yaml --marker-id 7
    rlrc-calib action-frame --check frame.yaml [--action 0.01,0,0,0,0,0,1]
    rlrc-calib capture --out DIR --instruction TEXT [--recording R.db3 | --serial S] [--frames 64 --record]

Bad input exits with status 2 and a message naming the flag or file at fault.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.action_frame import ActionFrame
from calibration.capture import CaptureConfig, SourceConfig
from calibration.extrinsics import BoardSpec, ExtrinsicsConfig, parse_floats
from calibration.intrinsics import IntrinsicsConfig
from calibration.motion import MotionConfig
from rlrc_runtime.cli_args import Subcommand, combined_config, run_subcommands, split_config
from rlrc_runtime.errors import ConfigError


@dataclass(frozen=True)
class ActionFrameArgs:
    """Write (from flags or from a measured motion) or check an action-frame YAML."""

    out: Path | None = field(default=None, metadata={"help": "action-frame YAML to write"})
    check: Path | None = field(default=None, metadata={
        "help": "validate this file and show what it does to --action (instead of --out)"})
    action: str = field(default="0.01,0.0,0.0,0.0,0.0,0.1,1.0", metadata={
        "help": "example policy action shown with --check"})
    permutation: str = field(default="0,1,2", metadata={
        "help": "policy axes -> robot axes: robot axis i takes policy axis p[i] (with --from-motion: how the policy's "
                "axes lie in the extrinsics' robot frame)"})
    signs: str = field(default="1,1,1", metadata={"help": "sign per robot axis after the permutation (write --signs=-1,1,1)"})
    rotation_rpy: str = field(default="0,0,0", metadata={"help": "extra rotation into the robot frame, radians"})
    translation_scale: float = field(default=1.0, metadata={"help": "multiplies dx, dy, dz"})
    rotation_scale: float = field(default=1.0, metadata={"help": "multiplies droll, dpitch, dyaw"})
    gripper_invert: bool = field(default=False, metadata={
        "help": "robot gripper command 0 = open, 1 = closed (the policy's 1 = open)"})
    max_translation: float = field(default=0.05, metadata={"help": "clamp per action, metres"})
    max_rotation: float = field(default=0.25, metadata={"help": "clamp per action, radians"})
    robot_frame: str = field(default="base_link", metadata={"help": "frame the node's commands are expressed in"})

    def __post_init__(self) -> None:
        if (self.out is None) == (self.check is None):
            raise ConfigError(f"--out {self.out} / --check {self.check}: give exactly one (write a file or check one)")
        parse_floats(self.action, 7, "--action")

    def declared(self) -> ActionFrame:
        """The frame the flags describe (validated by ActionFrame itself)."""
        perm = parse_floats(self.permutation, 3, "--permutation")
        if any(v != int(v) for v in perm):
            raise ConfigError(f"--permutation {self.permutation!r}: expected three axis indices such as 1,0,2")
        return ActionFrame(
            permutation=tuple(int(v) for v in perm), signs=parse_floats(self.signs, 3, "--signs"),
            rotation_rpy=parse_floats(self.rotation_rpy, 3, "--rotation-rpy"),
            translation_scale=self.translation_scale, rotation_scale=self.rotation_scale,
            gripper_output_open=0.0 if self.gripper_invert else 1.0,
            gripper_output_closed=1.0 if self.gripper_invert else 0.0,
            max_translation=self.max_translation, max_rotation=self.max_rotation,
            robot_frame=self.robot_frame, source="command line")


@dataclass(frozen=True)
class BoardImageConfig:
    """Where the printable board goes."""

    out: Path = field(metadata={"help": "PNG file to write"})
    dpi: int = field(default=300, metadata={"help": "print resolution, dots per inch"})
    margin: float = field(default=0.01, metadata={"help": "white margin around the pattern, metres"})

    def __post_init__(self) -> None:
        if not (72 <= self.dpi <= 2400) or not (0 <= self.margin <= 0.1):
            raise ConfigError(f"--dpi {self.dpi} must be in 72..2400 and --margin {self.margin} in 0..0.1 m")


@dataclass(frozen=True)
class DevicesConfig:
    """No options."""


CaptureCommand = combined_config("CaptureCommand", CaptureConfig, SourceConfig)
IntrinsicsCommand = combined_config("IntrinsicsCommand", IntrinsicsConfig, SourceConfig)
ExtrinsicsCommand = combined_config("ExtrinsicsCommand", ExtrinsicsConfig, BoardSpec, SourceConfig)
BoardCommand = combined_config("BoardCommand", BoardImageConfig, BoardSpec)
ActionFrameCommand = combined_config("ActionFrameCommand", ActionFrameArgs, MotionConfig)


def run_capture(args: object) -> str:
    from calibration.capture import capture

    out = capture(split_config(args, CaptureConfig), split_config(args, SourceConfig))
    return f"calibration set written to {out}"


def run_intrinsics(args: object) -> str:
    from calibration.intrinsics import export_intrinsics

    config = split_config(args, IntrinsicsConfig)
    info = export_intrinsics(config, split_config(args, SourceConfig))
    return f"{info['image_width']}x{info['image_height']} intrinsics written to {config.out}"


def run_board(args: object) -> str:
    from PIL import Image

    config, spec = split_config(args, BoardImageConfig), split_config(args, BoardSpec)
    px_per_m = config.dpi / 0.0254
    image = spec.image(px_per_m, margin_px=int(round(config.margin * px_per_m)))
    config.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(config.out, dpi=(config.dpi, config.dpi))
    w, h = spec.size_m
    return (f"{spec.board} board written to {config.out}: print at 100% ({config.dpi} dpi), the pattern is "
            f"{w * 1e3:.0f} x {h * 1e3:.0f} mm; measure a square (and a marker) on the print and pass "
            "--square-size / --marker-size in metres")


def run_extrinsics(args: object) -> str:
    from calibration.extrinsics import measure_extrinsics

    config = split_config(args, ExtrinsicsConfig)
    pose = measure_extrinsics(config, split_config(args, BoardSpec), split_config(args, SourceConfig))
    q = pose.quality
    return (f"camera pose in {pose.parent_frame} written to {config.out}: translation "
            f"{np.round(pose.matrix[:3, 3], 4).tolist()} m; {q['frames_used']} frames, reprojection "
            f"{q['reprojection_rms_px']:.3f} px rms, spread {q['spread_translation_mm']:.2f} mm / "
            f"{q['spread_rotation_deg']:.3f} deg\npublish it with: {pose.static_transform_command()}")


def run_action_frame(args: object) -> str:
    from calibration.action_frame import load_action_frame

    flags = split_config(args, ActionFrameArgs)
    if flags.check is not None and getattr(args, "from_motion") is not None:
        raise ConfigError(f"--check {flags.check} and --from-motion: --from-motion writes a new file; use --out")
    if flags.check is not None:
        frame = load_action_frame(flags.check)
        action = np.asarray(parse_floats(flags.action, 7, "--action"))
        lin, ang, grip = frame.apply(action)
        return json.dumps({"file": str(flags.check), "valid": True, "matrix": frame.matrix.round(6).tolist(),
                           "action": action.tolist(), "linear_step": lin.round(6).tolist(),
                           "angular_step": ang.round(6).tolist(), "gripper": round(grip, 6)}, indent=2)
    if getattr(args, "from_motion") is None:
        flags.declared().save(flags.out)
        return f"action frame written to {flags.out}"
    from calibration.motion import propose_from_motion

    frame, report = propose_from_motion(split_config(args, MotionConfig), flags.declared())
    frame.save(flags.out)
    report["written"] = str(flags.out)
    report["axes"] = frame.to_yaml_dict()["axes"]
    report["translation_scale"] = frame.translation_scale
    return json.dumps(report, indent=2)


def run_devices(args: object) -> str:
    from rlrc_runtime.camera import list_devices

    devices = list_devices()
    return json.dumps(devices, indent=2) if devices else "no RealSense camera connected"


COMMANDS = {
    "devices": Subcommand(DevicesConfig, run_devices, "list connected RealSense cameras"),
    "intrinsics": Subcommand(IntrinsicsCommand, run_intrinsics, "colour camera intrinsics to a ROS camera_info YAML"),
    "board": Subcommand(BoardCommand, run_board, "write a printable ChArUco / ArUco grid board"),
    "extrinsics": Subcommand(ExtrinsicsCommand, run_extrinsics,
                             "camera pose in the robot frame from frames of a board at a known pose"),
    "action-frame": Subcommand(ActionFrameCommand, run_action_frame,
                               "write (from flags or a measured motion) or check an action-frame YAML"),
    "capture": Subcommand(CaptureCommand, run_capture, "frames + instructions for quantization calibration"),
}


def main(argv: list[str] | None = None) -> int:
    return run_subcommands("rlrc-calib", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
