"""Train/val/test splits and k folds, by subject wherever subjects exist.

Rows are grouped by subject, else by sequence (frames of one clip are near-duplicates), else
each row is its own group. No group ever lands in two splits; labels are stratified as far as
the groups allow (sklearn's StratifiedGroupKFold). Where every group is one row (datasets without
subjects or sequences: FER2013, RAF-DB, AffectNet), grouping constrains nothing and sklearn's
StratifiedKFold makes the same kind of split in a fraction of the time (StratifiedGroupKFold
spends ~0.7 ms per group: minutes at 300k faces; bench/scale.py).
"""
from __future__ import annotations

import logging

import numpy as np
from pydantic import Field
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from mrfer.config import Section
from mrfer.errors import DatasetError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FOLD_PROTOCOLS = ("subject", "image")


class Fold(Section):
    """One entry of `kfold_test.folds`: the fold held out."""

    fold: int = Field(ge=0, description="the held-out fold (0 .. assemble.folds - 1)")

def groups_of(subjects: list, sequences: list) -> np.ndarray:
    """Group id per row: subject, else sequence, else the row itself."""
    out = []
    for i, (subject, sequence) in enumerate(zip(subjects, sequences)):
        if subject not in (None, ""):
            out.append(f"subject:{subject}")
        elif sequence not in (None, ""):
            out.append(f"sequence:{sequence}")
        else:
            out.append(f"row:{i}")
    return np.asarray(out)


def group_splits(labels: np.ndarray, groups: np.ndarray, k: int, seed: int):
    """The (train, held) index pairs of a shuffled, stratified, group-disjoint k-fold split."""
    x = np.zeros(len(labels))
    singletons = len(np.unique(groups)) == len(groups)
    largest_class = np.unique(labels, return_counts=True)[1].max(initial=0)
    if largest_class < k:  # no class can be spread over k parts: stratifying is impossible
        log.warning("every class has fewer than %d rows: the %d-way split is by group but not stratified", k, k)
        return GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, labels, groups)
    if singletons:  # plain stratified folds
        return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, labels)
    return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, labels, groups)


def held_out(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a group-disjoint, stratified subset of about `fraction` of the rows."""
    n_splits = max(2, round(1 / fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise DatasetError(f"cannot hold out {fraction:.0%} by group: only {n_groups} groups "
                           f"(need at least {n_splits}); the dataset is too small for this split")
    _, held = next(group_splits(labels, groups, n_splits, seed))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(labels: np.ndarray, groups: np.ndarray, source_splits: list,
                  val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'val'/'test' per row. A dataset's own split is kept; what it lacks is carved
    out of its training part by group."""
    labels = np.asarray(labels)
    split = np.array([s if s in SPLITS else "train" for s in source_splits], dtype=object)
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction <= 0 or (split == name).any():
            continue
        train = np.flatnonzero(split == "train")
        held = held_out(labels[train], groups[train], fraction / (1 - (split != "train").mean()), seed)
        split[train[held]] = name
    return split.astype(str)


def assign_folds(labels: np.ndarray, groups: np.ndarray, k: int, protocol: str, seed: int) -> np.ndarray:
    """Fold index (0..k-1) per row: grouped by subject, or image-level (MAFER's Oulu protocol)."""
    if protocol not in FOLD_PROTOCOLS:
        raise ValueError(f"fold protocol must be one of {FOLD_PROTOCOLS}, got {protocol!r}")
    labels = np.asarray(labels)
    folds = np.full(len(labels), -1, dtype=np.int64)
    if protocol == "subject":
        n_groups = len(np.unique(groups))
        if n_groups < k:
            raise DatasetError(f"cannot make {k} subject folds from {n_groups} groups; lower assemble.folds")
        parts = group_splits(labels, groups, k, seed)
    else:
        largest = np.unique(labels, return_counts=True)[1].max(initial=0)
        if largest < k:
            raise DatasetError(f"cannot make {k} image folds: the largest class has {largest} faces; "
                               f"lower assemble.folds")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels)
    for fold, (_, held) in enumerate(parts):
        folds[held] = fold
    return folds
