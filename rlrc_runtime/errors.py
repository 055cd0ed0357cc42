"""Exception types of rlrc_runtime and the export toolchain.

Every message names the file or field, the value found, the value expected and the fix, so that a
robotics engineer reading a log on the robot knows what to do without reading our code.
"""
from __future__ import annotations


class RLRCError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(RLRCError, ValueError):
    """A configuration value is invalid (a dataclass field, a CLI flag, a config.json entry)."""


class CheckpointError(RLRCError):
    """A checkpoint directory cannot be loaded as it is."""


class MissingFileError(CheckpointError, FileNotFoundError):
    """A file the checkpoint needs (config.json, a shard, the tokenizer) does not exist."""


class KeyMismatchError(CheckpointError):
    """Weight keys in the safetensors files differ from the keys the model config implies."""


class ShapeMismatchError(CheckpointError):
    """A weight's stored shape differs from the shape the model config implies."""


class UnknownBackboneError(CheckpointError, ConfigError):
    """config.json names a vision backbone this project does not implement."""


class TokenizerNotFoundError(MissingFileError):
    """Neither tokenizer.json nor tokenizer.model is present."""


class NormStatsError(CheckpointError, ConfigError):
    """norm_stats are missing or malformed."""


class UnnormKeyError(RLRCError, KeyError):
    """The requested unnorm_key is ambiguous (None with several datasets) or unknown."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence.
        return str(self.args[0]) if self.args else ""


class DatasetError(RLRCError):
    """A demonstration file is missing, malformed, or lacks what a command needs from it."""


class BackendError(RLRCError):
    """A backend is unknown, not installed here, or failed to run."""


class InputError(RLRCError, ValueError):
    """An input to the policy (image, instruction) is malformed."""


class NonFiniteOutputError(BackendError):
    """A network produced NaN or Inf (logits, hidden states or an action): the step has no safe action."""
