"""Scales and kernels as params name them, and the low-resolution size each gives: what a stage
needs to know about degradation without degrading (the maths is mrfer.data.degrade)."""
from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from mrfer.config import Section

KERNELS = ("bicubic_aa", "bilinear", "matlab")
SCALE_RE = re.compile(r"^(?:x(\d+(?:\.\d+)?)|(\d+)px)$")


def parse_scale(scale: str) -> tuple[str, float]:
    """`"x4"` -> ("factor", 4.0); `"16px"` -> ("side", 16.0). ValueError on anything else."""
    match = SCALE_RE.match(str(scale).strip())
    if not match:
        raise ValueError(f"bad scale {scale!r}: use 'x<factor>' (e.g. x4) or '<n>px' (e.g. 16px)")
    if match.group(1):
        factor = float(match.group(1))
        if factor < 1:
            raise ValueError(f"bad scale {scale!r}: factor must be >= 1")
        return "factor", factor
    return "side", float(match.group(2))


def _check_scale(scale: str) -> str:
    parse_scale(scale)
    return scale


# A params value that is a scale: x<factor> or <n>px, checked when params are read.
Scale = Annotated[str, AfterValidator(_check_scale)]


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")


def low_size(height: int, width: int, scale: str, kernel: str) -> tuple[int, int]:
    """(h, w) of the low-resolution image for a scale, by the kernel's size rule.

    `matlab`: MATLAB's `ceil(n * (1/s))` for a factor (100 px at x3 -> 34), and for `<n>px` the
    short side exactly with the other side rounded up (imresize(img, [n NaN])). Other kernels
    round (100 px at x3 -> 33)."""
    check_kernel(kernel)
    kind, value = parse_scale(scale)
    if kernel == "matlab":
        if kind == "factor":
            return max(1, math.ceil(height * (1.0 / value))), max(1, math.ceil(width * (1.0 / value)))
        short = min(height, width)
        return max(1, math.ceil(height * value / short)), max(1, math.ceil(width * value / short))
    if kind == "factor":
        return max(1, round(height / value)), max(1, round(width / value))
    short = min(height, width)
    return max(1, round(height * value / short)), max(1, round(width * value / short))


# A low-resolution face whose short side is below this many pixels is a few flat blocks: a scale
# that gives one (x1000 on 64 px faces: 1 px) is refused where the face size is known.
MIN_LOW_SIDE = 4


def too_small(height: int, width: int, scale: str, kernel: str) -> str | None:
    """Why `scale` is refused for faces of height x width (its low-resolution short side is below
    MIN_LOW_SIDE), or None when it is fine."""
    low_h, low_w = low_size(height, width, scale, kernel)
    if min(low_h, low_w) >= MIN_LOW_SIDE:
        return None
    return (f"{scale!r} gives {low_w}x{low_h} px faces from {width}x{height} px ones; the low-resolution side must "
            f"be at least {MIN_LOW_SIDE} px")


class DownsampleParams(Section):
    """`downsample`: the low-resolution scales every later stage tests at, and how they are made."""

    scales: list[Scale] = Field(min_length=1, description="x<factor> (x2 ... x8) or <n>px (target short side); "
                                "full resolution (hr) is implicit")
    kernel: Literal[KERNELS] = Field(description="resampling down and back up: " + " | ".join(KERNELS))
    chunk: int = Field(gt=0, description="faces degraded per step (bounds memory)")
