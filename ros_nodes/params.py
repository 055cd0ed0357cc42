"""The parameter tables of the nodes: one source for node declarations, validation and launch args.

Each entry is a `Param`: name, default (whose Python type is the ROS parameter type), description,
and an optional range or set of choices. `ros_nodes.vla_node` declares every entry with a
descriptor and validates every change against it; `launch/vla.launch.py` builds its launch
arguments from the same table; tests check `config/*.yaml` and the launch file against it.

No rclpy import here: launch files and tests read the tables without a ROS installation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

ACTION_LABELS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
CAMERA_SOURCES = ("realsense", "topic", "recording")
CHUNK_MODES = ("open_loop", "ensemble")  # rlrc_runtime.chunking.MODES (tests keep them equal)
IMAGE_TRANSPORTS = ("raw", "compressed")
REALSENSE_COLOR_TOPIC = "/camera/camera/color/image_raw"
REALSENSE_INFO_TOPIC = "/camera/camera/color/camera_info"


@dataclass(frozen=True)
class Param:
    """One ROS parameter: its default fixes its type."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    """Inclusive numeric range (ints and doubles, also every element of a double array)."""
    choices: tuple[str, ...] | None = None
    """Allowed string values."""
    length: int | None = None
    """Required length of an array parameter."""
    read_only: bool = False

    @property
    def kind(self) -> str:
        """'bool' | 'int' | 'double' | 'string' | 'double_array' | 'string_array'."""
        d = self.default
        if isinstance(d, bool):
            return "bool"
        if isinstance(d, int):
            return "int"
        if isinstance(d, float):
            return "double"
        if isinstance(d, str):
            return "string"
        if isinstance(d, (list, tuple)) and all(isinstance(v, float) for v in d):
            return "double_array"
        if isinstance(d, (list, tuple)) and all(isinstance(v, str) for v in d):
            return "string_array"
        raise TypeError(f"parameter {self.name}: unsupported default {d!r}")

    def check(self, value: Any) -> str | None:
        """None if ``value`` is acceptable, else a sentence naming the parameter, value and fix."""
        kind = self.kind
        ok_type = {
            "bool": lambda v: isinstance(v, bool),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "double": lambda v: isinstance(v, float),
            "string": lambda v: isinstance(v, str),
            "double_array": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, float) for x in v),
            "string_array": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
        }[kind]
        if not ok_type(value):
            hint = " (write doubles with a decimal point, e.g. 10.0)" if kind in ("double", "double_array") else ""
            return f"parameter {self.name}={value!r}: expected type {kind}{hint}"
        if self.choices is not None and value not in self.choices:
            return f"parameter {self.name}={value!r}: expected one of {list(self.choices)}"
        if self.length is not None and len(value) != self.length:
            return f"parameter {self.name} has {len(value)} values; expected {self.length}"
        if self.range is not None:
            lo, hi = self.range
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if not (lo <= v <= hi):  # also rejects NaN
                    return f"parameter {self.name}={value!r}: expected values in [{lo}, {hi}]"
        return None


def _table(params: Sequence[Param]) -> dict[str, Param]:
    return {p.name: p for p in params}


VLA_NODE_PARAMS: dict[str, Param] = _table([
    # -- the policy ---------------------------------------------------------------------------
    Param("bundle_path", "", "Bundle or OpenVLA checkpoint directory passed to rlrc_runtime.load_policy (required)."),
    Param("backend", "auto", "Inference backend given to rlrc_runtime.load_policy: auto (checkpoints: torch; "
          "bundles: tensorrt if it has engines, else onnxruntime), torch, onnxruntime or tensorrt."),
    Param("device", "cpu", "Backend device, e.g. cpu or cuda:0."),
    Param("dtype", "float32", "Backend compute precision.", choices=("float32", "bfloat16", "float16")),
    Param("unnorm_key", "", "Dataset whose norm_stats unnormalize actions; empty = the model's only dataset."),
    Param("warmup_iterations", 1, "Inferences on a blank frame during configure, so the first real step is not slow.",
          range=(0, 100)),
    # -- the camera -----------------------------------------------------------------------------
    Param("camera_source", "topic", "Where frames come from.", choices=CAMERA_SOURCES),
    Param("image_topic", REALSENSE_COLOR_TOPIC, "Image topic read when camera_source=topic."),
    Param("image_transport", "raw", "How image_topic is encoded: raw = sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, "
          "mono8, yuv422/uyvy, yuv422_yuy2/yuyv, bayer_*8); compressed = sensor_msgs/CompressedImage, JPEG or PNG "
          "(image_transport's compressed topic, e.g. /camera/camera/color/image_raw/compressed).",
          choices=IMAGE_TRANSPORTS),
    Param("recording_path", "", "RealSense recording (.db3) replayed when camera_source=recording."),
    Param("realtime", False, "Recording pace: true = real time (latest frame only, drops counted); "
          "false = as fast as possible, every frame used once."),
    Param("realsense_serial", "", "Serial number of the RealSense to open; empty = the first one found."),
    Param("realsense_width", 640, "Colour stream width, pixels.", range=(160, 1920)),
    Param("realsense_height", 480, "Colour stream height, pixels.", range=(120, 1080)),
    Param("realsense_fps", 30, "Colour stream frame rate.", range=(1, 90)),
    Param("realsense_auto_exposure", True, "Colour sensor auto exposure."),
    Param("realsense_align_depth", False, "Also stream depth, aligned to the colour image."),
    Param("camera_timeout_ms", 2000.0, "No frame for this long while active = camera lost: hold and report.",
          range=(10.0, 600000.0)),
    Param("crop", [0.0, 0.0, 0.0, 0.0], "Optional crop [x, y, width, height] in pixels before the policy; "
          "width or height 0 = no crop.", range=(0.0, 10000.0), length=4),
    Param("jpeg_scaled_decode", True, "image_transport=compressed: decode a JPEG at 1/2, 1/4 or 1/8 size when the "
          "frame (or its crop) still has the policy's input side, as the policy's resize would discard the rest; "
          "false = always full size."),
    Param("max_image_side", 4096, "Frames wider or taller than this are rejected as malformed.", range=(16, 16384)),
    # -- instruction -----------------------------------------------------------------------------
    Param("instruction_topic", "~/instruction", "std_msgs/String topic (transient local) with the current instruction."),
    Param("instruction", "", "Initial instruction; empty = wait for the instruction topic "
          "(or the recording's sidecar instruction)."),
    Param("max_instruction_chars", 512, "Longer instructions are rejected (diagnostics) and ignored.",
          range=(1, 100000)),
    # -- timing ----------------------------------------------------------------------------------
    Param("rate_hz", 5.0, "Control rate: at most one inference started per period.", range=(0.1, 1000.0)),
    Param("deadline_ms", 1000.0, "A frame older than this (before or after inference) yields a hold, not an action; "
          "the i-th action of a chunk (from 0) may be i / rate_hz older.",
          range=(1.0, 3600000.0)),
    Param("chunk_mode", "open_loop", "How an action-chunk policy (K actions per inference) is executed: open_loop "
          "(OpenVLA-OFT: its actions in order, one per tick, re-planned after chunk_replan of them) or ensemble "
          "(ACT temporal ensembling of overlapping chunks). Ignored when K = 1.", choices=CHUNK_MODES),
    Param("chunk_replan", 0, "Actions sent between two inferences of a chunk policy; 0 = the mode's default "
          "(open_loop: K, ensemble: 1).", range=(0, 64)),
    Param("chunk_decay", 0.01, "ensemble: weight exp(-chunk_decay * i) of the i-th oldest prediction for a step.",
          range=(0.0, 10.0)),
    Param("diagnostics_period_s", 1.0, "Period of /diagnostics messages.", range=(0.05, 60.0)),
    Param("diagnostics_file", "", "Also write the latest diagnostics (level, message, values) to this JSON file, "
          "replaced atomically every diagnostics period and at shutdown, for scripts without ROS; empty = off."),
    # -- actions -> robot commands ---------------------------------------------------------------
    Param("action_frame_file", "", "Action-frame calibration YAML (calibration/action_frame.py); empty = identity."),
    Param("action_scale", [1.0] * 7, "Per-dimension factors applied to the raw action before the action frame "
          "(dx dy dz droll dpitch dyaw gripper).", range=(-100.0, 100.0), length=7),
    Param("action_period_s", 0.2, "Time one action's delta is meant to cover; twist = delta / period.",
          range=(0.001, 10.0)),
    Param("max_linear_speed", 0.25, "Clamp of each cmd_twist linear component, m/s.", range=(0.0, 10.0)),
    Param("max_angular_speed", 1.0, "Clamp of each cmd_twist angular component, rad/s.", range=(0.0, 20.0)),
    Param("gripper_limits", [0.0, 1.0], "Clamp [min, max] of the gripper command.", range=(-1000.0, 1000.0),
          length=2),
    Param("output_frame_id", "base_link", "frame_id of cmd_twist (the robot base frame MoveIt Servo expects)."),
    # -- start-up --------------------------------------------------------------------------------
    Param("autostart", False, "Configure and activate on start (a plain process needs no lifecycle manager)."),
])

SIM_ROBOT_PARAMS: dict[str, Param] = _table([
    Param("family", "pick", "Task family of the built-in tabletop suite (sim.list_families())."),
    Param("split", "id", "Split of the suite (sim.list_splits())."),
    Param("seed", 0, "Seed of the first episode; episode k uses seed + k.", range=(0, 2**31 - 1)),
    Param("episodes", 1, "Episodes to run; the node reports each and then idles.", range=(1, 100000)),
    Param("max_steps", 0, "Episode length limit in control steps; 0 = the family's default.", range=(0, 100000)),
    Param("image_size", 128, "Side of the square camera image, pixels.", range=(16, 1024)),
    Param("image_topic", REALSENSE_COLOR_TOPIC, "Where the camera image goes (realsense-ros's name by default)."),
    Param("camera_info_topic", REALSENSE_INFO_TOPIC, "Where the camera info goes."),
    Param("camera_frame_id", "camera_color_optical_frame", "frame_id of image and camera info headers."),
    Param("action_topic", "/vla_node/action", "std_msgs/Float32MultiArray action topic to follow."),
    Param("instruction_topic", "/vla_node/instruction", "Where each episode's instruction is published "
          "(transient local); empty = do not publish."),
    Param("frame_timeout_s", 5.0, "Re-publish the current frame if no action arrives for this long.",
          range=(0.01, 3600.0)),
    Param("record_path", "", "Also write the camera frames to this RealSense recording (.db3); empty = off."),
])


def parse_text(param: Param, text: str) -> Any:
    """A launch-argument string -> the parameter's typed value (raises ValueError naming the argument)."""
    kind = param.kind
    try:
        if kind == "bool":
            if text.strip().lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            value: Any = text.strip().lower() == "true"
        elif kind == "int":
            value = int(text)
        elif kind == "double":
            value = float(text)
        elif kind == "string":
            value = text
        else:
            import yaml

            loaded = yaml.safe_load(text)
            if not isinstance(loaded, list):
                raise ValueError("expected a list such as [1.0, 2.0]")
            value = [float(v) for v in loaded] if kind == "double_array" else [str(v) for v in loaded]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"launch argument {param.name}:={text!r}: {exc}") from exc
    reason = param.check(value)
    if reason is not None:
        raise ValueError(f"launch argument {param.name}:={text!r}: {reason}")
    return value
