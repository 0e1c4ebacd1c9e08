"""k-fold aggregate: mean ± std over the fold reports of every metric, per model and scale."""
from __future__ import annotations

import os

import numpy as np
from pydantic import ConfigDict, Field

from mrfer.config import Section
from mrfer.data.splits import Fold
from mrfer.errors import ParamsError
from mrfer.io import read_json, write_json

METRICS = ("accuracy", "average_accuracy", "macro_f1")



class KfoldFolds(Section):
    """`kfold_test` as kfold-aggregate reads it: which folds there are (`train` is kfold-test's)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    folds: dict[str, Fold] = Field(min_length=1)

def aggregate(fold_reports: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Mean ± std (ddof 1) over folds of every metric, per model and scale; written to `out`."""
    reports = [read_json(p) for p in fold_reports]
    if not reports:
        raise ParamsError("kfold_test.folds: no fold reports to aggregate")
    result: dict = {"folds": len(reports), "protocol": reports[0]["protocol"], "starts": reports[0]["starts"]}
    for model, per_scale in reports[0]["metrics"].items():
        result[model] = {}
        for scale in per_scale:
            entry = {}
            for key in METRICS:
                values = np.array([r["metrics"][model][scale][key] for r in reports])
                entry[f"{key}_mean"] = round(float(values.mean()), 4)
                entry[f"{key}_std"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
            result[model][scale] = entry
    write_json(out, result)
    return result
