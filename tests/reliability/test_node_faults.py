"""Faults around the VLA node: nothing unsafe reaches the arm, /diagnostics says why, the node recovers.

Real rclpy, a real tiny policy (torch backend), real RealSense recordings (pyrealsense2). Faults are
made for real where they can be (NaN in the weights, a missing or corrupt recording, a recording's
playback paused, an image topic that goes quiet) and injected through `FaultyPolicy` (the real policy
with a switch) where the real cause cannot be produced on demand (a CUDA error, a slow GPU).

Every test checks every message the node published with `ros_nodes.safety.CommandCheck`: finite,
within the command limits and the policy's action range, and (topic frames) received within the
deadline after its frame. Cases covered elsewhere and not repeated here:
tests/ros_nodes/test_vla_node.py::test_pause_stops_actions_and_stale_frames_hold (a frame already
older than its deadline), ::test_malformed_inputs_are_diagnosed_not_fatal (bad instructions and
images), ::test_non_finite_policy_output_is_never_published (norm_stats that overflow to Inf).
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros_nodes"))  # the ROS test harness

from ros_harness import (INSTRUCTION, CommandLog, FrameFeed, configure_activate, counter, make_node,  # noqa: E402
                         make_recording, node_ckpt, recording, ros, wait_for)

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

import rlrc_runtime  # noqa: E402
from rlrc_runtime.backends.base import require_finite  # noqa: E402
from rlrc_runtime.errors import NonFiniteOutputError  # noqa: E402
from rlrc_runtime.policy import InferenceResult, Policy  # noqa: E402
from ros_nodes.safety import CommandCheck, CommandLimits  # noqa: E402

__all__ = ["node_ckpt", "recording", "ros"]  # fixtures shared with tests/ros_nodes

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
TOPIC = "/test/image"


class FaultyPolicy(Policy):
    """The real policy (its backend, transforms and norm_stats) with faults a test switches on and off."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy.path, policy.config, policy.backend, policy.tokenizer, policy.image_transform)
        # "" (none), "raise" (a CUDA error), "nonfinite" (NaN logits, reported as the backends report them)
        # or "nan_action" (an action with NaN in it, which the node's own check must catch).
        self.fault = ""
        self.delay_s = 0.0  # extra seconds per step, as a throttled or shared GPU adds

    def infer(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> InferenceResult:
        time.sleep(self.delay_s)
        if self.fault == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.fault == "nonfinite":
            require_finite(np.array([0.5, np.nan], np.float32), "logits of action token 0")
        result = super().infer(image, instruction, unnorm_key)
        if self.fault == "nan_action":
            return dataclasses.replace(result, action=np.full_like(result.action, np.nan))
        return result


@pytest.fixture
def faulty() -> tuple[list[FaultyPolicy], Any]:
    """(the policies loaded so far, a policy_loader for VLANode that wraps each in FaultyPolicy)."""
    loaded: list[FaultyPolicy] = []

    def load(path: str, **kwargs: Any) -> FaultyPolicy:
        loaded.append(FaultyPolicy(rlrc_runtime.load_policy(path, **kwargs)))
        return loaded[-1]

    return loaded, load


def command_check(node: Any) -> CommandCheck:
    """The limits the node was configured with, and its policy's action range."""
    limits = CommandLimits(max_linear_speed=node.p("max_linear_speed"), max_angular_speed=node.p("max_angular_speed"),
                           gripper_limits=tuple(node.p("gripper_limits")))
    return CommandCheck.for_policy(limits, node._policy.stats(node.p("unnorm_key") or None))


def start_on_topic(ros, ckpt: Path, loader: Any = None, **params: Any) -> tuple[Any, FrameFeed, CommandLog]:
    """An active node reading TOPIC, fed fresh frames, with everything it publishes logged."""
    log = CommandLog(ros)
    node = make_node(ros, ckpt, loader, camera_source="topic", image_topic=TOPIC, instruction=INSTRUCTION,
                     rate_hz=20.0, **params)
    configure_activate(node)
    feed = FrameFeed(ros, TOPIC)
    feed.resume()
    return node, feed, log


def wait_actions(log: CommandLog, more_than: int, what: str) -> None:
    wait_for(lambda: log.n_actions() > more_than, what=what)


def wait_counter(node: Any, name: str, at_least: int) -> None:
    wait_for(lambda: counter(node, name) >= at_least, what=f"{name} >= {at_least}")


def assert_holds_only(node: Any, log: CommandLog, counter_name: str, reason: str) -> None:
    """While a fault lasts: two more failed steps, no action, only zero twists, diagnostics on it."""
    first = counter(node, counter_name)
    wait_counter(node, counter_name, first + 1)
    n_actions, n_twists = log.n_actions(), len(log.twists)
    wait_counter(node, counter_name, first + 3)
    assert log.n_actions() == n_actions, f"an action was published during '{reason}'"
    assert log.moving_twists_since(n_twists) == [], f"a non-zero twist was published during '{reason}'"
    assert node.diagnostics_values()["holding"] == reason


# -- the policy fails --------------------------------------------------------------------------------
@pytest.mark.parametrize("fault, counter_name, reason, cause", [
    ("nonfinite", "nonfinite_actions", "non-finite output", "NonFiniteOutputError: logits of action token 0"),
    ("nan_action", "nonfinite_actions", "non-finite action", "is not finite"),
    ("raise", "inference_errors", "inference failed", "RuntimeError: CUDA error"),
], ids=["nonfinite", "nan_action", "raise"])
def test_a_failing_policy_holds_says_why_and_recovers(ros, node_ckpt, faulty, fault, counter_name, reason, cause):
    policies, loader = faulty
    node, feed, log = start_on_topic(ros, node_ckpt, loader, deadline_ms=5000.0)
    wait_actions(log, 0, "a first action")
    log.wait_status(OK, what="/diagnostics OK while acting")

    policies[0].fault = fault
    assert_holds_only(node, log, counter_name, reason)
    log.wait_status(ERROR, f"holding: {reason}", cause)

    policies[0].fault = ""
    n = log.n_actions()
    wait_actions(log, n, "actions once the fault is gone")
    log.wait_status(OK, what="/diagnostics OK again")
    assert log.problems(command_check(node), deadline_ms=5000.0) == []
    ros.close(node)


def test_nan_weights_never_reach_the_arm(ros, node_ckpt, tmp_path):
    """NaN in the final norm's weight: every logit is NaN, and argmax(NaN) would be a full-scale action."""
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "nan_weights"
    shutil.copytree(node_ckpt, bad)
    shard = bad / "model.safetensors"
    tensors = load_file(shard)
    tensors["language_model.model.norm.weight"][:] = np.nan
    save_file(tensors, shard, metadata={"format": "pt"})
    with rlrc_runtime.load_policy(bad) as policy:
        try:
            policy.infer(np.zeros((48, 64, 3), np.uint8), INSTRUCTION)
        except NonFiniteOutputError:
            pass
        else:
            pytest.skip("the torch backend does not check its logits yet (issue 41, backends): NaN weights still "
                        "decode to a finite action; FaultyPolicy covers the node's side meanwhile")

    # A warm-up step finds it at configure: the node never becomes active.
    node = make_node(ros, bad, camera_source="topic", image_topic=TOPIC, instruction=INSTRUCTION, warmup_iterations=1)
    log = CommandLog(ros)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    log.wait_status(ERROR, "configure failed", "NaN or Inf")

    # Without a warm-up, every step holds.
    node.set_parameters([Parameter("warmup_iterations", value=0)])
    configure_activate(node)
    feed = FrameFeed(ros, TOPIC)
    feed.resume()
    wait_counter(node, "nonfinite_actions", 3)
    log.wait_status(ERROR, "holding: non-finite output", "NaN or Inf")
    assert log.n_actions() == 0 and log.moving_twists_since(0) == []

    # The cause goes away when the bundle does: a good one configured in its place acts again.
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    node.set_parameters([Parameter("bundle_path", value=str(node_ckpt))])
    configure_activate(node)
    wait_actions(log, 0, "actions from the good checkpoint")
    log.wait_status(OK)
    assert log.problems(command_check(node)) == []
    ros.close(node)


def test_a_missed_deadline_holds_and_recovers(ros, node_ckpt, faulty):
    """Steps slower than deadline_ms: their actions are dropped (a frame already stale before inference
    is tests/ros_nodes/test_vla_node.py::test_pause_stops_actions_and_stale_frames_hold)."""
    deadline_ms = 1000.0
    policies, loader = faulty
    node, feed, log = start_on_topic(ros, node_ckpt, loader, deadline_ms=deadline_ms)
    wait_actions(log, 0, "a first action")

    policies[0].delay_s = 1.5 * deadline_ms / 1e3
    assert_holds_only(node, log, "deadline_misses", "deadline miss")
    status = log.wait_status(WARN, "holding: deadline miss", "deadline_misses=")
    assert "> deadline_ms=1000" in status.message

    policies[0].delay_s = 0.0
    wait_actions(log, log.n_actions(), "actions once steps are fast again")
    log.wait_status(OK)
    assert log.problems(command_check(node), deadline_ms=deadline_ms) == []
    ros.close(node)


# -- the camera --------------------------------------------------------------------------------------
def test_camera_topic_vanishes_and_returns(ros, node_ckpt):
    """The camera driver stops publishing (realsense-ros crashed, a cable pulled) and comes back."""
    node, feed, log = start_on_topic(ros, node_ckpt, camera_timeout_ms=400.0, deadline_ms=5000.0)
    wait_actions(log, 0, "a first action")
    feed.pause()
    log.wait_status(ERROR, "camera lost", what="/diagnostics: camera lost")
    assert counter(node, "camera_losses") == 1 and node.diagnostics_values()["last_hold_reason"] == "camera lost"
    n_actions, n_twists = log.n_actions(), len(log.twists)
    time.sleep(0.5)
    assert log.n_actions() == n_actions and log.moving_twists_since(n_twists) == []

    feed.resume()
    wait_actions(log, n_actions, "actions once frames are back")
    log.wait_status(OK)
    assert node.diagnostics_values()["camera_lost"] == "false"
    assert log.problems(command_check(node), deadline_ms=5000.0) == []
    ros.close(node)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> tuple[Path, int]:
    return make_recording(tmp_path_factory.mktemp("rec") / "long.db3", 40)


def test_recording_playback_stalls_and_resumes(ros, node_ckpt, long_recording):
    """librealsense stops delivering frames mid-stream (the playback paused) and then goes on."""
    path, n = long_recording
    log = CommandLog(ros)
    node = make_node(ros, node_ckpt, camera_source="recording", recording_path=str(path), rate_hz=20.0,
                     camera_timeout_ms=400.0)
    configure_activate(node)
    wait_actions(log, 2, "three actions")
    node._source._playback.pause()  # the recording player's rs.playback: the device stops sending frames
    log.wait_status(ERROR, "camera lost")
    n_actions = log.n_actions()
    time.sleep(0.5)
    assert log.n_actions() == n_actions

    node._source._playback.resume()
    wait_actions(log, n_actions, "actions once playback resumes")
    wait_for(lambda: node.diagnostics_values()["recording_finished"] == "true", what="the end of the recording")
    assert log.n_actions() == n  # lossless playback: the pause neither drops nor repeats a frame
    assert log.problems(command_check(node)) == []  # recorded stamps are old: age is checked by the node
    ros.close(node)


def test_recording_end_holds_and_replays_on_reactivation(ros, node_ckpt, recording):
    """After the last frame: a hold, WARN 'recording finished', nothing more; activate again to replay.
    (One action per frame is tests/ros_nodes/test_vla_node.py::test_recording_one_valid_action_per_frame.)"""
    path, n = recording
    log = CommandLog(ros)
    node = make_node(ros, node_ckpt, camera_source="recording", recording_path=str(path))
    configure_activate(node)
    status = log.wait_status(WARN, "holding: recording finished")
    assert log.n_actions() == n and "last error" not in status.message
    time.sleep(0.5)
    assert log.n_actions() == n

    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    wait_for(lambda: log.n_actions() == 2 * n, what="the replayed recording's actions")
    log.wait_status(WARN, "holding: recording finished")
    assert log.problems(command_check(node)) == []
    ros.close(node)


# -- lifecycle failures --------------------------------------------------------------------------------
def _corrupt(tmp_path: Path, recording: tuple[Path, int], how: str) -> tuple[str, dict[str, Any]]:
    """(the cause /diagnostics must name, node parameters) of a broken camera source."""
    if how == "no camera":
        pytest.importorskip("pyrealsense2")
        from rlrc_runtime.camera import list_devices

        if list_devices():
            pytest.skip("a RealSense is connected to this machine")
        return "no RealSense camera found", {"camera_source": "realsense"}
    path = tmp_path / "broken.db3"
    if how == "truncated recording":
        data = recording[0].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "corrupt recording":
        path.write_bytes(b"not a rosbag2 database" * 64)
    cause = "does not exist" if how == "missing recording" else "cannot open recording"
    return cause, {"camera_source": "recording", "recording_path": str(path)}


@pytest.mark.parametrize("how", ["no camera", "missing recording", "corrupt recording", "truncated recording"])
def test_failed_activation_is_an_error_with_its_cause(ros, node_ckpt, recording, tmp_path, how):
    cause, params = _corrupt(tmp_path, recording, how)
    log = CommandLog(ros)
    node = make_node(ros, node_ckpt, **params)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
    status = log.wait_status(ERROR, "activate failed", cause)
    assert node.diagnostics_values()["last_error"].startswith("activate: ")
    assert log.n_actions() == 0 and status.hardware_id != "none"

    node.set_parameters([Parameter("camera_source", value="recording"),
                         Parameter("recording_path", value=str(recording[0]))])
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    wait_for(lambda: log.status().level != ERROR, what="/diagnostics to leave ERROR after a good activation")
    ros.close(node)


def test_unexpected_configure_exception_is_logged_and_diagnosed(ros, node_ckpt, capfd):
    """An exception outside the expected error types (here the first load raises RuntimeError, as a CUDA
    driver fault does): rclpy would turn it into a silent ERROR transition."""
    calls = []

    def loader(path: str, **kwargs: Any) -> Policy:
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("CUDA driver initialization failed")
        return rlrc_runtime.load_policy(path, **kwargs)

    log = CommandLog(ros)
    node = make_node(ros, node_ckpt, loader, camera_source="topic", image_topic=TOPIC)
    assert node.trigger_configure() == TransitionCallbackReturn.ERROR
    assert node._state_machine.current_state[1] == "unconfigured"  # on_error released everything
    assert node.diagnostics_values()["last_error"] == "configure: RuntimeError: CUDA driver initialization failed"
    log.wait_status(ERROR, "error", "RuntimeError: CUDA driver initialization failed")
    logged = capfd.readouterr().err
    assert "configure failed unexpectedly: RuntimeError: CUDA driver initialization failed" in logged
    assert "Traceback" in logged

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    wait_for(lambda: log.status().level == OK, what="/diagnostics OK after a good configure")
    ros.close(node)
