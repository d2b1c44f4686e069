"""segkit's error types: one leaf module that every layer (data, models, checkpoints, engine) can import.

Each is raised with a message that names the file or key at fault and the problem. The
``segkit`` command line prints the message and exits with status 1 (no traceback); usage
mistakes (bad flags) exit with 2.
"""

from __future__ import annotations


class SegkitError(Exception):
    """Base class of segkit's own errors."""


class DataError(SegkitError, ValueError):
    """Bad input data (image, label, split file, dataset layout). The message names the file(s)."""


class CheckpointError(SegkitError, RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and the problem."""


class OutputError(SegkitError, OSError):
    """An output location that cannot be written (a file where a folder is needed, no permission …)."""


class UsageError(SegkitError, ValueError):
    """A request that cannot run as given (bad argument values or combinations); the CLI exits with 2."""


class ConfigError(UsageError):
    """Invalid configuration; the message names the offending key (dotted path) and where it came from."""


class MissingDependencyError(SegkitError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


__all__ = [
    "SegkitError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "UsageError",
    "OutputError",
    "MissingDependencyError",
]
