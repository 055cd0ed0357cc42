"""The VLA lifecycle node with real rclpy, a real tiny policy and real RealSense recordings."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

from ros_harness import (INSTRUCTION, WAIT_S, configure_activate, counter, image_msg, make_node,  # noqa: E402
                         make_recording, publish_until, wait_for)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from lifecycle_msgs.msg import State as StateMsg  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool, Float32MultiArray, Float64, String  # noqa: E402

from ros_nodes.params import VLA_NODE_PARAMS  # noqa: E402
from ros_nodes.vla_node import VLANode  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def state_id(node: VLANode) -> int:
    return node._state_machine.current_state[0]


def test_recording_one_valid_action_per_frame(ros, node_ckpt, recording):
    path, n = recording
    actions = ros.record(Float32MultiArray, "/vla_node/action")
    twists = ros.record(TwistStamped, "/vla_node/cmd_twist")
    grippers = ros.record(Float64, "/vla_node/gripper")
    diags = ros.record(DiagnosticArray, "/diagnostics")
    node = make_node(ros, node_ckpt, camera_source="recording", recording_path=str(path), autostart=True)
    assert node.autostart_if_requested()
    wait_for(lambda: node.diagnostics_values()["recording_finished"] == "true", what="the recording to finish")
    wait_for(lambda: len(actions) == n, what=f"{n} actions")
    time.sleep(0.3)
    assert len(actions) == n, "exactly one action per recorded frame"
    for msg in actions:
        assert len(msg.data) == 7 and all(math.isfinite(v) for v in msg.data)
        assert msg.layout.dim[0].label == "dx,dy,dz,droll,dpitch,dyaw,gripper" and msg.layout.dim[0].size == 7
    assert len(twists) >= n and len(grippers) >= n
    assert all(0.0 <= g.data <= 1.0 for g in grippers)
    assert twists[0].header.frame_id == "base_link"
    values = node.diagnostics_values()
    assert values["instruction"] == INSTRUCTION  # from the recording's sidecar
    assert values["frames_dropped"] == "0" and values["frames_used"] == str(n)
    wait_for(lambda: any(s.name == "vla_node: policy" and any(kv.key == "latency_ms.total.p99" for kv in s.values)
                         for d in diags for s in d.status), what="diagnostics with latency percentiles")
    status = [s for d in diags for s in d.status if s.name == "vla_node: policy"][-1]
    keys = {kv.key for kv in status.values}
    for stage in ("preprocess", "vision", "llm", "decode", "total"):
        assert {f"latency_ms.{stage}.p50", f"latency_ms.{stage}.p95", f"latency_ms.{stage}.p99"} <= keys
    assert {"achieved_rate_hz", "frames_dropped", "deadline_misses", "backend", "bundle_id"} <= keys
    ros.close(node)


def test_lifecycle_transitions_and_hold_on_deactivate(ros, node_ckpt, tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn

    twists = ros.record(TwistStamped, "/vla_node/cmd_twist")
    node = make_node(ros, node_ckpt, camera_source="topic", image_topic="/test/image")
    assert state_id(node) == StateMsg.PRIMARY_STATE_UNCONFIGURED
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert state_id(node) == StateMsg.PRIMARY_STATE_INACTIVE and node._policy is not None
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert state_id(node) == StateMsg.PRIMARY_STATE_ACTIVE
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert state_id(node) == StateMsg.PRIMARY_STATE_INACTIVE
    wait_for(lambda: len(twists) >= 1, what="the hold published on deactivate")
    hold = twists[-1].twist
    assert (hold.linear.x, hold.linear.y, hold.linear.z, hold.angular.x, hold.angular.y, hold.angular.z) == (0,) * 6
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert state_id(node) == StateMsg.PRIMARY_STATE_UNCONFIGURED and node._policy is None
    # a broken bundle: configure fails, diagnostics say why, the node lives on
    node.set_parameters([Parameter("bundle_path", value=str(tmp_path / "missing"))])
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert state_id(node) == StateMsg.PRIMARY_STATE_UNCONFIGURED
    assert "configure" in node.diagnostics_values()["last_error"]
    node.set_parameters([Parameter("bundle_path", value=str(node_ckpt))])
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert state_id(node) == StateMsg.PRIMARY_STATE_FINALIZED
    ros.close(node)


def test_parameters_declared_with_descriptors_and_validated(ros, node_ckpt):
    node = make_node(ros, node_ckpt)
    for name, spec in VLA_NODE_PARAMS.items():
        desc = node.describe_parameter(name)
        assert desc.description == spec.description
        value = node.get_parameter(name).value
        assert spec.check(list(value) if spec.kind.endswith("array") else value) is None, name
    assert node.describe_parameter("rate_hz").floating_point_range[0].to_value == VLA_NODE_PARAMS["rate_hz"].range[1]
    bad = [("camera_source", "webcam"), ("rate_hz", 0.0), ("rate_hz", 10), ("crop", [0.0, 1.0]),
           ("dtype", "int4"), ("max_instruction_chars", 0)]
    for name, value in bad:
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, (name, value)
    assert node.set_parameters([Parameter("camera_source", value="recording")])[0].successful
    ros.close(node)


def test_pause_stops_actions_and_stale_frames_hold(ros, node_ckpt):
    actions = ros.record(Float32MultiArray, "/vla_node/action")
    twists = ros.record(TwistStamped, "/vla_node/cmd_twist")
    node = make_node(ros, node_ckpt, camera_source="topic", image_topic="/test/image", deadline_ms=20000.0)
    image_pub = ros.helper.create_publisher(Image, "/test/image", qos_profile_sensor_data)
    instr_pub = ros.publisher(String, "/vla_node/instruction", latched=True)
    pause_pub = ros.publisher(Bool, "/vla_node/pause")
    instr_pub.publish(String(data=INSTRUCTION))  # latched: reaches the node when it subscribes in configure
    configure_activate(node)
    wait_for(lambda: node.diagnostics_values()["instruction"] == INSTRUCTION, what="the latched instruction")
    wait_for(lambda: image_pub.get_subscription_count() > 0 and pause_pub.get_subscription_count() > 0,
             what="subscriptions to match")
    clock = ros.helper.get_clock()
    publish_until(image_pub, lambda: image_msg(clock), lambda: len(actions) >= 1, "a first action")

    # pause: a hold now, no action afterwards, even for fresh frames
    holds_before = counter(node, "holds_published")
    pause_pub.publish(Bool(data=True))
    wait_for(lambda: node.diagnostics_values()["paused"] == "true", what="pause")
    wait_for(lambda: node.diagnostics_values()["inference_in_flight"] == "false", what="the in-flight step")
    n_paused = len(actions)
    assert counter(node, "holds_published") > holds_before
    for _ in range(4):
        image_pub.publish(image_msg(clock))
        time.sleep(0.3)
    assert len(actions) == n_paused, "no action may be published while paused"

    # resume, then a frame older than the deadline: a hold and a count, not an action
    pause_pub.publish(Bool(data=False))
    wait_for(lambda: node.diagnostics_values()["paused"] == "false", what="resume")
    n_before, stale_before = len(actions), counter(node, "stale_frames")
    publish_until(image_pub, lambda: image_msg(clock, stamp_offset_s=-60.0),
                   lambda: counter(node, "stale_frames") > stale_before, "a stale-frame hold")
    time.sleep(0.5)
    assert len(actions) == n_before
    assert node.diagnostics_values()["last_hold_reason"] in ("stale frame",)
    zero = twists[-1].twist
    assert (zero.linear.x, zero.linear.y, zero.linear.z) == (0.0, 0.0, 0.0)
    # a fresh frame works again
    publish_until(image_pub, lambda: image_msg(clock), lambda: len(actions) > n_before, "actions to resume")
    ros.close(node)


def test_malformed_inputs_are_diagnosed_not_fatal(ros, node_ckpt):
    actions = ros.record(Float32MultiArray, "/vla_node/action")
    node = make_node(ros, node_ckpt, camera_source="topic", image_topic="/test/image", max_instruction_chars=64)
    image_pub = ros.helper.create_publisher(Image, "/test/image", qos_profile_sensor_data)
    instr_pub = ros.publisher(String, "/vla_node/instruction", latched=True)
    configure_activate(node)
    wait_for(lambda: image_pub.get_subscription_count() > 0 and instr_pub.get_subscription_count() > 0,
             what="subscriptions to match")
    clock = ros.helper.get_clock()

    def errors() -> int:
        return counter(node, "input_errors")

    for text in ("", "   ", "x" * 10_000):
        before = errors()
        instr_pub.publish(String(data=text))
        wait_for(lambda: errors() > before, what=f"an input error for instruction of {len(text)} chars")
        assert node.diagnostics_values()["instruction"] == ""
    instr_pub.publish(String(data=INSTRUCTION))
    wait_for(lambda: node.diagnostics_values()["instruction"] == INSTRUCTION, what="a valid instruction")

    bad_encoding = image_msg(clock, encoding="mono16")
    short = image_msg(clock)
    short.data = bytes(short.data)[:100]
    huge = image_msg(clock)
    huge.height = 100_000
    zero = image_msg(clock)
    zero.width = 0
    for msg in (bad_encoding, short, huge, zero):
        before = errors()
        publish_until(image_pub, lambda m=msg: m, lambda: errors() > before, f"input error for {msg.encoding}")
    assert "encoding" in node.diagnostics_values()["last_error"] or errors() >= 4
    assert len(actions) == 0
    publish_until(image_pub, lambda: image_msg(clock), lambda: len(actions) >= 1, "an action after bad input")
    ros.close(node)


def test_non_finite_policy_output_is_never_published(ros, node_ckpt, tmp_path):
    """A real Policy whose checkpoint's norm_stats overflow float32: its actions are +-inf."""
    ckpt = tmp_path / "overflow"
    shutil.copytree(node_ckpt, ckpt)
    for name in ("config.json", "dataset_statistics.json"):
        path = ckpt / name
        data = json.loads(path.read_text())
        stats = data["norm_stats"] if name == "config.json" else data
        for entry in stats.values():
            entry["action"]["q01"] = [-1e300] * 7
            entry["action"]["q99"] = [1e300] * 7
            entry["action"]["mask"] = [True] * 7
        path.write_text(json.dumps(data))
    actions = ros.record(Float32MultiArray, "/vla_node/action")
    twists = ros.record(TwistStamped, "/vla_node/cmd_twist")
    grippers = ros.record(Float64, "/vla_node/gripper")
    node = make_node(ros, ckpt, camera_source="topic", image_topic="/test/image", instruction=INSTRUCTION)
    image_pub = ros.helper.create_publisher(Image, "/test/image", qos_profile_sensor_data)
    configure_activate(node)
    wait_for(lambda: image_pub.get_subscription_count() > 0, what="the image subscription")
    clock = ros.helper.get_clock()

    def rejected() -> int:
        return counter(node, "nonfinite_actions") + counter(node, "inference_errors")

    publish_until(image_pub, lambda: image_msg(clock), lambda: rejected() >= 2, "two rejected actions")
    time.sleep(0.3)
    assert actions == [] and grippers == []
    assert twists and all(t.twist.linear.x == 0.0 and t.twist.angular.z == 0.0 for t in twists)
    for t in twists:
        v = t.twist
        assert all(math.isfinite(x) for x in (v.linear.x, v.linear.y, v.linear.z, v.angular.x, v.angular.y, v.angular.z))
    assert "non-finite" in node.diagnostics_values()["last_error"]
    ros.close(node)


