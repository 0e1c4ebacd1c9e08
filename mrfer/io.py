"""Atomic output writing: a stage never leaves a half-written file behind, and a full disk is
one clear error (`NoSpaceError`), never a crash that leaves its temp files to fill the disk."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from numpy.lib.format import open_memmap

from mrfer.errors import InputError, MissingInputError, NoSpaceError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` (file or directory); rename it into place on success.

    On an exception the temp path is removed and any previous `path` is left untouched; a write
    that found the disk full (ENOSPC) becomes one `NoSpaceError` naming `path`. The temp folder
    of an earlier run that was killed outright (SIGKILL, out of memory) is removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp"
    remove_stale_temps(path.parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    except NoSpaceError as e:   # raised inside: named by the path it will have, not the temp one
        raise NoSpaceError(str(e).replace(str(tmp), str(path))) from None
    except Exception as e:
        if disk_full(e):
            raise NoSpaceError(f"{path}: no space left on device; the partial output was removed and any earlier "
                               f"{path.name} is unchanged: free some space and run again") from None
        raise
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from or while handling, is ENOSPC (torch's
    writer, for one, replaces the OSError of a full disk with a RuntimeError of its own)."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def remove_stale_temps(folder: Path, prefix: str) -> None:
    """Remove `folder`'s temp folders named `<prefix><pid>-*` whose process no longer runs here."""
    for entry in folder.iterdir():
        pid = entry.name[len(prefix):].partition("-")[0] if entry.name.startswith(prefix) else ""
        if not pid.isdigit() or int(pid) == os.getpid() or not entry.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
            continue                        # still running: another run is writing it
        except ProcessLookupError:
            pass
        except OSError:                     # PermissionError: alive, someone else's
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("removed %s: the temp output of an earlier run (process %s) that was killed", entry, pid)


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e7 else f"{nbytes / 1e6:.2f} MB"


def require_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse, in one line, to write `nbytes` at `path` when its device has less free space."""
    path = Path(path)
    folder = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise no_room(path, nbytes, free)


def no_room(path: Path, nbytes: int, free: int) -> NoSpaceError:
    return NoSpaceError(f"{path}: needs {nbytes} bytes ({_gb(nbytes)}) but its device has {free} bytes "
                        f"({_gb(free)}) free: free some space (or write elsewhere) and run again")


def create_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.memmap:
    """A new `.npy` file of `shape`, memory-mapped for writing, with its disk blocks reserved first.

    A write into a memory map that finds the disk full kills the process with SIGBUS: no message,
    no clean-up. So the free space is checked and the blocks allocated (posix_fallocate) before
    anything is written: a full disk is one `NoSpaceError` here instead."""
    path = Path(path)
    out = open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))   # sparse: no blocks yet
    size = int(out.offset + out.nbytes)
    require_space(path, size)
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        with open(path, "r+b") as f:
            try:
                fallocate(f.fileno(), 0, size)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise no_room(path, size, shutil.disk_usage(path.parent).free) from None
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise                   # (a file system that cannot reserve: the check above stands)
    return out


def shrink_npy(path: str | os.PathLike, rows: int) -> None:
    """Keep the first `rows` rows of an `.npy` file in place (rewrite the header, truncate the
    rest): the same bytes as `np.save(path, array[:rows])`, without a second copy on disk."""
    path = Path(path)
    fmt = np.lib.format
    with open(path, "r+b") as f:
        version = fmt.read_magic(f)
        read, write = {(1, 0): (fmt.read_array_header_1_0, fmt.write_array_header_1_0),
                       (2, 0): (fmt.read_array_header_2_0, fmt.write_array_header_2_0)}[version]
        shape, fortran, dtype = read(f)
        offset = f.tell()
        header = io.BytesIO()
        write(header, {"descr": fmt.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (rows, *shape[1:])})
        if fortran or len(header.getvalue()) != offset or not 0 <= rows <= shape[0]:
            raise ValueError(f"{path}: cannot shrink {shape} to {rows} rows in place")
        f.seek(0)
        f.write(header.getvalue())
        f.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingInputError(f"{path}: file not found (run the stage that writes it first)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
