"""Calibration tools: capture frames + instructions for quantization, camera intrinsics to YAML,
and the action-frame mapping from the policy's frame to the robot's base frame."""
