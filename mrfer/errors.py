"""The project's own user-error types: bad params, bad datasets, bad input files.

`cli.run` prints these as one line and exits 2; any other exception is a bug and keeps its
traceback. They subclass the builtin each replaces, so `except ValueError` still catches them.
"""
from __future__ import annotations


class MrferError(Exception):
    """Base: the user's input or params are wrong, and the message says how."""


class ParamsError(MrferError, ValueError):
    """A params file is missing or malformed, or a key has a bad value."""


class DatasetError(MrferError, ValueError):
    """A dataset's layout or its files cannot be used."""


class ImageError(MrferError, ValueError):
    """An image or video frame is unreadable or has an unusable shape."""


class InputError(MrferError, ValueError):
    """An input file (array, manifest, model, report) is unusable or does not fit the others."""


class MissingInputError(MrferError, FileNotFoundError):
    """An input file or folder a stage needs does not exist."""


class UnsafeFileError(MrferError, ValueError):
    """A weights file holds code (pickled globals) that a weights-only load refuses to run."""

    def __init__(self, path, global_name: str):
        super().__init__(f"refused: {path} contains {global_name}, which a weights-only load will not run; "
                         "get the weights as a plain state dict or numpy arrays")
        self.path, self.global_name = path, global_name


class NoSpaceError(MrferError, OSError):
    """A write found no space left on its device (ENOSPC), or too little free space to start."""


class DivergedError(MrferError, ArithmeticError):
    """Training stopped: the loss became NaN or infinite."""
