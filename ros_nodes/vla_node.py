"""The VLA lifecycle node: camera frames + instruction -> policy -> arm commands + diagnostics.

Lifecycle (rclpy managed node, `ros2 lifecycle set /vla_node configure|activate|...`):
    configure  -> load the policy (rlrc_runtime.load_policy), warm it up, create publishers and
                  the instruction / pause subscriptions
    activate   -> start the camera source and the control timer
    deactivate -> stop the camera, drop any in-flight result, publish a hold command
    cleanup    -> release the policy, publishers and subscriptions
    shutdown   -> deactivate + cleanup, whatever the state

Topics (relative names resolve under the node, e.g. /vla_node/action):
    in   ~/instruction  std_msgs/String  (reliable, transient local: a late node gets the current one)
    in   ~/pause        std_msgs/Bool    (true = pause / e-stop: hold now, no actions until false)
    in   image_topic    sensor_msgs/Image, or sensor_msgs/CompressedImage with image_transport=compressed
                        (camera_source=topic; sensor-data QoS; latest frame only; encodings: ros_nodes/images.py)
    out  ~/action       std_msgs/Float32MultiArray: data = [dx, dy, dz, droll, dpitch, dyaw, gripper],
                        the policy's raw unnormalized action (policy frame, dataset units; bounded
                        by the dataset's q01/q99 by construction, never NaN/Inf); layout.dim[0]
                        = {label: "dx,dy,dz,droll,dpitch,dyaw,gripper", size: 7, stride: 7}.
                        Published only for accepted actions, never for holds.
    out  ~/cmd_twist    geometry_msgs/TwistStamped: end-effector velocity in output_frame_id
                        (action frame calibration + action_scale, / action_period_s, clamped);
                        header.stamp = the frame's capture time. A hold is a zero twist stamped now.
    out  ~/gripper      std_msgs/Float64: gripper command within gripper_limits; a hold repeats the
                        last command (never opens the hand by itself).
    out  /diagnostics   diagnostic_msgs/DiagnosticArray, one status "vla_node: policy": level ERROR while the
                        node cannot act (a failed configure/activate, camera lost, the policy raising or
                        producing NaN/Inf), WARN while it holds for a passing reason (stale frame, deadline
                        miss, bad input, recording finished) or waits (paused, no instruction), else OK;
                        the message says why ("holding: <reason>", counters, "last error: ...").

Nothing unsafe goes out: a step that raises, yields NaN/Inf, or ends after ``deadline_ms`` becomes a
hold (zero twist, the last gripper command again), never an action.

Action chunks: a policy with K > 1 actions per inference (OpenVLA-OFT parallel decoding) is run by
an rlrc_runtime.chunking.ChunkExecutor: each tick sends the chunk's next action (chunk_mode
open_loop) or the ensemble of every chunk covering the step (ensemble), and a new inference starts
every chunk_replan ticks. While it runs the ticks keep sending what earlier chunks planned (when
none covers a step, the node waits for the inference), and the new chunk is aligned to the step its
frame was taken at, so its first actions may already be past. The i-th action of a chunk must leave within deadline_ms + i / rate_hz of
its frame, or the rest of the chunk is dropped with a hold. A new instruction, a pause, a
deactivation or any hold discards the planned actions. Latency figures stay per inference (one per
chunk); /diagnostics adds action_chunk, chunk_mode, inferences and inference_rate_hz beside the
action rate (achieved_rate_hz).

Threads: the executor thread runs callbacks only (they never block); one worker thread runs
`Policy.infer` (one inference in flight); librealsense threads only put frames in a FrameSlot.
"""
from __future__ import annotations

import hashlib
import json
import signal
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float32MultiArray, Float64, MultiArrayDimension, String

import rlrc_runtime
from calibration.action_frame import ActionFrame, load_action_frame
from rlrc_runtime.camera import (CameraError, Frame, FrameSlot, RealSenseCamera, RealSenseConfig, RecordingPlayer,
                                 read_sidecar)
from rlrc_runtime.chunking import ChunkExecution, ChunkExecutor
from rlrc_runtime.errors import ConfigError, InputError, NonFiniteOutputError, RLRCError
from rlrc_runtime.metrics import LatencyWindow
from ros_nodes.images import crop_image, decode_compressed, image_msg_to_rgb, require_opencv
from ros_nodes.params import ACTION_LABELS, VLA_NODE_PARAMS, Param
from ros_nodes.safety import ActionPipeline, CommandLimits

