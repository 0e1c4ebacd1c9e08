import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mrfer import config
from mrfer.data import splits
from mrfer.data.assemble import AssembleParams, assemble
from mrfer.data.labels import CLASSES, CONTEMPT
from mrfer.data.shards import read_manifest, write_manifest
from mrfer.data.splits import assign_folds, assign_splits, groups_of
from mrfer.errors import DatasetError, InputError, MissingInputError, ParamsError

REPO = Path(__file__).resolve().parents[1]


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


def test_too_few_groups_or_faces_for_the_folds_is_a_dataset_error():
    labels, groups = toy(n_subjects=3)
    with pytest.raises(DatasetError, match="cannot make 5 subject folds from 3 groups; lower assemble.folds"):
        assign_folds(labels, groups, 5, "subject", seed=0)
    with pytest.raises(DatasetError, match="only 3 groups"):
        assign_splits(labels, groups, [None] * len(labels), 0.1, 0.1, seed=0)
    with pytest.raises(DatasetError, match="cannot make 5 image folds: the largest class has 2 faces"):
        assign_folds(np.array([0, 0, 1, 1]), groups_of([None] * 4, [None] * 4), 5, "image", seed=0)


# ---------------------------------------------------------------------------------------------
# The assemble section and the manifest checks of the assemble step.

def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def assemble_params(**overrides) -> AssembleParams:
    return AssembleParams.model_validate({**repo_params()["assemble"], "seed": 1, **overrides})


def write_params(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "assemble": {**repo_params()["assemble"], **overrides}}))
    return path


def test_repo_params_validate_and_the_shared_seed_fills_the_section():
    cfg = config.load_section(REPO / "params.yaml", "assemble", AssembleParams)
    assert cfg.seed == repo_params()["seed"] and cfg.folds >= 2


@pytest.mark.parametrize("overrides, message", [
    ({"folds": 1}, r"assemble\.folds = 1: .*greater than or equal to 2"),
    ({"folds": "five"}, r"assemble\.folds = 'five'"),
    ({"val_fraction": -0.1}, r"assemble\.val_fraction = -0\.1"),
    ({"test_fraction": 1.0}, r"assemble\.test_fraction = 1\.0: .*less than 1"),
    ({"val_fraction": 0.5, "test_fraction": 0.5},
     r"assemble\.test_fraction = 0\.5: val_fraction \+ test_fraction must be < 1 \(val_fraction is 0\.5\)"),
    ({"keep_source_split": "maybe"}, r"assemble\.keep_source_split = 'maybe'"),
])
def test_bad_params_name_file_key_and_value(tmp_path, overrides, message):
    path = write_params(tmp_path, **overrides)
    with pytest.raises(ParamsError, match=rf"^{path}: {message}"):
        config.load_section(path, "assemble", AssembleParams)


def write_extracted(root: Path, labels: np.ndarray, subjects: list[str], n_low: int | None = None) -> tuple[Path, Path]:
    """data/extracted (faces + manifest) and data/downsampled/x2.npy with `n_low` faces (default: all)."""
    extracted, downsampled = root / "extracted", root / "downsampled"
    extracted.mkdir(parents=True)
    downsampled.mkdir(parents=True)
    faces = np.random.default_rng(0).integers(0, 256, (len(labels), 8, 8, 1), dtype=np.uint8)
    np.save(extracted / "faces.npy", faces)
    np.save(downsampled / "x2.npy", faces[: n_low if n_low is not None else len(faces)])
    write_manifest(extracted / "manifest.csv", [
        {"source": f"{i}.png", "label": int(label), "class": str(label), "subject": subject, "located": "landmarks"}
        for i, (label, subject) in enumerate(zip(labels, subjects))])
    return extracted, downsampled


def test_assemble_writes_disjoint_splits(tmp_path):
    labels, groups = toy(n_subjects=20, per_subject=4)
    extracted, downsampled = write_extracted(tmp_path, labels, [g.split(":")[1] for g in groups])
    report = assemble(assemble_params(folds=3), "fixture", list(CLASSES), ["x2"], "bicubic_aa", extracted, downsampled,
                      tmp_path / "assembled", tmp_path / "assemble.json")
    assert report["subject_independent"] and report["folds"] == 3
    assert sum(s["faces"] for s in report["splits"].values()) == len(labels)
    assert (tmp_path / "assembled" / "test" / "x2.npy").is_file()


