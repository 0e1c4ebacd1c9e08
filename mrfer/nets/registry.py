"""Model registry, a leaf as timm's is: model files register a builder by name, `build` makes one.

It imports no model file; `mrfer.nets` (the package) imports them all, so importing any part of
`mrfer.nets` registers every model.
"""
from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

from pydantic import TypeAdapter, ValidationError
from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Register a builder `fn(num_classes, in_chans, image_size, *, option=default, ...)`.

    Its keyword-only arguments are the model's options; anything else passed to `build`
    is rejected.
    """
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = fn
        return fn
    return decorator


def available() -> list[str]:
    return sorted(_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available())}")
    return _BUILDERS[name]


def default_options(name: str) -> dict[str, Any]:
    """The options model `name` accepts, with their defaults."""
    params = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build(name: str, num_classes: int, in_chans: int = 3, image_size: int = 64,
          **options: Any) -> nn.Module:
    """Build model `name` for `num_classes` classes on (in_chans, image_size, image_size) input.

    The returned model carries `config`, the exact arguments, so `build(**model.config)`
    rebuilds it (checkpoints store it).
    """
    check_options(name, options)
    if in_chans not in (1, 3):
        raise ValueError(f"model {name!r}: in_chans must be 1 (gray) or 3 (RGB), got {in_chans}")
    if image_size < 32:
        raise ValueError(f"model {name!r}: image_size must be >= 32, got {image_size}")
    if num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be >= 2, got {num_classes}")
    model = _builder(name)(num_classes, in_chans, image_size, **options)
    model.config = {"name": name, "num_classes": num_classes, "in_chans": in_chans,
                    "image_size": image_size, **default_options(name), **options}
    return model


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse an unknown model, or an option its builder does not take or of the wrong type."""
    builder = _builder(name)
    allowed = default_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} takes no option(s) {', '.join(unknown)}; "
                         f"its options: {', '.join(sorted(allowed)) or 'none'}")
    hints = typing.get_type_hints(builder)
    for key, value in options.items():
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as e:
            raise ValueError(f"model {name!r} option {key} = {value!r}: {e.errors()[0]['msg']}") from None
