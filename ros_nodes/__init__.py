"""ROS 2 nodes: move data between ROS messages and ``rlrc_runtime.Policy``.

Holds the VLA lifecycle node and the simulated robot node (issue: "On the robot"). Nodes only move
data: no model code here, and nothing here imports ``export``.
"""
