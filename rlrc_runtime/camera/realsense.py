"""Intel RealSense frames without ROS: live capture, recording playback, software recordings.

pyrealsense2 is imported when a camera or recording is opened, never when this module is.

- `RealSenseCamera`: a live device chosen by serial, colour stream (+ optional depth aligned to
  colour), frames pushed into a `FrameSlot`.
- `RecordingPlayer`: replays a RealSense recording (.db3) in real time (latest frame only, drops
  counted) or as fast as possible (every frame used exactly once: the player waits until the
  consumer took the previous frame).
- `SoftwareCamera`: writes RGB frames to a RealSense recording through `rs.software_device` +
  `rs.recorder` — how tests, the calibration tools and the sim robot make recordings without a
  camera. Instructions travel in a YAML sidecar next to the recording (`<name>.yaml`).

Facts checked with pyrealsense2 2.59 (why the code looks the way it does):
- `rs.recorder` only writes `.db3` (rosbag2/sqlite) files.
- The pipeline route (`config.enable_device_from_file` + `pipeline.start` and then
  `playback.set_real_time(False)`) races: playback starts in real time inside `pipeline.start`,
  so a short recording may be over before the pace is switched, and frames are lost. Loading the
  device with `context.load_device`, setting the pace first and starting the colour sensor with a
  Python callback is lossless. (A `frame_queue` given to `sensor.start` deadlocked in
  non-real-time mode.)
- A software sensor fed faster than it dispatches loses frames; `SoftwareCamera.write` waits
  until each frame went through.

Image arrays are RGB uint8 [H, W, 3], owned by the `Frame` (copied out of librealsense memory).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from rlrc_runtime.camera.frames import CameraError, Frame, FrameSlot

log = logging.getLogger(__name__)


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise CameraError("pyrealsense2 is not installed; install it with: pip install 'rlrc_runtime[realsense]' "
                          "(it also needs Debian's libusb-1.0-0)") from exc
    return rs


def frame_to_rgb(data: np.ndarray, fmt: str) -> np.ndarray:
    """A colour frame's pixels in RealSense format ``fmt`` ('rgb8', 'bgr8', 'rgba8', 'bgra8') -> RGB copy."""
    if fmt == "rgb8":
        return np.array(data[..., :3], dtype=np.uint8, copy=True)
    if fmt == "bgr8":
        return np.ascontiguousarray(data[..., 2::-1])
    if fmt == "rgba8":
        return np.ascontiguousarray(data[..., :3])
    if fmt == "bgra8":
        return np.ascontiguousarray(data[..., 2::-1])
    raise CameraError(f"colour format {fmt!r} is not supported; record or stream rgb8, bgr8, rgba8 or bgra8")


def _stamp_ns(rs: Any, frame: Any) -> int:
    """Frame timestamp in epoch ns when its clock is the host's, else the arrival time."""
    domain = frame.get_frame_timestamp_domain()
    if domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
        return int(frame.get_timestamp() * 1e6)
    return time.time_ns()


def _fmt_name(rs: Any, fmt: Any) -> str:
    return str(fmt).split(".")[-1]


def camera_info_dict(intr: Any, camera_name: str = "camera") -> dict[str, Any]:
    """rs.intrinsics -> the ROS camera_info YAML layout (camera_calibration_parsers)."""
    fx, fy, cx, cy = float(intr.fx), float(intr.fy), float(intr.ppx), float(intr.ppy)
    model = str(intr.model).split(".")[-1]
    ros_model = {"brown_conrady": "plumb_bob", "none": "plumb_bob", "inverse_brown_conrady": "plumb_bob",
                 "modified_brown_conrady": "plumb_bob", "kannala_brandt4": "equidistant"}.get(model, model)
    coeffs = [float(c) for c in intr.coeffs]
    if ros_model == "equidistant":
        coeffs = coeffs[:4]
    return {
        "image_width": int(intr.width),
        "image_height": int(intr.height),
        "camera_name": camera_name,
        "camera_matrix": {"rows": 3, "cols": 3, "data": [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]},
        "distortion_model": ros_model,
        "distortion_coefficients": {"rows": 1, "cols": len(coeffs), "data": coeffs},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]},
        "projection_matrix": {"rows": 3, "cols": 4, "data": [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]},
        "realsense_model": model,
    }


