"""params.yaml, read through one typed schema per section.

Each section's schema is a `Section` (a frozen pydantic model) declared beside the code that
reads it: `mrfer/data/extract.py` declares `extract`, `mrfer/train/base.py` declares
`pretrain_base`, and so on, so a stage depends only on the schemas it uses. A schema types,
ranges and documents every key once and holds no values: params.yaml holds them all. A bad
value is refused before any work, as one line naming the file, section.key, value and what is
allowed.

Training-loop settings are said once: a schema whose class names `inherits` (e.g. ("loop",))
takes each key it does not set itself from those top-level sections, in order, the section's own
keys winning (`load_section`). The section remembers where each value came from, so the params
trace names `loop.lr` when a stage used the shared value and `pretrain_base.lr` when it set its own.

Every `Section` records which of its keys the code read. With `MRFER_PARAMS_TRACE=<file>` set,
`cli.run` appends each stage's reads to that file; a test compares them with the params the
stage declares in dvc.yaml (`tests/test_pipeline_e2e.py`), so no key is accepted and ignored.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from mrfer.errors import ParamsError

S = TypeVar("S", bound="Section")
_LOADED: list[tuple[str, "Section"]] = []  # (section name, section) of every section this process loaded


class Section(BaseModel):
    """A params section: unknown keys refused, values frozen, reads recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    inherits: ClassVar[tuple[str, ...]] = ()   # top-level sections whose keys fill the ones this section omits
    _reads: set[str] = PrivateAttr(default_factory=set)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)   # key -> the section its value came from

    def unused(self) -> set[str]:
        """Keys (as params.yaml spells them) this configuration does not use, e.g. `plateau` under a
        cosine schedule: the params trace does not expect them read."""
        return set()

    def __getattribute__(self, name: str) -> Any:
        if name in type(self).model_fields:
            private = object.__getattribute__(self, "__pydantic_private__")
            if private is not None:
                private["_reads"].add(name)
        return super().__getattribute__(name)


def _reads(section: Section) -> set[str]:
    return section.__pydantic_private__["_reads"]


