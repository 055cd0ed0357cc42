"""A simulated robot for the VLA node: a task of the built-in MuJoCo suite behind ROS topics.

It looks like a RealSense + an arm to the VLA node:
    out  image_topic        sensor_msgs/Image, rgb8 (realsense-ros's /camera/camera/color/image_raw)
    out  camera_info_topic  sensor_msgs/CameraInfo of the sim camera (pinhole from its fovy)
    out  instruction_topic  std_msgs/String, transient local: the episode's instruction
    in   action_topic       std_msgs/Float32MultiArray: [dx, dy, dz, droll, dpitch, dyaw, gripper]
    out  ~/episode          std_msgs/String, JSON per finished episode:
                            {"episode", "seed", "family", "instruction", "success", "steps", "invalid_actions"}
                            (reliable, transient local, depth 1000)

Lock-step: it publishes a frame, waits for the next action, steps the simulation with it and
publishes the next frame; if no action comes within ``frame_timeout_s`` (the VLA node held), it
publishes the current frame again with a fresh stamp. With ``record_path`` it also acts as a
software RealSense device: every frame it shows goes into a RealSense recording.
"""
from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32MultiArray, String

from ros_nodes.images import fill_image_msg
from ros_nodes.params import SIM_ROBOT_PARAMS
from ros_nodes.vla_node import declare_table, validate_parameters

NODE_NAME = "sim_robot"


def camera_info(size: int, fovy_deg: float, frame_id: str) -> CameraInfo:
    """Pinhole CameraInfo of a square MuJoCo camera with vertical field of view ``fovy_deg``."""
    f = 0.5 * size / math.tan(math.radians(fovy_deg) / 2.0)
    c = (size - 1) / 2.0
    msg = CameraInfo()
    msg.header.frame_id = frame_id
    msg.width = msg.height = size
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, c, 0.0, f, c, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, c, 0.0, 0.0, f, c, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


class SimRobotNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_table(self, SIM_ROBOT_PARAMS)
        self.add_on_set_parameters_callback(lambda params: validate_parameters(SIM_ROBOT_PARAMS, params))
        import sim  # heavy (MuJoCo); only the sim robot needs it

        p = self.p
        self.env = sim.make_env(family=p("family"), split=p("split"), seed=p("seed"), image_size=p("image_size"),
                                max_steps=p("max_steps") or None)
        self._lock = threading.Lock()
        self.results: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.invalid_actions = 0
        self._episode = -1
        self._image: np.ndarray | None = None
        self._last_publish = 0.0
        self._recorder = None
        if p("record_path"):
            from rlrc_runtime.camera import SoftwareCamera

            self._recorder = SoftwareCamera(p("record_path"), p("image_size"), p("image_size"), fps=20,
                                            serial="sim-robot")
        self._info = camera_info(p("image_size"), float(self.env.model.cam_fovy[self.env._cam]), p("camera_frame_id"))
        self._image_pub = self.create_publisher(Image, p("image_topic"), 2)
        self._info_pub = self.create_publisher(CameraInfo, p("camera_info_topic"), 2)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._instr_pub = self.create_publisher(String, p("instruction_topic"), latched) if p("instruction_topic") else None
        results_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._episode_pub = self.create_publisher(String, "~/episode", results_qos)
        self.create_subscription(Float32MultiArray, p("action_topic"), self._on_action, 10)
        # The first reset happens in the executor thread, like every later step: MuJoCo's EGL
        # renderer is bound to the thread that first renders.
        self._started = False
        self._timer = self.create_timer(min(0.1, p("frame_timeout_s")), self._on_timer)

    def p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _next_episode(self) -> None:
        self._episode += 1
        if self._episode >= self.p("episodes"):
            self.done.set()
            self.get_logger().info(f"all {len(self.results)} episodes done: "
                                   f"success rate {self.success_rate():.3f}")
            return
        self._steps = 0
        self._invalid_in_episode = 0
        obs, _ = self.env.reset(seed=self.p("seed") + self._episode)
        self._instruction = obs["instruction"]
        if self._instr_pub is not None:
            self._instr_pub.publish(String(data=self._instruction))
        self.get_logger().info(f"episode {self._episode}: {self._instruction!r}")
        self._show(obs["image"])

    def _show(self, image: np.ndarray) -> None:
        self._image = image
        self._publish_frame()
        if self._recorder is not None:
            self._recorder.write(image)

    def _publish_frame(self) -> None:
        stamp = self.get_clock().now().to_msg()
        msg = fill_image_msg(Image(), self._image)
        msg.header.stamp = stamp
        msg.header.frame_id = self.p("camera_frame_id")
        self._info.header.stamp = stamp
        self._image_pub.publish(msg)
        self._info_pub.publish(self._info)
        self._last_publish = time.monotonic()

    def _on_timer(self) -> None:
        if not self._started:
            self._started = True
            self._next_episode()
            return
        if not self.done.is_set() and self._image is not None and \
                time.monotonic() - self._last_publish > self.p("frame_timeout_s"):
            self._publish_frame()  # the VLA held or missed the frame: show it again, freshly stamped

    def _on_action(self, msg: Float32MultiArray) -> None:
        import sim

        if self.done.is_set() or not self._started:
            return
        action = np.asarray(msg.data, dtype=np.float32)
        try:
            obs, _, terminated, truncated, info = self.env.step(action)
        except sim.ActionError as exc:
            self.invalid_actions += 1
            self._invalid_in_episode += 1
            self.get_logger().warning(f"invalid action ignored: {exc}")
            return
        self._steps += 1
        if terminated or truncated:
            result = {"episode": self._episode, "seed": self.p("seed") + self._episode, "family": self.p("family"),
                      "split": self.p("split"), "instruction": self._instruction, "success": bool(info["success"]),
                      "steps": self._steps, "invalid_actions": self._invalid_in_episode}
            with self._lock:
                self.results.append(result)
            self._episode_pub.publish(String(data=json.dumps(result)))
            self.get_logger().info(f"episode {self._episode}: success={result['success']} in {self._steps} steps")
            self._next_episode()
        else:
            self._show(obs["image"])

    def success_rate(self) -> float:
        with self._lock:
            return sum(r["success"] for r in self.results) / len(self.results) if self.results else 0.0

    def destroy_node(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None
        self.env.close()  # from any thread: the env unbinds its EGL context after every frame (sim/env.py)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run rlrc_runtime sim_robot_node`."""
    rclpy.init(args=args)
    node = SimRobotNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not node.done.is_set():
            executor.spin_once(timeout_sec=0.1)
        executor.spin_once(timeout_sec=0.5)  # flush the last result
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
