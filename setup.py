"""rlrc_runtime: deploy compressed OpenVLA-class VLA policies on robots (also an ament_python package)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "rlrc_runtime"

EXTRAS = {
    # The export toolchain: PyTorch model, checkpoint I/O, pruning, recovery, quantization.
    # torch is pinned: 2.13.0 is a local CPU build here; anything unpinned pulls the CUDA build.
    "export": ["torch==2.13.0", "safetensors>=0.4", "sentencepiece>=0.1.99", "tqdm>=4.60"],
    # The built-in MuJoCo tabletop benchmark (environments, demonstrations).
    "sim": ["mujoco>=3.1", "gymnasium>=1.0", "h5py>=3.8", "tqdm>=4.60"],
    # ROS 2 from PyPI (Jazzy wheels); on a robot with a ROS install, use the system packages instead.
    "ros": [
        "ros-jazzy-rclpy[fastrtps]",
        "ros-jazzy-std-msgs",
        "ros-jazzy-sensor-msgs",
        "ros-jazzy-geometry-msgs",
        "ros-jazzy-diagnostic-msgs",
        "ros-jazzy-trajectory-msgs",
        # Image intake (every encoding but rgb8, CompressedImage) and the calibration tools.
        "opencv-python-headless>=4.10",
    ],
    "realsense": ["pyrealsense2>=2.54"],
    # Bundles: ONNX export (torch.onnx dynamo exporter needs onnxscript), onnxruntime backend and
    # quantization, rlrc-bench plots.
    "onnx": ["onnxruntime>=1.17", "onnx>=1.16", "onnxscript>=0.2", "matplotlib>=3.7"],
    # GPU only: never installed by the default set-up commands.
    "tensorrt": ["tensorrt", "cuda-python", "onnxruntime-gpu", "nvidia-ml-py"],
    "dev": ["pytest>=7", "pytest-timeout>=2", "transformers>=4.40"],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["rlrc_runtime", "rlrc_runtime.*", "export", "export.*", "ros_nodes",
                                    "ros_nodes.*", "calibration", "calibration.*", "sim", "sim.*"]),
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "pillow>=9.4", "tokenizers>=0.15", "pyyaml>=6"],
    extras_require=EXTRAS,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    zip_safe=False,
    maintainer="rlrc_runtime developers",
    maintainer_email="rlrc-runtime@example.com",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "rlrc-export = export.cli:main",
            "rlrc-predict = rlrc_runtime.cli:main",
            "rlrc-sim = sim.cli:main",
            "rlrc-train = export.train.sft:main",
            "rlrc-eval = sim.evaluate:main",
            "rlrc-bench = rlrc_runtime.bench_cli:main",
            "rlrc-node = ros_nodes.vla_node:main",
            "vla_node = ros_nodes.vla_node:main",
            "sim_robot_node = ros_nodes.sim_robot_node:main",
            "rlrc-closed-loop = ros_nodes.closed_loop:main",
            "rlrc-calib = calibration.cli:main",
        ],
    },
)
