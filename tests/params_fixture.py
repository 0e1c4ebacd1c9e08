"""Configs for unit tests: a section of the repo's params.yaml (with the shared sections it takes)
with some keys replaced, validated by the section's schema like a stage would."""
from __future__ import annotations

from pathlib import Path

import yaml

from mrfer import config

REPO = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def section(name: str, schema, **overrides):
    """`params.yaml`'s section `name` (+ the shared seed when the schema has one), with `overrides`
    replacing whole keys; `lambda_` may be given for `lambda`."""
    raw = raw_params()
    values = {**raw[name], **{("lambda" if k == "lambda_" else k): v for k, v in overrides.items()}}
    values, _ = config.inherit(REPO / "params.yaml", raw, schema, values)   # the shared `loop` etc., as a stage reads
    return schema.model_validate(values)
