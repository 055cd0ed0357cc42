"""Launch the VLA node; optionally realsense-ros's camera node, or the simulated robot for a demo.

    ros2 launch rlrc_runtime vla.launch.py bundle_path:=/opt/bundles/my_bundle
    ros2 launch rlrc_runtime vla.launch.py bundle_path:=B camera_source:=topic launch_realsense:=true
    ros2 launch rlrc_runtime vla.launch.py bundle_path:=B sim:=true sim_family:=pick sim_episodes:=10

Parameters come from ``params_file`` (default: this package's config/vla_node.yaml); every VLA
node argument below left empty keeps the file's value, a non-empty one overrides it. The
arguments and their descriptions come from the node's own parameter table
(ros_nodes/params.py), so they cannot drift from what the node declares.

Camera choices: ``camera_source:=realsense`` (the VLA node opens the camera itself with
pyrealsense2), or ``camera_source:=topic`` + ``launch_realsense:=true`` (realsense-ros publishes,
the node subscribes), or ``camera_source:=recording recording_path:=R``; ``sim:=true`` forces the
topic source wired to the simulated robot.
"""
from __future__ import annotations

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import LifecycleNode, Node

from ros_nodes.params import REALSENSE_COLOR_TOPIC, SIM_ROBOT_PARAMS, VLA_NODE_PARAMS, parse_text

PACKAGE = "rlrc_runtime"
# installed: share/rlrc_runtime/launch/ -> share/rlrc_runtime/config/; in the source tree: launch/ -> config/
DEFAULT_PARAMS_FILE = str(Path(__file__).resolve().parents[1] / "config" / "vla_node.yaml")

# VLA node parameters exposed as launch arguments (the rest stay in the params file).
VLA_ARGS = ("bundle_path", "backend", "device", "dtype", "unnorm_key", "camera_source", "recording_path", "realtime",
            "image_topic", "image_transport", "instruction_topic", "instruction", "realsense_serial", "realsense_width",
            "realsense_height", "realsense_fps", "rate_hz", "deadline_ms", "action_frame_file", "output_frame_id",
            "autostart")
# Sim robot parameters exposed as sim_<name> launch arguments.
SIM_ARGS = ("family", "split", "seed", "episodes", "max_steps", "image_size", "record_path")

OTHER_ARGS = {
    "params_file": (DEFAULT_PARAMS_FILE, "VLA node parameters YAML (ros__parameters under vla_node)."),
    "namespace": ("", "Namespace of the VLA node (topics become /<ns>/vla_node/...)."),
    "launch_realsense": ("false", "Also start realsense-ros (realsense2_camera_node as /camera/camera); "
                                  "use with camera_source:=topic."),
    "sim": ("false", "Also start the simulated robot (MuJoCo tabletop) and wire it to the VLA node."),
    "log_level": ("info", "Log level of the started nodes."),
}


def _flag(context, name: str) -> bool:
    value = context.launch_configurations.get(name, OTHER_ARGS[name][0]).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={value!r}: expected true or false")
    return value == "true"


def _overrides(context, table, names, prefix: str = "") -> dict:
    """Non-empty launch arguments -> typed parameter values (empty = keep the params file's value)."""
    out = {}
    for name in names:
        text = context.launch_configurations.get(prefix + name, "")
        if text != "":
            out[name] = parse_text(table[name], text)
    return out


def _nodes(context, *args, **kwargs):
    get = context.launch_configurations.get
    params_file = get("params_file", DEFAULT_PARAMS_FILE) or DEFAULT_PARAMS_FILE
    namespace = get("namespace", "")
    log_args = ["--ros-args", "--log-level", get("log_level", "info")]
    overrides = _overrides(context, VLA_NODE_PARAMS, VLA_ARGS)
    actions = []
    if _flag(context, "sim"):
        sim = _overrides(context, SIM_ROBOT_PARAMS, SIM_ARGS, prefix="sim_")
        vla_ns = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
        sim.update({"image_topic": REALSENSE_COLOR_TOPIC, "action_topic": f"{vla_ns}/vla_node/action",
                    "instruction_topic": f"{vla_ns}/vla_node/instruction"})
        overrides.update({"camera_source": "topic", "image_topic": REALSENSE_COLOR_TOPIC})
        actions.append(Node(package=PACKAGE, executable="sim_robot_node", name="sim_robot", output="screen",
                            parameters=[sim], arguments=log_args))
    if _flag(context, "launch_realsense"):
        actions.append(Node(
            package="realsense2_camera", executable="realsense2_camera_node", namespace="camera", name="camera",
            output="screen",
            parameters=[{"enable_color": True, "enable_depth": False, "rgb_camera.color_format": "RGB8",
                         "rgb_camera.color_profile": "640,480,30"}]))
    actions.append(LifecycleNode(package=PACKAGE, executable="vla_node", name="vla_node", namespace=namespace,
                                 output="screen", parameters=[params_file, overrides], arguments=log_args))
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = []
    for name, (default, description) in OTHER_ARGS.items():
        declared.append(DeclareLaunchArgument(name, default_value=default, description=description))
    for name in VLA_ARGS:
        p = VLA_NODE_PARAMS[name]
        extra = f" One of: {', '.join(p.choices)}." if p.choices else ""
        declared.append(DeclareLaunchArgument(
            name, default_value="", description=f"{p.description}{extra} Empty = the params file's value."))
    for name in SIM_ARGS:
        p = SIM_ROBOT_PARAMS[name]
        declared.append(DeclareLaunchArgument(
            f"sim_{name}", default_value="", description=f"Sim robot: {p.description} Empty = {p.default!r}."))
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
