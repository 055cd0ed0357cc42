"""The calibration tools' own error type (the rest come from rlrc_runtime.errors)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rlrc_runtime.errors import ConfigError, RLRCError


class CalibrationError(RLRCError):
    """The frames do not support a measurement (board or marker not seen, too few points, degenerate motion)."""


def read_yaml(path: Path, what: str, make_one: str) -> Any:
    """The parsed YAML of a calibration file; a missing or unparsable file is a ConfigError naming
    ``what`` it is, the path, and ``make_one`` (the command that writes one)."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist; {make_one}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} file {path} is not valid YAML: {exc}") from exc
