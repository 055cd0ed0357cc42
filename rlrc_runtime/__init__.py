"""rlrc_runtime: run compressed OpenVLA-class policies on the robot.

Robot-side import path: numpy, pillow and tokenizers only. torch is imported only when the
'torch' reference backend is chosen.
"""
from rlrc_runtime.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    InputError,
    NormStatsError,
    RLRCError,
    UnnormKeyError,
)
from rlrc_runtime.policy import InferenceResult, Policy, load_policy

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CheckpointError",
    "ConfigError",
    "InferenceResult",
    "InputError",
    "NormStatsError",
    "Policy",
    "RLRCError",
    "UnnormKeyError",
    "load_policy",
    "__version__",
]
