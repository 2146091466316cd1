"""User-facing error types.

Every error a user can cause (bad config, bad name, bad file) derives from
:class:`RepVGGNasError`; CLIs turn these into one line on stderr and exit
code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "RepVGGNasError",
    "SpecError",
    "UnknownNameError",
    "CheckpointError",
    "WeightsError",
    "ConfigError",
]


class RepVGGNasError(Exception):
    """Base class of errors caused by user input."""


class SpecError(RepVGGNasError, ValueError):
    """An architecture spec is inconsistent (zero depth, bad groups, ...)."""


class UnknownNameError(RepVGGNasError, LookupError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(RepVGGNasError):
    """A checkpoint file is missing, truncated, unsafe or inconsistent."""


class WeightsError(RepVGGNasError):
    """A state_dict does not fit the model it is loaded into."""


class ConfigError(RepVGGNasError, ValueError):
    """A config file or setting is invalid."""
