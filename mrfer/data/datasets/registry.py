"""Registry of dataset readers, a leaf: reader modules register themselves with `register`;
`mrfer.data.datasets` (the package) imports every reader, so importing it registers them all.

A reader is `fn(root: Path, options: dict, skips: SkipLog) -> Iterable[Record]`, registered
with its option defaults and, for an option that takes one of a few values, those values
(`choices`), so a bad value is refused before any work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    choices: dict[str, tuple] = field(default_factory=dict)   # option -> its allowed values
    task: str = "expression"   # expression (labels are mrfer.data.labels indices) | identity (labels are identities)


READERS: dict[str, Reader] = {}


def register(name: str, *, choices: dict[str, tuple] | None = None, task: str = "expression",
             **defaults: Any) -> Callable[[ReaderFn], ReaderFn]:
    """Register a reader with its option defaults; `choices` lists the allowed values of
    options that take one of a few (each default must be one of them)."""
    choices = dict(choices or {})
    for option, values in choices.items():
        assert defaults.get(option) in values, f"{name}: default of {option} is not one of {values}"

    def wrap(fn: ReaderFn) -> ReaderFn:
        READERS[name] = Reader(name, fn, defaults, (fn.__doc__ or "").strip(), choices, task)
        return fn
    return wrap


def available(task: str = "expression") -> list[str]:
    """Names of the registered readers of `task`: expression (FER) or identity (face recognition)."""
    return sorted(name for name, reader in READERS.items() if reader.task == task)


def get(name: str) -> Reader:
    if name not in READERS:
        raise DatasetError(f"unknown dataset '{name}' (known: {', '.join(sorted(READERS))})")
    return READERS[name]


def check_options(name: str, options: dict) -> None:
    """Refuse an option reader `name` does not take, naming it and the allowed ones, and a
    value outside an option's declared choices, naming the option, the value and the choices.

    A DatasetError is a ValueError, so a params schema's validator can call this directly."""
    reader = get(name)
    unknown = sorted(set(options) - set(reader.defaults))
    if unknown:
        raise DatasetError(f"dataset '{name}': unknown option(s) {', '.join(unknown)} "
                           f"(allowed: {', '.join(sorted(reader.defaults)) or 'none'})")
    for option, values in reader.choices.items():
        if option in options and options[option] not in values:
            raise DatasetError(f"dataset '{name}': option {option} must be one of "
                               f"{', '.join(map(str, values))}, got {options[option]!r}")


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