def test_rlrc_node_entry_point_runs_as_a_plain_process(ros, node_ckpt, tmp_path):
    # 40 frames, not 4: the process plays them before this test's subscription may have discovered its
    # publisher, and 4 frames at 50 Hz can all go out in that time.
    path, n = make_recording(tmp_path / "frames.db3", 40)
    exe = Path(sys.executable).with_name("rlrc-node")
    if not exe.exists():
        pytest.skip("rlrc-node is not installed in this environment (pip install -e .)")
    actions = ros.record(Float32MultiArray, "/vla_node/action")
    diags = ros.record(DiagnosticArray, "/diagnostics")
    env = dict(os.environ)
    # Started with SIGINT ignored, as `rlrc-node &` in a script (or a CI job run in the background) starts
    # it: the node must still stop on SIGINT.
    proc = subprocess.Popen(
        [str(exe), "--ros-args", "-p", f"bundle_path:={node_ckpt}", "-p", "camera_source:=recording",
         "-p", f"recording_path:={path}", "-p", "autostart:=true", "-p", "rate_hz:=50.0",
         "-p", "deadline_ms:=600000.0", "-p", "warmup_iterations:=0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))

    def node_values() -> dict[str, str]:
        own = [s for d in list(diags) for s in d.status if s.name == "vla_node: policy"]
        return {kv.key: kv.value for kv in own[-1].values} if own else {}

    try:
        try:
            wait_for(lambda: node_values().get("recording_finished") == "true" or proc.poll() is not None,
                     timeout=WAIT_S + 60, what="the rlrc-node process to play its recording")
        except AssertionError as exc:  # say how far it got and what the node printed
            proc.kill()
            raise AssertionError(f"{exc}; received {len(actions)} of {n} actions; node output:\n"
                                 f"{proc.communicate(timeout=30)[0][-3000:]}") from None
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
        assert node_values()["actions_published"] == str(n), "exactly one action per recorded frame"
        # The action topic is volatile (a late subscriber must never get an old action), so the first
        # actions can go out before this process has discovered the node's new publisher.
        assert 1 <= len(actions) <= n, f"received {len(actions)} of the {n} published actions"
        assert all(len(m.data) == 7 and all(math.isfinite(v) for v in m.data) for m in actions)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]
    assert "active: camera_source=recording" in out


def test_a_serial_of_digits_read_as_a_number_is_a_clear_error():
    """ROS reads `-p realsense_serial:=012345678901` as an integer (dropping the 0): the node says how to quote it."""
    out = subprocess.run([sys.executable, "-m", "ros_nodes.vla_node", "--ros-args", "-p", "realsense_serial:=012345"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "parameter realsense_serial must be a string" in out.stderr
    assert "-p realsense_serial:=\"'012345678901'\"" in out.stderr
    assert "Traceback" not in out.stderr