def read_params(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at top level")
    return data


def _where(name: str, loc: tuple, origins: dict) -> str:
    """The dotted key of an error's location, under the section the value came from."""
    parts = [str(p) for p in loc]
    for i, part in enumerate(parts):
        origin = origins.get(part)
        if isinstance(origin, str):   # inherited from a shared section ("" for the top level)
            return ".".join(p for p in [origin, *parts[i:]] if p)
        origins = origin if isinstance(origin, dict) else {}
    return ".".join([name, *parts])


def describe_errors(path: str | os.PathLike, name: str, error: ValidationError, schema: type[Section],
                    origins: dict | None = None) -> str:
    """One line: file, section.key (the section it came from, when inherited), the value, and
    what is allowed."""
    parts = []
    for e in error.errors(include_url=False):
        key = _where(name, e["loc"], origins or {})
        if e["type"] == "missing":
            where = " or in ".join([f"'{name}'", *(f"'{p}'" for p in schema.inherits)])
            parts.append(f"{key} is missing (set it in section {where}; see the schema's description)")
        elif e["type"] == "extra_forbidden":
            parent = schema
            for p in e["loc"][:-1]:
                field = parent.model_fields.get(str(p)) if isinstance(parent, type) else None
                parent = field.annotation if field is not None else None
            allowed = sorted(_name(parent, f) for f in parent.model_fields) if isinstance(parent, type) and issubclass(parent, Section) else []
            parts.append(f"{key} is not a key of this section" + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
        else:
            message = e["msg"].removeprefix("Value error, ")
            parts.append(f"{key} = {e['input']!r}: {message}" if e["loc"] else f"{key}: {message}")
    return f"{path}: " + "; ".join(parts)


def load_section(path: str | os.PathLike, name: str, schema: type[S], data: dict | None = None) -> S:
    """Section `name` of the params file (a dotted name such as `datasets.fer2013` is an entry of a
    section), validated by `schema`; the shared top-level `seed` fills the section's `seed` key
    when the schema has one."""
    data = read_params(path) if data is None else data
    values = data
    for part in name.split("."):
        if not isinstance(values, dict) or part not in values:
            raise ParamsError(f"{path}: no section '{name}'")
        values = values[part]
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: section '{name}' must be a mapping, got {values!r}")
    values, origins = inherit(path, data, schema, values)
    try:
        section = schema.model_validate(values)
    except ValidationError as e:
        raise ParamsError(describe_errors(path, name, e, schema, origins)) from None
    _set_origins(section, origins)
    _LOADED.append((name, section))
    return section


def _field_names(schema: type[Section]) -> set[str]:
    return {_name(schema, f) for f in schema.model_fields}


def inherit(path: str | os.PathLike, data: dict, schema: type[Section], values: dict) -> tuple[dict, dict]:
    """`values` completed from the sections `schema.inherits` names (only the keys the schema has;
    the section's own keys win), the shared `seed` too, and where each inherited value came from
    ("" for the top level). Nested sections that inherit are completed the same way."""
    keys = _field_names(schema)
    merged, origins = {}, {}
    for parent in schema.inherits:
        shared = data.get(parent)
        if not isinstance(shared, dict):
            continue   # a key it would have given is then reported missing
        unknown = sorted(set(shared) - keys)
        if unknown:   # every key of a shared section is one its sections take: anything else is a typo
            raise ParamsError(f"{path}: {parent}.{unknown[0]} is not a key of this section "
                              f"(allowed: {', '.join(sorted(keys - {'seed'}))})")
        for key in keys & set(shared):
            merged[key], origins[key] = shared[key], parent
    if "seed" in keys and "seed" in data:
        merged["seed"], origins["seed"] = data["seed"], ""
    merged.update(values)
    origins = {k: v for k, v in origins.items() if k not in values}
    for field_name, field in schema.model_fields.items():
        key, inner = _name(schema, field_name), field.annotation
        if isinstance(inner, type) and issubclass(inner, Section) and inner.inherits and isinstance(merged.get(key), dict):
            merged[key], origins[key] = inherit(path, data, inner, merged[key])
    return merged, origins


def _set_origins(section: Section, origins: dict) -> None:
    own = {}
    for key, origin in origins.items():
        value = section.__dict__.get(_field(type(section), key))
        if isinstance(value, Section) and isinstance(origin, dict):
            _set_origins(value, origin)
        elif isinstance(origin, str):
            own[key] = origin
    section.__pydantic_private__["_origins"] = own


def _field(schema: type[Section], key: str) -> str:
    """The field behind a params key (`lambda` -> `lambda_`)."""
    return next(f for f in schema.model_fields if _name(schema, f) == key)


def _name(schema: type[Section], field: str) -> str:
    """The key as params.yaml spells it (`lambda` is a Python keyword, so its field is `lambda_`)."""
    return schema.model_fields[field].alias or field


class Shared(Section):
    """The top-level keys every stage may read."""

    seed: int


TOP_LEVEL = ("seed", "datasets", "train_on")   # params.yaml's keys that are not a stage's section
DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")   # names become folder and DVC stage names


def load_datasets(path: str | os.PathLike, data: dict | None = None) -> list[str]:
    """The names under `datasets` (each validated where a stage loads it as `datasets.<name>`),
    after checking the names and that `train_on` is one of them."""
    data = read_params(path) if data is None else data
    names = data.get("datasets")
    if not isinstance(names, dict) or not names:
        raise ParamsError(f"{path}: `datasets` must map dataset names to {{reader, root, options}}")
    bad = [n for n in names if not DATASET_NAME.match(str(n))]
    if bad:
        raise ParamsError(f"{path}: datasets: bad name(s) {bad}: letters, digits and _ (they name folders and stages)")
    if data.get("train_on") not in names:
        raise ParamsError(f"{path}: train_on = {data.get('train_on')!r}: must be one of datasets ({', '.join(names)})")
    return list(names)


def load_seed(path: str | os.PathLike) -> int:
    """The shared top-level `seed`, for a stage that reads no section of its own."""
    data = read_params(path)
    try:
        shared = Shared.model_validate({"seed": data.get("seed")})
    except ValidationError as e:
        raise ParamsError(describe_errors(path, "", e, Shared).replace(": .seed", ": seed")) from None
    _LOADED.append(("", shared))
    return shared.seed


def _sections_in(value: Any) -> dict[str, Section] | None:
    """A dict whose values are all sections (e.g. kfold_test.folds), else None."""
    if isinstance(value, dict) and value and all(isinstance(v, Section) for v in value.values()):
        return value
    return None


def _key(section: Section, field: str, prefix: str) -> str:
    """The dotted params key of `field`: under the section its value came from when inherited."""
    name = _name(type(section), field)
    origin = section.__pydantic_private__["_origins"].get(name)
    if origin is None:
        return f"{prefix}.{name}"
    return f"{origin}.{name}" if origin else name


def leaves(section: Section, prefix: str) -> set[str]:
    """Dotted keys of every plain value under `section` that this configuration uses (the keys
    a stage must read)."""
    out = set()
    unused = section.unused()
    for field, value in section.__dict__.items():
        if _name(type(section), field) in unused:
            continue
        key = _key(section, field, prefix)
        inner = _sections_in(value)
        if isinstance(value, Section):
            out |= leaves(value, key)
        elif inner is not None:
            out |= {leaf for k, v in inner.items() for leaf in leaves(v, f"{key}.{k}")}
        else:
            out.add(key)
    return out


def reads(section: Section, prefix: str) -> set[str]:
    """Dotted keys the code read. A nested section counts through the keys read inside it; a dict
    of sections counts as read itself (its keys were looked at) plus what was read inside."""
    out = set()
    for field in _reads(section):
        value, key = section.__dict__[field], _key(section, field, prefix)
        inner = _sections_in(value)
        if isinstance(value, Section):
            out |= reads(value, key)
        elif inner is not None:
            out |= {key} | {r for k, v in inner.items() for r in reads(v, f"{key}.{k}")}
        else:
            out.add(key)
    return out


def _top(key: str) -> str:
    """`<section>.seed` is the shared top-level `seed`."""
    return "seed" if key.endswith(".seed") and key.count(".") == 1 else key


def trace() -> dict[str, list[str]]:
    """What this process loaded and read: {"loaded": [...], "read": [...]} as dotted keys."""
    loaded, read = set(), set()
    for name, section in _LOADED:
        loaded |= {_top(k) for k in leaves(section, name)}
        read |= {_top(k) for k in reads(section, name)}
    return {"loaded": sorted(loaded), "read": sorted(read)}


def write_trace(path: str | os.PathLike, argv: list[str]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"argv": argv, **trace()}) + "\n")