NODE_NAME = "vla_node"
DIAG_NAME = "vla_node: policy"
_PTYPE = {
    "bool": Parameter.Type.BOOL,
    "int": Parameter.Type.INTEGER,
    "double": Parameter.Type.DOUBLE,
    "string": Parameter.Type.STRING,
    "double_array": Parameter.Type.DOUBLE_ARRAY,
    "string_array": Parameter.Type.STRING_ARRAY,
}
COUNTERS = ("frames_received", "frames_dropped", "frames_used", "inferences", "actions_published", "holds_published",
            "stale_frames", "deadline_misses", "nonfinite_actions", "inference_errors", "input_errors",
            "camera_losses")
# Why the node is holding, and how loud /diagnostics is while it holds for that reason (until the next
# published action). Holds not listed (paused, deactivated) are the operator's choice, not a fault.
HOLD_LEVELS = {
    "non-finite output": "error", "non-finite action": "error", "inference failed": "error", "camera lost": "error",
    "stale frame": "warn", "deadline miss": "warn", "unreadable frame": "warn", "malformed input": "warn",
    "rejected instruction": "warn", "recording finished": "warn",
}
FAILED_STATES = ("configure failed", "activate failed", "error")


def descriptor(p: Param) -> ParameterDescriptor:
    """The ROS descriptor of a table entry: type, description, range, read-only flag."""
    d = ParameterDescriptor(name=p.name, type=int(_PTYPE[p.kind].value), description=p.description,
                            read_only=p.read_only)
    if p.choices:
        d.additional_constraints = f"one of: {', '.join(p.choices)}"
    if p.length:
        d.additional_constraints = f"exactly {p.length} values"
    if p.range is not None and p.kind == "int":
        d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    elif p.range is not None and p.kind == "double":
        d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]), step=0.0)]
    return d


def declare_table(node: Any, table: dict[str, Param]) -> None:
    """Declare every entry; an override of the wrong type is a ConfigError naming the parameter and the fix."""
    from rclpy.exceptions import InvalidParameterTypeException

    for p in table.values():
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        try:
            node.declare_parameter(p.name, default, descriptor(p))
        except InvalidParameterTypeException as exc:
            hint = (f"; ROS reads a value of digits as a number (and drops leading zeros): quote it, e.g. "
                    f"-p {p.name}:=\"'012345678901'\"" if p.kind == "string" else "")
            raise ConfigError(f"parameter {p.name} must be a {p.kind.replace('_', ' ')} ({exc}){hint}") from None


