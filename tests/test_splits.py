import numpy as np
import pytest

from mrfer.data.splits import assign_folds, assign_splits, groups_of


def toy(n_subjects=30, per_subject=8, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"S{i:03d}" for i in range(n_subjects)], per_subject)
    labels = rng.integers(0, n_classes, len(subjects))
    return labels, groups_of(list(subjects), [None] * len(subjects))


def test_groups_prefer_subject_then_sequence_then_row():
    g = groups_of(["S1", None, None], ["a", "b", None])
    assert list(g) == ["subject:S1", "sequence:b", "row:2"]


def test_splits_are_subject_disjoint_and_sized():
    labels, groups = toy()
    split = assign_splits(labels, groups, [None] * len(labels), 0.15, 0.2, seed=1)
    sets = {name: set(groups[split == name]) for name in ("train", "val", "test")}
    assert not sets["train"] & sets["test"] and not sets["train"] & sets["val"] and not sets["val"] & sets["test"]
    assert 0.12 < (split == "test").mean() < 0.3
    assert 0.08 < (split == "val").mean() < 0.25
    # all classes present in test (stratified)
    assert set(labels[split == "test"]) == set(labels)


def test_splits_deterministic_by_seed():
    labels, groups = toy()
    a = assign_splits(labels, groups, [None] * len(labels), 0.15, 0.2, seed=1)
    b = assign_splits(labels, groups, [None] * len(labels), 0.15, 0.2, seed=1)
    c = assign_splits(labels, groups, [None] * len(labels), 0.15, 0.2, seed=2)
    assert (a == b).all() and (a != c).any()


def test_source_split_kept_and_missing_val_carved_from_train():
    labels, groups = toy()
    source = ["test" if i % 5 == 0 else "train" for i in range(len(labels))]
    split = assign_splits(labels, groups, source, 0.15, 0.2, seed=0)
    assert all(split[i] == "test" for i in range(0, len(labels), 5))
    assert (split == "val").any()
    assert all(source[i] == "train" for i in np.flatnonzero(split == "val"))


def test_folds_subject_and_image_protocols():
    labels, groups = toy()
    subject_folds = assign_folds(labels, groups, 5, "subject", seed=0)
    assert set(subject_folds) == set(range(5))
    for g in set(groups):
        assert len(set(subject_folds[groups == g])) == 1
    image_folds = assign_folds(labels, groups, 5, "image", seed=0)
    assert any(len(set(image_folds[groups == g])) > 1 for g in set(groups))
    with pytest.raises(ValueError, match="protocol"):
        assign_folds(labels, groups, 5, "video", seed=0)


def test_too_few_groups_is_a_clear_error():
    labels, groups = toy(n_subjects=3)
    with pytest.raises(ValueError, match="only 3 groups"):
        assign_splits(labels, groups, [None] * len(labels), 0.1, 0.1, seed=0)