# -- sidecar -------------------------------------------------------------------------------------
def sidecar_path(recording: str | Path) -> Path:
    return Path(recording).with_suffix(".yaml")


def read_sidecar(recording: str | Path) -> dict[str, Any]:
    """The recording's sidecar (instruction, frame count, source) or {} when there is none."""
    path = sidecar_path(recording)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise CameraError(f"{path}: expected a mapping (instruction: ..., frames: ...), got {type(data).__name__}")
    return data


def write_sidecar(recording: str | Path, **fields: Any) -> Path:
    path = sidecar_path(recording)
    path.write_text("# rlrc_runtime recording sidecar: what the camera saw was recorded for\n"
                    + yaml.safe_dump(fields, sort_keys=False))
    return path


# -- playback ------------------------------------------------------------------------------------
class RecordingPlayer:
    """Replays the colour stream of a RealSense recording into a `FrameSlot`."""

    def __init__(self, path: str | Path, slot: FrameSlot, realtime: bool = False) -> None:
        self.path = Path(path)
        self.slot = slot
        self.realtime = realtime
        self.finished = threading.Event()
        self.error: str | None = None
        self._sensor: Any = None
        self._playback: Any = None
        self._fmt = "rgb8"

    def start(self) -> None:
        rs = _rs()
        if not self.path.is_file():
            raise CameraError(f"recording_path={str(self.path)!r} does not exist; record one with `rlrc-calib capture`")
        try:
            device = rs.context().load_device(str(self.path))
        except RuntimeError as exc:
            raise CameraError(f"cannot open recording {self.path}: {exc}") from exc
        self._playback = device.as_playback()
        self._playback.set_real_time(bool(self.realtime))  # before the sensor starts: no race
        found = None
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() == rs.stream.color:
                    found = (sensor, profile)
                    break
            if found:
                break
        if found is None:
            raise CameraError(f"recording {self.path} has no colour stream")
        self._sensor, profile = found
        self._fmt = _fmt_name(rs, profile.format())
        frame_to_rgb(np.zeros((1, 1, 4), np.uint8), self._fmt)  # fail now on an unsupported format
        self._playback.set_status_changed_callback(self._on_status)
        self._sensor.open(profile)
        self._sensor.start(self._on_frame)

    def _on_status(self, status: Any) -> None:
        rs = _rs()
        if status == rs.playback_status.stopped:
            self.finished.set()

    def _on_frame(self, rs_frame: Any) -> None:
        rs = _rs()
        try:
            vf = rs_frame.as_video_frame()
            image = frame_to_rgb(np.asanyarray(vf.get_data()), self._fmt)
            frame = Frame(image=image, stamp_ns=_stamp_ns(rs, rs_frame), frame_number=int(rs_frame.get_frame_number()))
        except Exception as exc:  # noqa: BLE001 - a librealsense thread must never see an exception
            self.error = f"frame {rs_frame.get_frame_number()}: {exc}"
            return
        self.slot.put(frame, block=not self.realtime)

    def stop(self) -> None:
        self.slot.close()  # unblocks a waiting callback before the sensor joins its thread
        if self._sensor is not None:
            for step in (self._sensor.stop, self._sensor.close):
                try:
                    step()
                except RuntimeError:
                    pass  # already stopped at the end of the recording
        self._sensor = None
        self._playback = None


# -- live camera ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealSenseConfig:
    serial: str = ""
    """Device serial number; empty = the first device found."""
    width: int = 640
    height: int = 480
    fps: int = 30
    auto_exposure: bool = True
    align_depth: bool = False
    """Also stream depth and align it to the colour image."""


def list_devices() -> list[dict[str, str]]:
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():
        info = {}
        for key in ("name", "serial_number", "firmware_version", "usb_type_descriptor"):
            cam_info = getattr(rs.camera_info, key)
            if dev.supports(cam_info):
                info[key] = dev.get_info(cam_info)
        out.append(info)
    return out


