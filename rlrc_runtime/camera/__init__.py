"""Cameras without ROS: frames and the slot that carries them, Intel RealSense devices and recordings.

Importing this package loads neither pyrealsense2 nor OpenCV: librealsense is imported when a
device or recording is opened (`pip install 'rlrc_runtime[realsense]'`).
"""
from rlrc_runtime.camera.frames import CameraError, Frame, FrameSlot
from rlrc_runtime.camera.realsense import (RealSenseCamera, RealSenseConfig, RecordingPlayer, SoftwareCamera,
                                           camera_info_dict, color_intrinsics, frame_to_rgb, list_devices,
                                           read_recording, read_sidecar, sidecar_path, write_recording, write_sidecar)

__all__ = ["CameraError", "Frame", "FrameSlot", "RealSenseCamera", "RealSenseConfig", "RecordingPlayer",
           "SoftwareCamera", "camera_info_dict", "color_intrinsics", "frame_to_rgb", "list_devices", "read_recording",
           "read_sidecar", "sidecar_path", "write_recording", "write_sidecar"]
