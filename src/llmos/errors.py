"""User-facing errors.

Everything a user can get wrong (a config key, a data file, a checkpoint directory) raises a
subclass of :class:`LlmosError` with a message that names the file, line or field and says what
was expected. The CLI prints the message and exits with status 2, without a traceback.
"""

from __future__ import annotations


class LlmosError(Exception):
    """An error caused by user input; the message is shown as-is."""


class ConfigError(LlmosError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(LlmosError, ValueError):
    """A data file is missing, empty or malformed."""


class CheckpointError(LlmosError, ValueError):
    """A checkpoint directory is missing a file or holds a corrupt one."""