class RealSenseCamera:
    """A live RealSense: colour (+ aligned depth) frames into a `FrameSlot`, latest only."""

    def __init__(self, config: RealSenseConfig, slot: FrameSlot) -> None:
        self.config = config
        self.slot = slot
        self.finished = threading.Event()  # never set for a live camera
        self.error: str | None = None
        self._pipeline: Any = None
        self._align: Any = None
        self.profile: Any = None

    def start(self) -> None:
        rs = _rs()
        devices = list_devices()
        serials = [d.get("serial_number", "?") for d in devices]
        if not devices:
            raise CameraError("no RealSense camera found; check the USB 3 cable and `rs-enumerate-devices`, "
                              "or use camera_source:=recording / topic")
        if self.config.serial and self.config.serial not in serials:
            raise CameraError(f"realsense_serial={self.config.serial!r} is not connected; connected: {serials}")
        c = self.config
        cfg = rs.config()
        if c.serial:
            cfg.enable_device(c.serial)
        cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        if c.align_depth:
            cfg.enable_stream(rs.stream.depth, c.width, c.height, rs.format.z16, c.fps)
            self._align = rs.align(rs.stream.color)
        self._pipeline = rs.pipeline()
        try:
            self.profile = self._pipeline.start(cfg, self._on_frames)
        except RuntimeError as exc:
            raise CameraError(f"cannot start the RealSense colour stream {c.width}x{c.height}@{c.fps} "
                              f"(serial {c.serial or serials[0]}): {exc}; `rs-enumerate-devices -c` lists the "
                              "supported modes") from exc
        for sensor in self.profile.get_device().query_sensors():
            if sensor.supports(rs.option.enable_auto_exposure) and any(
                    p.stream_type() == rs.stream.color for p in sensor.get_stream_profiles()):
                sensor.set_option(rs.option.enable_auto_exposure, 1.0 if c.auto_exposure else 0.0)

    def _on_frames(self, frames: Any) -> None:
        rs = _rs()
        try:
            fs = frames.as_frameset()
            if self._align is not None:
                fs = self._align.process(fs)
            color = fs.get_color_frame()
            if not color:
                return
            depth = None
            if self._align is not None and fs.get_depth_frame():
                depth = np.array(np.asanyarray(fs.get_depth_frame().get_data()), copy=True)
            frame = Frame(image=frame_to_rgb(np.asanyarray(color.get_data()), "rgb8"), stamp_ns=_stamp_ns(rs, color),
                          frame_number=int(color.get_frame_number()), depth=depth)
        except Exception as exc:  # noqa: BLE001 - never raise into librealsense's thread
            self.error = str(exc)
            return
        self.slot.put(frame, block=False)

    def stop(self) -> None:
        self.slot.close()
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass
        self._pipeline = None


def color_intrinsics(source: str | Path | None = None, serial: str = "", width: int = 640, height: int = 480,
                     fps: int = 30) -> Any:
    """rs.intrinsics of the colour stream of a recording (``source``) or of a live device."""
    rs = _rs()
    if source is not None:
        device = rs.context().load_device(str(source))
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() == rs.stream.color:
                    return profile.as_video_stream_profile().get_intrinsics()
        raise CameraError(f"recording {source} has no colour stream")
    cam = RealSenseCamera(RealSenseConfig(serial=serial, width=width, height=height, fps=fps), FrameSlot())
    cam.start()
    try:
        return cam.profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
    finally:
        cam.stop()