def validate_parameters(table: dict[str, Param], params: list[Parameter]) -> SetParametersResult:
    """The set-parameters callback body: type, range, choices and length of every changed value."""
    for param in params:
        spec = table.get(param.name)
        if spec is None:
            continue
        value = param.value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
            value = list(value)
        reason = spec.check(value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
    return SetParametersResult(successful=True)


def bundle_id(path: Path) -> str:
    """A short stable id: ``<dir name>@<sha256 of manifest.json (bundles) or config.json (checkpoints)>``.

    A bundle's manifest lists the checksum of every file, so its hash identifies the whole bundle.
    """
    for name in ("manifest.json", "config.json"):
        source = path / name
        if source.is_file():
            return f"{path.name}@{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}"
    return f"{path.name}@unknown"


class VLANode(LifecycleNode):
    """See the module docstring. ``policy_loader`` is rlrc_runtime.load_policy unless a caller swaps it."""

    def __init__(self, node_name: str = NODE_NAME, *,
                 policy_loader: Callable[..., Any] = rlrc_runtime.load_policy, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._policy_loader = policy_loader
        declare_table(self, VLA_NODE_PARAMS)
        self.add_on_set_parameters_callback(lambda params: validate_parameters(VLA_NODE_PARAMS, params))
        self._lock = threading.Lock()  # guards counters, instruction, state flags
        self._pub_lock = threading.Lock()  # one publisher call at a time (executor vs worker thread)
        self.counters = {name: 0 for name in COUNTERS}
        self._latency = LatencyWindow(size=500)
        self._action_times: deque[float] = deque(maxlen=50)
        self._inference_times: deque[float] = deque(maxlen=50)
        self._chunks: ChunkExecutor | None = None  # K > 1 policies: the planned actions
        self._plan: tuple[Frame, int] | None = None  # the latest chunk's frame and the executor step it starts at
        self._plan_key: tuple[int, str] = (0, "")  # (epoch, instruction) the planned actions belong to
        self._latest: Frame | None = None  # the newest frame seen while a chunk runs, for the next plan
        self._plan_held = False  # a hold went out since the plan: its remaining actions are dropped
        self._policy: Any = None
        self._bundle_id = ""
        self._backend_name = ""
        self._pipeline = ActionPipeline()
        self._instruction = ""
        self._paused = False
        self._active = False
        self._epoch = 0  # bumped on pause/deactivate: in-flight results of an older epoch are dropped
        self._inflight = False
        self._worker: threading.Thread | None = None
        self._slot = FrameSlot()
        self._source: Any = None
        self._source_finished = False
        self._camera_lost = False
        self._last_frame_time = time.monotonic()
        self._last_gripper: float | None = None
        self._last_error = ""
        self._last_hold = ""
        self._holding = ""  # a HOLD_LEVELS reason while the node holds for it; "" once an action goes out
        self._status = "unconfigured"
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._image_sub: Any = None
        self._decode_image: Callable[..., tuple[np.ndarray, int]] = self._decode_raw
        self._tick_timer: Any = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.p("diagnostics_period_s"), self.publish_diagnostics)

    # -- helpers -----------------------------------------------------------------------------
    def p(self, name: str) -> Any:
        value = self.get_parameter(name).value
        return list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "array" else value

    def _count(self, name: str, error: str | None = None) -> None:
        with self._lock:
            self.counters[name] += 1
            if error:
                self._last_error = f"{name}: {error}"

    # -- lifecycle -----------------------------------------------------------------------------
    def _attempt(self, stage: str, step: Callable[[], None], expected: tuple[type[BaseException], ...],
                 undo: Callable[[], None]) -> TransitionCallbackReturn | None:
        """Run one transition's risky ``step``; on an ``expected`` error undo it and fail with the cause,
        on any other error fail with the traceback (rclpy would turn it into a silent ERROR transition)."""
        try:
            step()
        except expected as exc:
            undo()
            return self._fail(stage, exc)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            return self._fail_unexpected(stage, exc)
        return None

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        failed = self._attempt("configure", lambda: self._load_policy(self.p("bundle_path")),
                               (RLRCError, OSError, ValueError), self._release_policy)
        if failed is not None:
            return failed
        self._pubs = {
            "action": self.create_publisher(Float32MultiArray, "~/action", 10),
            "cmd_twist": self.create_publisher(TwistStamped, "~/cmd_twist", 10),
            "gripper": self.create_publisher(Float64, "~/gripper", 10),
        }
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs = [
            self.create_subscription(String, self.p("instruction_topic"), self._on_instruction, latched),
            self.create_subscription(Bool, "~/pause", self._on_pause, 10),
        ]
        if self.p("instruction") and not self._instruction:
            self._set_instruction(self.p("instruction"))
        self._status = "inactive"
        self.get_logger().info(f"configured: bundle {self._bundle_id} on backend {self._backend_name}")
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def _load_policy(self, path: str) -> None:
        """The command pipeline and the policy, warmed up; raises what loading raises."""
        if not path:
            raise RLRCError("parameter bundle_path is empty; pass -p bundle_path:=/path/to/bundle")
        frame = load_action_frame(self.p("action_frame_file")) if self.p("action_frame_file") else ActionFrame()
        limits = CommandLimits(action_scale=tuple(self.p("action_scale")),
                               action_period_s=self.p("action_period_s"),
                               max_linear_speed=self.p("max_linear_speed"),
                               max_angular_speed=self.p("max_angular_speed"),
                               gripper_limits=tuple(self.p("gripper_limits")))
        self._pipeline = ActionPipeline(frame, limits)
        self._policy = self._policy_loader(path, backend=self.p("backend"), device=self.p("device"),
                                           dtype=self.p("dtype"))
        unnorm = self.p("unnorm_key") or None
        dim = self._policy.action_dim(unnorm)
        if dim != 7:
            raise RLRCError(f"the policy emits {dim}-D actions; this node publishes 7-D "
                            f"[{', '.join(ACTION_LABELS)}] actions")
        for _ in range(self.p("warmup_iterations")):
            self._policy.infer(np.zeros((224, 224, 3), np.uint8), "warm up", unnorm)
        k = int(getattr(self._policy, "action_chunk", 1))
        self._chunks = None if k == 1 else ChunkExecutor(k, ChunkExecution(
            self.p("chunk_mode"), self.p("chunk_replan"), self.p("chunk_decay")))
        self._bundle_id = bundle_id(Path(path))
        backend = getattr(self._policy, "backend", None)
        self._backend_name = str(getattr(backend, "name", "") or self.p("backend"))

    def _fail(self, stage: str, exc: BaseException) -> TransitionCallbackReturn:
        """An expected failure of ``stage`` (a bad bundle, no camera): back to the previous state, ERROR in
        /diagnostics with the cause until the transition succeeds."""
        self._last_error = f"{stage}: {exc}"
        self._status = f"{stage} failed"
        self.get_logger().error(f"{stage} failed: {exc}")
        self.publish_diagnostics()
        return TransitionCallbackReturn.FAILURE

    def _fail_unexpected(self, stage: str, exc: BaseException) -> TransitionCallbackReturn:
        """A bug or an environment fault in ``stage``: logged with its traceback and named in /diagnostics
        before rclpy runs on_error (which releases everything and returns the node to unconfigured)."""
        self._last_error = f"{stage}: {type(exc).__name__}: {exc}"
        self._status = "error"
        self.get_logger().error(f"{stage} failed unexpectedly: {type(exc).__name__}: {exc}\n"
                                f"{traceback.format_exc()}")
        self.publish_diagnostics()
        return TransitionCallbackReturn.ERROR

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._slot = FrameSlot()
        self._source_finished = False
        self._camera_lost = False
        failed = self._attempt("activate", lambda: self._start_source(self.p("camera_source")),
                               (CameraError, RLRCError, OSError), self._stop_source)
        if failed is not None:
            return failed
        self._last_frame_time = time.monotonic()
        with self._lock:
            self._active = True
            self._epoch += 1
        self._tick_timer = self.create_timer(1.0 / self.p("rate_hz"), self._on_tick)
        self._status = "active"
        self.get_logger().info(f"active: camera_source={self.p('camera_source')}, rate {self.p('rate_hz')} Hz")
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def _start_source(self, source: str) -> None:
        """Subscribe to the image topic, or start the recording / the RealSense; raises CameraError."""
        if source == "topic":
            compressed = self.p("image_transport") == "compressed"
            if compressed:
                require_opencv()  # fail activation, not every frame, when the decoder is missing
            self._decode_image = self._decode_compressed if compressed else self._decode_raw
            self._image_sub = self.create_subscription(CompressedImage if compressed else Image,
                                                       self.p("image_topic"), self._on_image,
                                                       qos_profile_sensor_data)
        elif source == "recording":
            self._source = RecordingPlayer(self.p("recording_path"), self._slot, realtime=self.p("realtime"))
            sidecar = read_sidecar(self.p("recording_path"))
            if not self._instruction and isinstance(sidecar.get("instruction"), str):
                self._set_instruction(sidecar["instruction"])
            self._source.start()
        else:
            self._source = RealSenseCamera(RealSenseConfig(
                serial=self.p("realsense_serial"), width=self.p("realsense_width"),
                height=self.p("realsense_height"), fps=self.p("realsense_fps"),
                auto_exposure=self.p("realsense_auto_exposure"), align_depth=self.p("realsense_align_depth")),
                self._slot)
            self._source.start()

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_active()
        self._status = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release_all()
        self._status = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_active()
        self._release_all()
        self._status = "finalized"
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._stop_active()
        self._release_all()
        self._status = "error"  # until a configure succeeds; last_error says why (see _fail_unexpected)
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Hold, wait for the inference in flight and release, whatever the lifecycle state: a node
        destroyed while active must not leave a worker publishing on destroyed publishers."""
        self._stop_active()
        self._release_all()
        super().destroy_node()

    def _stop_active(self) -> None:
        with self._lock:
            was_active = self._active
            self._active = False
            self._epoch += 1
        if self._tick_timer is not None:
            self.destroy_timer(self._tick_timer)
            self._tick_timer = None
        self._stop_source()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=30.0)  # its result is dropped (epoch moved on); bounded wait
        if was_active:
            self.publish_hold("deactivated")
        with self._lock:
            self._camera_lost = False  # nothing is expected from the camera while inactive
            self._holding = ""

    def _stop_source(self) -> None:
        self._slot.close()
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        if self._source is not None:
            self._source.stop()
            self._source = None

    def _release_policy(self) -> None:
        if self._policy is not None:
            try:
                self._policy.close()
            except RLRCError as exc:
                self.get_logger().warning(f"closing the policy: {exc}")
            self._policy = None
        self._chunks, self._plan, self._latest = None, None, None

    def _release_all(self) -> None:
        self._release_policy()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}

    def autostart_if_requested(self) -> bool:
        """configure + activate when the ``autostart`` parameter is true; True if it ends active."""
        if not self.p("autostart"):
            return False
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    # -- inputs --------------------------------------------------------------------------------
    def _set_instruction(self, text: str) -> bool:
        limit = self.p("max_instruction_chars")
        stripped = text.strip()
        error = None
        if not stripped:
            error = "empty instruction"
        elif len(stripped) > limit:
            error = f"instruction of {len(stripped)} characters exceeds max_instruction_chars={limit}"
        if error is not None:
            with self._lock:
                self._instruction = ""  # a rejected instruction also ends the current task: hold
                self._epoch += 1
            self._count("input_errors", f"{error}; holding until a valid instruction arrives")
            self.get_logger().warning(error)
            if self._active:
                self.publish_hold("rejected instruction")
            self.publish_diagnostics()
            return False
        with self._lock:
            self._instruction = stripped
        self.get_logger().info(f"instruction: {stripped!r}")
        return True

    def _on_instruction(self, msg: String) -> None:
        self._set_instruction(msg.data)

    def _on_pause(self, msg: Bool) -> None:
        with self._lock:
            changed = self._paused != bool(msg.data)
            self._paused = bool(msg.data)
            if self._paused:
                self._epoch += 1  # an inference in flight now will not be published
        if self._paused:
            self.publish_hold("paused")
        if changed:
            self.get_logger().warning("paused (e-stop)" if self._paused else "resumed")
            self.publish_diagnostics()

    def _decode_raw(self, msg: Image) -> tuple[np.ndarray, int]:
        return image_msg_to_rgb(msg, max_side=self.p("max_image_side")), 1

    def _decode_compressed(self, msg: CompressedImage) -> tuple[np.ndarray, int]:
        keep = self._policy.image_transform.image_size if self.p("jpeg_scaled_decode") else 0
        return decode_compressed(msg, max_side=self.p("max_image_side"), keep=keep, crop=self.p("crop"))

    def _on_image(self, msg: Image | CompressedImage) -> None:
        if self._slot.closed:
            return
        try:
            image, scale = self._decode_image(msg)
        except RLRCError as exc:  # InputError: a malformed frame; ConfigError: OpenCV missing for this encoding
            self._count("input_errors", f"image on {self.p('image_topic')}: {exc}")
            self._slot.take()  # an older frame waiting in the slot is not acted on after an unreadable newer one
            if self._active:
                self.publish_hold("unreadable frame")
            self.publish_diagnostics()
            return
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._slot.put(Frame(image=image, stamp_ns=stamp_ns, scale=scale), block=False)

    # -- control loop --------------------------------------------------------------------------
    def _frame_age_s(self, frame: Frame) -> float:
        if self.p("camera_source") == "topic" and frame.stamp_ns > 0:
            return (self.get_clock().now().nanoseconds - frame.stamp_ns) / 1e9
        return time.monotonic() - frame.arrival

    def _on_tick(self) -> None:
        with self._lock:
            if not self._active:
                return
            paused, instruction, epoch, inflight = self._paused, self._instruction, self._epoch, self._inflight
        if inflight:  # chunk policies keep moving on what earlier chunks planned while the next one is computed
            if self._chunks is not None and not paused and instruction:
                self._send_planned(epoch, instruction)
            return
        now = time.monotonic()
        if self._slot.pending:
            self._last_frame_time = now
            if self._camera_lost:
                self._camera_lost = False
                self.get_logger().info("camera frames are back")
                self.publish_diagnostics()
        elif self._source is not None and self._source.finished.is_set():
            if not self._source_finished:
                self._source_finished = True
                self.get_logger().info("recording finished")
                self.publish_hold("recording finished")
                self.publish_diagnostics()
            return
        elif now - self._last_frame_time > self.p("camera_timeout_ms") / 1e3 and not self._camera_lost:
            self._camera_lost = True
            self._count("camera_losses", f"no frame for {self.p('camera_timeout_ms'):.0f} ms")
            self.get_logger().error(f"camera lost: no frame for {self.p('camera_timeout_ms'):.0f} ms; holding")
            self.publish_hold("camera lost")
            self.publish_diagnostics()
            return
        if paused or not instruction:
            self._slot.take()  # frames seen while paused / without a task are never acted on later
            self._latest = None
            return
        plan_step = 0
        if self._chunks is not None:
            with self._lock:
                plan_step, plan_now = self._chunks.step, self._chunks.needs_plan() or self._plan is None
            self._send_planned(epoch, instruction)
            if not plan_now:
                return
        frame = self._slot.take() or self._latest
        self._latest = None
        if frame is None:
            return
        with self._lock:
            self.counters["frames_used"] += 1
        age = self._frame_age_s(frame)
        if age * 1e3 > self.p("deadline_ms"):
            self._count("stale_frames", f"frame {age * 1e3:.0f} ms old > deadline_ms={self.p('deadline_ms'):.0f}")
            self.publish_hold("stale frame")
            return
        with self._lock:
            self._inflight = True
        self._worker = threading.Thread(target=self._infer, args=(frame, instruction, epoch, plan_step), daemon=True,
                                        name="vla_infer")
        self._worker.start()

    def _send_planned(self, epoch: int, instruction: str) -> None:
        """Chunk policies, on the executor thread: send what the chunks plan for this control step, if
        any (the i-th action of a chunk may leave up to i / rate_hz later than deadline_ms)."""
        chunks = self._chunks
        with self._lock:
            held, self._plan_held = self._plan_held, False
            if held or self._plan_key != (epoch, instruction):  # a hold, a new task or a pause since the plan
                self._plan_key = (epoch, instruction)
                self._drop_plan()
            if self._plan is None:
                return
            plan_frame, start = self._plan
            offset = chunks.step - start  # which action of the newest chunk this step is
            action = chunks.action()
        if action is None:
            return
        frame = self._slot.take()
        if frame is not None:
            self._latest = frame  # the freshest frame for the next inference
        allowed_ms = self.p("deadline_ms") + offset * 1e3 / self.p("rate_hz")
        age = self._frame_age_s(plan_frame)
        if age * 1e3 > allowed_ms:
            self._count("deadline_misses", f"chunk action {offset} due {age * 1e3:.0f} ms after its frame "
                                           f"> {allowed_ms:.0f} ms (deadline_ms + {offset} / rate_hz)")
            self.publish_hold("deadline miss")  # the rest of the chunk is older still: dropped
            return
        command = self._pipeline(action)
        if command is None:
            self._count("nonfinite_actions", f"chunk action {np.asarray(action).tolist()} is not finite")
            self.publish_hold("non-finite action")
            return
        self._publish_command(command, plan_frame)
        with self._lock:
            self._action_times.append(time.monotonic())

    def _drop_plan(self) -> None:
        """Forget the planned actions (under self._lock)."""
        if self._chunks is not None:
            self._chunks.reset()
        self._plan = None

    def _infer(self, frame: Frame, instruction: str, epoch: int, plan_step: int = 0) -> None:
        """Worker thread: one inference, then publish the action or a hold (chunk policies: add the chunk,
        whose first action is for control step ``plan_step``, for the ticks to send)."""
        try:
            image = crop_image(frame.image, self.p("crop"), frame.scale)
            result = self._policy.infer(image, instruction, self.p("unnorm_key") or None)
        except InputError as exc:
            self._count("input_errors", str(exc))
            self._finish_hold(epoch, "malformed input")
            return
        except NonFiniteOutputError as exc:  # NaN/Inf logits or hidden states: the step has no safe action
            self._step_failed("nonfinite_actions", exc, epoch, "non-finite output")
            return
        except Exception as exc:  # noqa: BLE001 - a failed step must hold the robot, not kill the node
            self._step_failed("inference_errors", exc, epoch, "inference failed")
            return
        try:
            with self._lock:
                current = epoch == self._epoch and self._active and not self._paused
                self.counters["inferences"] += 1
                self._inference_times.append(time.monotonic())
            if not current:
                return  # paused / deactivated / new instruction while inferring: never publish it
            if self._chunks is not None:
                self._add_chunk(result, frame, instruction, epoch, plan_step)
                return
            command = self._pipeline(result.action)
            if command is None:
                self._count("nonfinite_actions", f"action {np.asarray(result.action).tolist()} is not finite")
                self.publish_hold("non-finite action")
                return
            age = self._frame_age_s(frame)
            if age * 1e3 > self.p("deadline_ms"):
                self._count("deadline_misses", f"action ready {age * 1e3:.0f} ms after its frame "
                                               f"> deadline_ms={self.p('deadline_ms'):.0f}")
                self.publish_hold("deadline miss")
                return
            self._publish_command(command, frame)
            timings = dict(result.timings_ms)
            timings["end_to_end"] = age * 1e3
            with self._lock:
                self._latency.add(timings)
                self._action_times.append(time.monotonic())
        finally:
            with self._lock:
                self._inflight = False

    def _add_chunk(self, result: Any, frame: Frame, instruction: str, epoch: int, plan_step: int) -> None:
        timings = dict(result.timings_ms)
        timings["end_to_end"] = self._frame_age_s(frame) * 1e3  # frame -> chunk ready
        with self._lock:
            if self._plan_held or self._plan_key != (epoch, instruction):
                self._plan_held = False
                self._plan_key = (epoch, instruction)
                self._drop_plan()
            if self._chunks.add(result.chunk, start=plan_step):
                self._plan = (frame, plan_step)
            self._latency.add(timings)

    def _step_failed(self, counter: str, exc: Exception, epoch: int, reason: str) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self._count(counter, error)
        self.get_logger().error(f"{reason}, holding: {error}", throttle_duration_sec=5.0)
        self._finish_hold(epoch, reason)

    def _finish_hold(self, epoch: int, reason: str) -> None:
        with self._lock:
            current = epoch == self._epoch and self._active
            self._inflight = False
        if current:
            self.publish_hold(reason)

    # -- outputs -------------------------------------------------------------------------------
    def _publish_command(self, command: Any, frame: Frame) -> None:
        action = Float32MultiArray()
        action.layout.dim = [MultiArrayDimension(label=",".join(ACTION_LABELS), size=7, stride=7)]
        action.data = [float(v) for v in command.raw]
        twist = TwistStamped()
        twist.header.stamp.sec, twist.header.stamp.nanosec = divmod(int(frame.stamp_ns), 1_000_000_000)
        twist.header.frame_id = self.p("output_frame_id")
        (twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z) = (float(v) for v in command.linear)
        (twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) = (float(v) for v in command.angular)
        with self._pub_lock:
            if not self._pubs:
                return
            self._pubs["action"].publish(action)
            self._pubs["cmd_twist"].publish(twist)
            self._pubs["gripper"].publish(Float64(data=float(command.gripper)))
            self._last_gripper = float(command.gripper)
        with self._lock:
            self.counters["actions_published"] += 1
            self._holding = ""

    def publish_hold(self, reason: str) -> None:
        """Zero twist now (+ the last gripper command again); never anything on ~/action."""
        twist = TwistStamped()
        twist.header.stamp = self.get_clock().now().to_msg()
        twist.header.frame_id = self.p("output_frame_id")
        with self._pub_lock:
            if not self._pubs:
                return
            self._pubs["cmd_twist"].publish(twist)
            if self._last_gripper is not None:
                self._pubs["gripper"].publish(Float64(data=self._last_gripper))
        with self._lock:
            self.counters["holds_published"] += 1
            self._plan_held = True
            self._last_hold = reason
            if reason in HOLD_LEVELS:
                self._holding = reason

    def diagnostics_values(self) -> dict[str, str]:
        """Everything /diagnostics reports, as strings (also handy for tests and logs)."""
        with self._lock:
            counters = dict(self.counters)
            summary = self._latency.summary()
            times = list(self._action_times)
            inference_times = list(self._inference_times)
            values = {
                "lifecycle": self._status,
                "backend": self._backend_name or str(self.p("backend")),
                "bundle_id": self._bundle_id,
                "bundle_path": str(self.p("bundle_path")),
                "camera_source": str(self.p("camera_source")),
                "instruction": self._instruction,
                "paused": str(self._paused).lower(),
                "inference_in_flight": str(self._inflight).lower(),
                "camera_lost": str(self._camera_lost).lower(),
                "recording_finished": str(self._source_finished).lower(),
                "last_hold_reason": self._last_hold,
                "holding": self._holding,
                "last_error": self._last_error,
            }
        counters["frames_received"] = max(counters["frames_received"], self._slot.received)
        counters["frames_dropped"] = max(counters["frames_dropped"], self._slot.dropped)
        values.update({k: str(v) for k, v in counters.items()})
        rate = _rate(times)
        values["achieved_rate_hz"] = f"{rate:.3f}"
        values["inference_rate_hz"] = f"{_rate(inference_times):.3f}"
        values["action_chunk"] = str(self._chunks.k if self._chunks is not None else 1)
        values["chunk_mode"] = self.p("chunk_mode") if self._chunks is not None else "none"
        values["target_rate_hz"] = f"{self.p('rate_hz'):.3f}"
        values["deadline_ms"] = f"{self.p('deadline_ms'):.1f}"
        for stage, stats in summary.items():
            for q in ("p50", "p95", "p99"):
                values[f"latency_ms.{stage}.{q}"] = f"{stats[q]:.3f}"
        return values

    def publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus(name=DIAG_NAME, hardware_id=values["bundle_id"] or "none")
        status.level = diagnostic_level(values)
        status.message = diagnostic_message(values)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        try:
            self._diag_pub.publish(array)
        except Exception:  # noqa: BLE001 - the context may be shutting down
            pass
        if self.p("diagnostics_file"):
            self._write_diagnostics_file(values, status)

    def _write_diagnostics_file(self, values: dict[str, str], status: DiagnosticStatus) -> None:
        """The latest status as JSON, replaced atomically (a reader never sees half a file)."""
        path = Path(self.p("diagnostics_file"))
        level = {DiagnosticStatus.OK: "OK", DiagnosticStatus.WARN: "WARN"}.get(status.level, "ERROR")
        try:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps({"level": level, "message": status.message, "values": values}, indent=1))
            tmp.replace(path)
        except OSError as exc:
            self.get_logger().warning(f"diagnostics_file {path}: {exc}", throttle_duration_sec=60.0)


def _rate(times: list[float]) -> float:
    """Events per second over a window of monotonic times."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0


PROBLEM_COUNTERS = ("nonfinite_actions", "inference_errors", "input_errors", "camera_losses", "deadline_misses",
                    "stale_frames")


def diagnostic_level(values: dict[str, str]) -> bytes:
    """The node's state now: ERROR when it cannot act (a failed transition, the camera lost, the policy
    failing), WARN when it holds for a passing reason or waits, OK when it acts. The problem counters are
    totals since start: they are in the message, not in the level, so the level recovers with the node."""
    hold = HOLD_LEVELS.get(values["holding"])
    if values["lifecycle"] in FAILED_STATES or values["camera_lost"] == "true" or hold == "error":
        return DiagnosticStatus.ERROR
    waiting = values["lifecycle"] == "active" and not values["instruction"]
    if values["paused"] == "true" or hold == "warn" or waiting:
        return DiagnosticStatus.WARN
    return DiagnosticStatus.OK


def diagnostic_message(values: dict[str, str]) -> str:
    """One line: the state, why the node holds, the problem counters, the last error."""
    parts = [values["lifecycle"]]
    if values["paused"] == "true":
        parts.append("paused")
    if values["camera_lost"] == "true":
        parts.append("camera lost")
    if values["holding"]:
        parts.append(f"holding: {values['holding']}")
    if values["lifecycle"] == "active" and not values["instruction"]:
        parts.append("waiting for an instruction")
    parts += [f"{k}={values[k]}" for k in PROBLEM_COUNTERS if values[k] != "0"]
    if values["last_error"]:
        parts.append(f"last error: {values['last_error']}")
    return "; ".join(parts)[:1000]


def main(args: list[str] | None = None) -> None:
    """Entry point of `rlrc-node` / `ros2 run rlrc_runtime vla_node`."""
    from rclpy.signals import SignalHandlerOptions

    # We handle SIGINT/SIGTERM ourselves so that a hold is published before the context goes away.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Both set explicitly: a process started in the background of a non-interactive shell (`node &` in a
    # script, a CI job) inherits SIGINT as ignored, and Python then never raises KeyboardInterrupt, so
    # Ctrl-C or `ros2 launch`'s SIGINT would leave the node spinning.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        node = VLANode()
    except ConfigError as exc:
        print(f"rlrc-node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        sys.exit(2)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.p("autostart") and not node.autostart_if_requested():
            node.get_logger().error("autostart: the node did not reach 'active' (see /diagnostics); "
                                    "staying up for a lifecycle manager to retry")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.on_shutdown(None)  # hold + release even when not driven through the lifecycle
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()


if __name__ == "__main__":
    main()
