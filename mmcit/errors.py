"""Every error mmcit raises on purpose, under one base, each with the exit code the CLI uses.

The CLI prints an ``MmcitError`` as one line (``mmcit: error: <message>``) and exits with its
``exit_code``; anything else is a bug and keeps its traceback. The classes also derive from the
built-in exception a caller would expect (``ValueError`` for bad input, ``RuntimeError`` for a
training failure), so ``except ValueError`` keeps working in user code.

Exit codes: 2 for anything the user can fix before a run starts (a config, the data, a checkpoint
that does not fit), 1 for a run that failed midway (its earlier results stay intact).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["MmcitError", "ConfigError", "DataError", "CheckpointError", "EmbedderUnavailable",
           "NonFiniteLoss", "SkippedSamplesWarning", "DATA_ERROR_KINDS"]


class MmcitError(Exception):
    """Base of mmcit's errors: a message meant for the user and the CLI's exit code."""

    exit_code: int = 1


class ConfigError(MmcitError, ValueError):
    """A configuration problem, reported before any work starts (exit code 2)."""

    exit_code = 2


class EmbedderUnavailable(ConfigError):
    """An instruction embedder cannot be built here (missing package or model folder)."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used (corrupt, incomplete, missing, or from another run); the
    message names the file (exit code 2)."""


#: Kinds of ``DataError``: what a checker groups problems by.
DATA_ERROR_KINDS: tuple[str, ...] = ("missing_file", "bad_file", "record", "missing_image", "unreadable_image")


class DataError(MmcitError, ValueError):
    """A benchmark file is missing, unreadable or malformed; the message names file and record
    (exit code 2).

    The keyword attributes let tools group problems without parsing messages: ``kind`` is one of
    ``DATA_ERROR_KINDS`` ("record", a malformed record, by default), ``path`` the file, ``index``
    the record index (None for a file-level problem) and ``image`` the image path as written in the
    record (image problems only).
    """

    exit_code = 2

    def __init__(self, message: str, *, kind: str = "record", path: Path | None = None,
                 index: int | None = None, image: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.path, self.index, self.image = kind, path, index, image


class NonFiniteLoss(MmcitError, RuntimeError):
    """The loss became NaN or infinite; the task is stopped before the weights are damaged further
    (exit code 1: the checkpoints and results of earlier tasks are intact)."""

    exit_code = 1


class SkippedSamplesWarning(UserWarning):
    """Samples were dropped (a missing image, with skipping asked for) and the caller asked for no
    count of them."""