# -- writing recordings without a camera ---------------------------------------------------------
class SoftwareCamera:
    """A synthetic RealSense colour camera that records every frame it is given to a .db3 file.

    ``with SoftwareCamera(path, 64, 48) as cam: cam.write(rgb)``. ``pace=True`` spaces frames at
    1/fps of wall-clock time so that real-time playback takes as long as the recording.
    ``pinhole`` = (fx, fy, ppx, ppy) in pixels is what the recording reports as the colour stream's
    intrinsics (distortion-free); by default fx = fy = width and the principal point is the centre.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: int = 30,
                 pinhole: tuple[float, float, float, float] | None = None, serial: str = "000000000000",
                 pace: bool = False,
                 name: str = "rlrc SoftwareCamera") -> None:
        rs = _rs()
        self.path = Path(path)
        if self.path.suffix != ".db3":
            raise CameraError(f"recording path {self.path} must end in .db3 (librealsense writes rosbag2/sqlite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height, self.fps, self.pace = width, height, fps, pace
        self.frames = 0
        self._device = rs.software_device()
        self._device.register_info(rs.camera_info.name, name)
        self._device.register_info(rs.camera_info.serial_number, serial)
        self._sensor = self._device.add_sensor("Color")
        intr = rs.intrinsics()
        intr.width, intr.height = width, height
        fx, fy, ppx, ppy = pinhole if pinhole is not None else (width, width, width / 2.0, height / 2.0)
        intr.fx, intr.fy, intr.ppx, intr.ppy = float(fx), float(fy), float(ppx), float(ppy)
        intr.model = rs.distortion.brown_conrady
        intr.coeffs = [0.0] * 5
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp = width, height, fps, 3
        stream.fmt, stream.intrinsics = rs.format.rgb8, intr
        self._profile = self._sensor.add_video_stream(stream).as_video_stream_profile()
        self._recorder = rs.recorder(str(self.path), self._device)
        self._delivered = threading.Event()
        self._sensor.open(self._profile)
        self._sensor.start(lambda f: self._delivered.set())
        self._t0 = time.monotonic()
        self._closed = False

    def write(self, image: np.ndarray, timestamp_ms: float | None = None) -> None:
        """Record one RGB uint8 [height, width, 3] frame (timestamp: host clock ms; default now)."""
        rs = _rs()
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise CameraError(f"frame {image.shape} {image.dtype}; expected ({self.height}, {self.width}, 3) uint8")
        if self.pace:
            due = self._t0 + self.frames / self.fps
            time.sleep(max(0.0, due - time.monotonic()))
        f = rs.software_video_frame()
        f.pixels = np.ascontiguousarray(image)
        f.stride, f.bpp = self.width * 3, 3
        f.timestamp = float(timestamp_ms if timestamp_ms is not None else time.time() * 1e3)
        f.domain = rs.timestamp_domain.system_time
        f.frame_number = self.frames
        f.profile = self._profile
        self._delivered.clear()
        self._sensor.on_video_frame(f)
        if not self._delivered.wait(5.0):
            raise CameraError(f"software camera did not deliver frame {self.frames} within 5 s")
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sensor.stop()
        self._sensor.close()
        del self._recorder  # flushes and closes the .db3
        self._device = None

    def __enter__(self) -> "SoftwareCamera":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_recording(path: str | Path, images: list[np.ndarray] | np.ndarray, instruction: str | None = None,
                    fps: int = 30, pace: bool = False, pinhole: tuple[float, float, float, float] | None = None,
                    **sidecar: Any) -> Path:
    """Write RGB frames [N, H, W, 3] to a RealSense recording (+ sidecar with the instruction and
    any other ``sidecar`` fields); ``pinhole`` as for `SoftwareCamera`."""
    images = list(images)
    if not images:
        raise CameraError("write_recording needs at least one frame")
    h, w = images[0].shape[:2]
    with SoftwareCamera(path, w, h, fps=fps, pace=pace, pinhole=pinhole) as cam:
        for image in images:
            cam.write(image)
    fields = {"frames": len(images), **sidecar}
    if instruction is not None:
        fields = {"instruction": instruction, **fields}
    write_sidecar(path, **fields)
    return Path(path)


def read_recording(path: str | Path, timeout_s: float = 5.0,
                   on_frame: Callable[[Frame], None] | None = None) -> list[Frame]:
    """All colour frames of a recording, in order (as fast as possible)."""
    slot = FrameSlot()
    player = RecordingPlayer(path, slot, realtime=False)
    player.start()
    frames: list[Frame] = []
    last = time.monotonic()
    try:
        while True:
            frame = slot.take()
            if frame is not None:
                frames.append(frame)
                if on_frame is not None:
                    on_frame(frame)
                last = time.monotonic()
                continue
            if player.finished.is_set() and not slot.pending:
                break
            if time.monotonic() - last > timeout_s:
                break
            time.sleep(0.002)
    finally:
        player.stop()
    return frames
