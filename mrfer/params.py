"""params.yaml access: one section per stage, validated against the keys it may hold."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """A params file is missing, malformed, or has a bad key/value."""


def load(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
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


def section(path: str | os.PathLike, name: str, allowed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return section `name` plus the shared top-level `seed`.

    If `allowed` is given (key -> default), unknown keys are an error naming the file and key,
    and missing keys take their defaults, so old params files keep working.
    """
    data = load(path)
    if name not in data:
        raise ParamsError(f"{path}: no section '{name}'")
    cfg = data[name] or {}
    if not isinstance(cfg, dict):
        raise ParamsError(f"{path}: section '{name}' must be a mapping")
    if allowed is not None:
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ParamsError(
                f"{path}: unknown key(s) in section '{name}': {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(allowed))})")
        cfg = {**allowed, **cfg}
    cfg = dict(cfg)
    cfg.setdefault("seed", data.get("seed", 0))
    return cfg


def require(cfg: dict[str, Any], key: str, choices: tuple | None = None, where: str = "params") -> Any:
    """Fetch a key, failing with a clear message if it is absent or not one of `choices`."""
    if key not in cfg:
        raise ParamsError(f"{where}: missing key '{key}'")
    value = cfg[key]
    if choices is not None and value not in choices:
        raise ParamsError(f"{where}: '{key}' is {value!r}, expected one of {list(choices)}")
    return value
