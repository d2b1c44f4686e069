"""segkit's error types: one leaf module that every layer (data, models, checkpoints, engine) can import.

Each is raised with a message that names the file or key at fault and the problem. The
``segkit`` command line prints the message in one line (no traceback) and exits with one policy,
the same in every sub-command:

* 0 success;
* 1 bad data, a file or the environment: :class:`DataError`, :class:`NotFoundError`,
  :class:`CheckpointError`, :class:`OutputError`, :class:`DeviceError`, :class:`InsufficientMemoryError`,
  :class:`MissingDependencyError` (and any other error of a run);
* 2 usage: :class:`UsageError` and its subclasses (:class:`ConfigError`, :class:`UnknownNameError`,
  :class:`UsageTypeError`, :class:`OutputExistsError`), argparse's own errors.

Each is also the built-in type a Python caller would catch for it (``ValueError``,
``FileNotFoundError``, ``KeyError``, ``TypeError``, ``MemoryError`` …), with the same message as
the command line.
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


class OutputExistsError(UsageError):
    """An output (folder or file) already holds results and ``--overwrite`` / ``overwrite=True`` was not
    given; nothing was changed. The message names the path, what is there and how to proceed."""


class UnknownNameError(UsageError, KeyError):
    """An unknown name where one of a fixed list is expected (a zoo model, an encoder, a dataset type);
    the message suggests the nearest names by edit distance. Also a ``KeyError`` (a failed look-up)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UsageTypeError(UsageError, TypeError):
    """An argument of the wrong type (Python API), or an unknown keyword argument; names it and what was expected."""


class NotFoundError(DataError, FileNotFoundError):
    """A file, folder or name given as input that does not exist; the message names it (exit status 1). A
    ``FileNotFoundError``, and a :class:`DataError` (a missing image of a data set is bad data)."""


class DeviceError(SegkitError, RuntimeError):
    """The requested device is not available on this machine (CUDA on a CPU-only build, ``cuda:3`` with two
    GPUs); the message lists what is. An environment problem, not a usage mistake: exit status 1."""


class InsufficientMemoryError(SegkitError, MemoryError):
    """A step would not fit in the memory of this machine (an estimate made before it runs); the message
    gives the estimate, what is available and what to change. Exit status 1 (the environment, not usage)."""


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
    "OutputExistsError",
    "MissingDependencyError",
    "UnknownNameError",
    "UsageTypeError",
    "NotFoundError",
    "DeviceError",
    "InsufficientMemoryError",
]
