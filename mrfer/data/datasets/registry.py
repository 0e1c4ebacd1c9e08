"""Registry of dataset readers, a leaf: reader modules register themselves with `register`;
`mrfer.data.datasets` (the package) imports every reader, so importing it registers them all.

A reader is `fn(root: Path, options: dict, skips: SkipLog) -> Iterable[Record]`, registered
with its option defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from mrfer.data.records import Record, SkipLog
from mrfer.errors import DatasetError

ReaderFn = Callable[[Path, dict, SkipLog], Iterable[Record]]


@dataclass(frozen=True)
class Reader:
    name: str
    fn: ReaderFn
    defaults: dict[str, Any]
    doc: str


READERS: dict[str, Reader] = {}


def register(name: str, **defaults: Any) -> Callable[[ReaderFn], ReaderFn]:
    def wrap(fn: ReaderFn) -> ReaderFn:
        READERS[name] = Reader(name, fn, defaults, (fn.__doc__ or "").strip())
        return fn
    return wrap


def available() -> list[str]:
    """Names of every registered reader."""
    return sorted(READERS)


def get(name: str) -> Reader:
    if name not in READERS:
        raise DatasetError(f"unknown dataset '{name}' (known: {', '.join(sorted(READERS))})")
    return READERS[name]


def check_options(name: str, options: dict) -> None:
    """Refuse an option reader `name` does not take, naming it and the allowed ones.

    A DatasetError is a ValueError, so a params schema's validator can call this directly."""
    reader = get(name)
    unknown = sorted(set(options) - set(reader.defaults))
    if unknown:
        raise DatasetError(f"dataset '{name}': unknown option(s) {', '.join(unknown)} "
                           f"(allowed: {', '.join(sorted(reader.defaults)) or 'none'})")


def read(name: str, root: str | Path, options: dict | None = None,
         skips: SkipLog | None = None) -> tuple[list[Record], SkipLog]:
    """Read every record of dataset `name` under `root`; options left out take the reader's
    defaults, and an option the reader does not take is an error."""
    reader = get(name)
    options = dict(options or {})
    check_options(name, options)
    skips = skips if skips is not None else SkipLog()
    records = list(reader.fn(Path(root), {**reader.defaults, **options}, skips))
    if not records:
        raise DatasetError(f"{root}: dataset '{name}' yielded no usable faces "
                           f"({len(skips)} skipped: {skips.reasons()})")
    return records, skips