def test_assemble_refuses_inputs_that_do_not_fit(tmp_path):
    labels, groups = toy(n_subjects=20, per_subject=4)
    subjects = [g.split(":")[1] for g in groups]
    extracted, downsampled = write_extracted(tmp_path / "short", labels, subjects, n_low=len(labels) - 1)
    with pytest.raises(InputError, match=f"x2 has {len(labels) - 1} faces but .*manifest.csv has {len(labels)} "
                                         "rows; re-run downsample"):
        assemble(assemble_params(), "fixture", list(CLASSES), ["x2"], "bicubic_aa", extracted, downsampled, tmp_path / "a",
                 tmp_path / "r.json")
    labels[0] = CONTEMPT
    extracted, downsampled = write_extracted(tmp_path / "contempt", labels, subjects)
    with pytest.raises(InputError, match=r"label\(s\) \[7\] are not among the 7 classes.*re-run extract"):
        assemble(assemble_params(), "fixture", list(CLASSES), ["x2"], "bicubic_aa", extracted, downsampled, tmp_path / "a",
                 tmp_path / "r.json")
    with pytest.raises(MissingInputError, match="manifest not found"):
        assemble(assemble_params(), "fixture", list(CLASSES), ["x2"], "bicubic_aa", tmp_path / "none", downsampled, tmp_path / "a",
                 tmp_path / "r.json")
    assert not (tmp_path / "a").exists()


def test_assemble_stage_paths_are_required():
    result = subprocess.run([sys.executable, "stages/assemble.py"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert all(arg in result.stderr for arg in ("--extracted", "--downsampled", "--out", "--report"))


def test_too_few_rows_per_class_to_stratify_still_splits_by_group():
    """Every class smaller than the number of parts: sklearn's stratified splitters refuse; the
    split falls back to group-disjoint, unstratified parts (and says so) instead of a traceback."""
    labels = np.repeat(np.arange(7), 3)          # 3 rows per class, a 1/6 hold-out needs 6 parts
    groups = np.array([f"row:{i}" for i in range(len(labels))])
    mask = splits.held_out(labels, groups, 1 / 6, seed=0)
    assert 2 <= mask.sum() <= 5
    subject_groups = np.repeat(np.arange(7), 3).astype(str)   # 7 subjects, one class each
    mask = splits.held_out(labels, subject_groups, 1 / 6, seed=0)
    assert set(subject_groups[mask]).isdisjoint(subject_groups[~mask])


def test_assemble_counts_test_faces_repeated_in_train(tmp_path, caplog):
    """A test face whose bytes also occur in train (FER2013's official split repeats some) is
    counted in the report and warned about; the split itself does not depend on pixel content."""
    labels, groups = toy(n_subjects=20, per_subject=4)
    extracted, downsampled = write_extracted(tmp_path, labels, [g.split(":")[1] for g in groups])
    first = assemble(assemble_params(folds=3), "fixture", list(CLASSES), ["x2"], "bicubic_aa", extracted, downsampled,
                     tmp_path / "a", tmp_path / "a.json")
    assert first["test_faces_also_in_train_or_val"] == 0
    sources = {split: [r["source"] for r in read_manifest(tmp_path / "a" / split / "manifest.csv")]
               for split in ("train", "test")}
    faces = np.load(extracted / "faces.npy")
    for test_source, train_source in zip(sources["test"][:2], sources["train"][:2]):
        faces[int(test_source.split(".")[0])] = faces[int(train_source.split(".")[0])]
    np.save(extracted / "faces.npy", faces)
    report = assemble(assemble_params(folds=3), "fixture", list(CLASSES), ["x2"], "bicubic_aa", extracted, downsampled,
                      tmp_path / "b", tmp_path / "b.json")
    assert report["test_faces_also_in_train_or_val"] == 2 and report["splits"] == first["splits"]
    assert "2 test faces also occur, byte for byte, in train or val" in caplog.text
