"""Exception types of the built-in simulation benchmark (`sim`).

They derive from the project's base classes in `rlrc_runtime.errors`, so a caller that already
catches `ConfigError` (bad flag or config field) also catches a bad family or split name here.
Every message names the field or file, the value found, what was expected and the fix.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

from rlrc_runtime.errors import ConfigError, RLRCError
from rlrc_runtime.errors import DatasetError as BaseDatasetError


class SimError(RLRCError):
    """Base class of every error the simulation benchmark raises on purpose."""


class SimConfigError(SimError, ConfigError):
    """A simulation config value (a dataclass field or CLI flag) is invalid."""


class UnknownNameError(SimConfigError):
    """A suite, family or split name is not registered."""


class ActionError(SimError, ValueError):
    """An action passed to `TabletopEnv.step` has the wrong shape, dtype range or is not finite."""


class DatasetError(SimError, BaseDatasetError):
    """Demonstrations cannot be written as asked (the reader's errors are rlrc_runtime's DatasetError)."""


def unknown_name(field: str, value: str, choices: Iterable[str]) -> UnknownNameError:
    """Build an `UnknownNameError` for `field=value` with a "did you mean" hint from `choices`."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(
        f"{field}={value!r} is not known; expected one of {choices}.{hint} "
        f"(`rlrc-sim list` prints every family and split.)"
    )
