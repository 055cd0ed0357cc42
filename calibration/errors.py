"""The calibration tools' own error type (the rest come from rlrc_runtime.errors)."""
from __future__ import annotations

from rlrc_runtime.errors import RLRCError


class CalibrationError(RLRCError):
    """The frames do not support a measurement (board or marker not seen, too few points, degenerate motion)."""
