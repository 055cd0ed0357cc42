"""Launch files and params YAML, checked without `launch`/`launch_ros` (not installable here).

1. Every launch file parses (ast) and every Node it names with a literal `executable=` is a
   console_scripts entry point of setup.py (or a known external package's executable).
2. The launch description is then *built* with small stand-ins for the launch API, for several
   argument combinations; every node it starts is ours or known, and every parameter it sets is
   declared by that node with a compatible type (ros_nodes.params is what the nodes declare; the
   ROS test in test_vla_node.py checks the node declares exactly that table).
3. config/*.yaml only holds declared parameters with compatible types.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from ros_nodes.params import SIM_ROBOT_PARAMS, VLA_NODE_PARAMS, parse_text

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
NODE_TABLES = {"vla_node": VLA_NODE_PARAMS, "sim_robot_node": SIM_ROBOT_PARAMS}
# External executables a launch file may start, with the parameters we set on them.
EXTERNAL = {("realsense2_camera", "realsense2_camera_node"): {"enable_color", "enable_depth", "rgb_camera.color_format",
                                                               "rgb_camera.color_profile"}}


def console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = ast.literal_eval(value)
                    return dict(tuple(s.strip() for s in e.split("=", 1)) for e in entries)
    raise AssertionError("setup.py has no console_scripts")


def test_there_is_a_launch_file():
    assert [p.name for p in LAUNCH_FILES] == ["vla.launch.py"]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_parses_and_names_installed_executables(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names
    scripts = console_scripts()
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}

    def literal(node):
        return constants[node.id] if isinstance(node, ast.Name) else ast.literal_eval(node)

    seen = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) in ("Node", "LifecycleNode"):
            kw = {k.arg: k.value for k in call.keywords}
            package, executable = literal(kw["package"]), literal(kw["executable"])
            seen.append(executable)
            if package == "rlrc_runtime":
                assert executable in scripts, f"{path.name}: {executable} is not a console_scripts entry point"
                module = scripts[executable].split(":")[0]
                assert importlib.util.find_spec(module) is not None, module
            else:
                assert (package, executable) in EXTERNAL, f"{path.name}: unknown node {package}/{executable}"
    assert "vla_node" in seen


# -- building the launch description with stand-ins ------------------------------------------------
class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(_Recorded):
    pass


class OpaqueFunction(_Recorded):
    pass


class Node(_Recorded):
    pass


class LifecycleNode(_Recorded):
    pass


class LaunchDescription(_Recorded):
    pass


class _Context:
    def __init__(self, configurations):
        self.launch_configurations = configurations


@pytest.fixture
def launch_stubs(monkeypatch):
    modules = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "OpaqueFunction": OpaqueFunction},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node, "LifecycleNode": LifecycleNode},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)


def build(path: Path, **args: str):
    """Run generate_launch_description + its OpaqueFunction with launch arguments ``args``."""
    spec = importlib.util.spec_from_file_location(f"launch_under_test_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {a.args[0]: a.kwargs for a in description.args[0] if isinstance(a, DeclareLaunchArgument)}
    unknown = set(args) - set(declared)
    assert not unknown, f"not launch arguments: {unknown}"
    config = {name: kw["default_value"] for name, kw in declared.items()}
    config.update(args)
    nodes = []
    for action in description.args[0]:
        if isinstance(action, OpaqueFunction):
            nodes += action.kwargs["function"](_Context(config))
    return declared, nodes


def params_of(node) -> dict:
    """Merge a Node's parameters list: YAML files (our /**/name layout) then dicts."""
    merged = {}
    for entry in node.kwargs.get("parameters", []):
        if isinstance(entry, (str, Path)):
            data = yaml.safe_load(Path(entry).read_text())
            for key, section in data.items():
                if key.split("/")[-1] == node.kwargs["name"]:
                    merged.update(section["ros__parameters"])
        else:
            merged.update(entry)
    return merged


def check_node(node) -> None:
    package, executable = node.kwargs["package"], node.kwargs["executable"]
    params = params_of(node)
    if package != "rlrc_runtime":
        assert (package, executable) in EXTERNAL
        assert set(params) <= EXTERNAL[(package, executable)]
        return
    assert executable in console_scripts()
    table = NODE_TABLES[executable]
    for name, value in params.items():
        assert name in table, f"{executable} does not declare parameter {name!r}"
        reason = table[name].check(value)
        assert reason is None, f"{executable}: {reason}"


COMBOS = [
    {"bundle_path": "/opt/bundles/b"},
    {"bundle_path": "/b", "camera_source": "topic", "launch_realsense": "true", "rate_hz": "10", "realtime": "true"},
    {"bundle_path": "/b", "camera_source": "recording", "recording_path": "/r.db3", "realsense_serial": "012345678901",
     "deadline_ms": "250", "autostart": "false", "namespace": "robot1"},
    {"bundle_path": "/b", "sim": "true", "sim_family": "push", "sim_episodes": "3", "sim_max_steps": "50"},
]


@pytest.mark.parametrize("args", COMBOS, ids=lambda a: ",".join(sorted(a)))
def test_launch_builds_nodes_with_declared_parameters(launch_stubs, args):
    declared, nodes = build(ROOT / "launch" / "vla.launch.py", **args)
    for name, kw in declared.items():
        assert kw.get("description"), f"launch argument {name} has no description"
    for node in nodes:
        check_node(node)
    vla = [n for n in nodes if n.kwargs["executable"] == "vla_node"]
    assert len(vla) == 1 and vla[0].kwargs["name"] == "vla_node"
    params = params_of(vla[0])
    assert params["bundle_path"] == args["bundle_path"]
    if "realsense_serial" in args:
        assert params["realsense_serial"] == "012345678901"  # a string, not an int
    if args.get("sim") == "true":
        sim = [n for n in nodes if n.kwargs["executable"] == "sim_robot_node"]
        assert len(sim) == 1 and params["camera_source"] == "topic"
        assert params_of(sim[0])["image_topic"] == params["image_topic"]
        assert params_of(sim[0])["action_topic"] == "/vla_node/action"
    if args.get("launch_realsense") == "true":
        assert any(n.kwargs["package"] == "realsense2_camera" for n in nodes)


def test_bad_launch_values_are_rejected_with_the_argument_name(launch_stubs):
    with pytest.raises(ValueError, match="camera_source"):
        build(ROOT / "launch" / "vla.launch.py", bundle_path="/b", camera_source="webcam")
    with pytest.raises(ValueError, match="rate_hz"):
        build(ROOT / "launch" / "vla.launch.py", bundle_path="/b", rate_hz="fast")


def test_params_yaml_only_holds_declared_parameters():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for key, section in data.items():
            node = key.split("/")[-1]
            table = {"vla_node": VLA_NODE_PARAMS, "sim_robot": SIM_ROBOT_PARAMS}[node]
            for name, value in section["ros__parameters"].items():
                assert name in table, f"{path.name}: {node} does not declare {name!r}"
                assert table[name].check(value) is None, table[name].check(value)


def test_parse_text_types():
    assert parse_text(VLA_NODE_PARAMS["rate_hz"], "10") == 10.0
    assert parse_text(VLA_NODE_PARAMS["realtime"], "True") is True
    assert parse_text(VLA_NODE_PARAMS["crop"], "[0, 0, 10, 10]") == [0.0, 0.0, 10.0, 10.0]
    with pytest.raises(ValueError, match="realtime"):
        parse_text(VLA_NODE_PARAMS["realtime"], "yes please")
    with pytest.raises(ValueError, match="rate_hz"):
        parse_text(VLA_NODE_PARAMS["rate_hz"], "0")
