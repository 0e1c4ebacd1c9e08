"""What every registered dataset reader must do, checked on each reader's fixture
(tests/reader_fixtures.py): a new reader is checked here with no edit to this file. What is
particular to one dataset (its options, its exact skip messages) is tested in
test_photo_readers.py, test_video_readers.py, test_ckplus_reader.py and test_identities.py."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from reader_fixtures import FIXTURES, LABEL_FILES, ReaderFixture, kind

from mrfer.data import datasets, labels
from mrfer.data.records import ArchiveMember
from mrfer.errors import DatasetError

NAMES = sorted(datasets.READERS)
SPLITS = (None, "train", "val", "test")
CHOICES = [(name, option) for name in NAMES for option in datasets.get(name).choices]


def no_fixture(names) -> str:
    return (f"reader(s) {', '.join(names)} have no fixture: add a builder that writes a tiny copy of "
            f"the dataset's real layout, bad cases included, to FIXTURES in tests/reader_fixtures.py")


@pytest.fixture(scope="module")
def reading(tmp_path_factory):
    """reading(name) -> (fixture, records, skips): each reader's fixture, built and read once."""
    done = {}

    def get(name: str) -> tuple[ReaderFixture, list, datasets.SkipLog]:
        if name not in FIXTURES:
            pytest.fail(no_fixture([name]))
        if name not in done:
            fixture = FIXTURES[name](tmp_path_factory.mktemp(name))
            done[name] = (fixture, *datasets.read(name, fixture.root, fixture.options))
        return done[name]
    return get


def test_every_reader_has_a_fixture():
    missing = sorted(set(NAMES) - set(FIXTURES))
    assert not missing, no_fixture(missing)
    assert set(FIXTURES) <= set(NAMES), f"fixtures of no registered reader: {sorted(set(FIXTURES) - set(NAMES))}"
    assert set(LABEL_FILES) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_reader_yields_exactly_the_fixtures_records(reading, name):
    fixture, records, _ = reading(name)
    sources = [r.source for r in records]
    assert all(isinstance(s, str) and s for s in sources)
    assert len(set(sources)) == len(sources), [s for s, n in Counter(sources).items() if n > 1]
    if fixture.records is not None:
        fields = list(fixture.records[0])
        got = sorted(tuple(as_stated(getattr(r, f)) for f in fields) for r in records)
        assert got == sorted(tuple(e[f] for f in fields) for e in fixture.records)


def as_stated(value):
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list, np.ndarray)) else value


@pytest.mark.parametrize("name", NAMES)
def test_labels_subjects_and_splits_are_canonical(reading, name):
    """Labels are canonical expression indices (or, for an identity reader, identities numbered
    0..n-1, one subject each); a split is the dataset's own train/val/test or none; a subject is
    a non-empty id or none."""
    _, records, _ = reading(name)
    assert all(type(r.label) is int for r in records), {type(r.label) for r in records}
    if datasets.get(name).task == "identity":
        subjects = {r.label: r.subject for r in records}
        assert sorted(subjects) == list(range(len(subjects)))
        assert all(subjects[r.label] == r.subject for r in records)
    else:
        assert {r.label for r in records} <= set(range(len(labels.ALL_CLASSES)))
    assert {r.split for r in records} <= set(SPLITS)
    assert all(r.subject is None or (isinstance(r.subject, str) and r.subject) for r in records)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_skipped_and_reported_not_guessed(reading, name):
    fixture, records, skips = reading(name)
    assert all(item["source"] and item["reason"] for item in skips.items)
    assert Counter((item["source"], kind(item["reason"])) for item in skips.items) == Counter(fixture.skips)
    assert Counter((item["source"], kind(item["note"])) for item in skips.notes) == Counter(fixture.notes)
    refused = {source for source, _ in fixture.skips}
    guessed = [r.source for r in records if r.source in refused
               or any(r.source.startswith(f"{source}/") for source in refused)]
    assert not guessed


@pytest.mark.parametrize("name", NAMES)
def test_records_point_at_an_image(reading, name):
    """A record's image is pixels, or a file (or zip member) that exists; whether it decodes is
    the extractor's to report."""
    _, records, _ = reading(name)
    for r in records:
        if isinstance(r.image, np.ndarray):
            assert r.image.dtype == np.uint8 and r.image.ndim in (2, 3) and r.image.size, r.source
        else:
            path = r.image.archive if isinstance(r.image, ArchiveMember) else r.image
            assert Path(path).is_file(), r.source


@pytest.mark.parametrize("name", NAMES)
def test_reading_again_gives_the_same_records_in_the_same_order(reading, name):
    fixture, records, skips = reading(name)
    again, again_skips = datasets.read(name, fixture.root, fixture.options)
    view = lambda rs: [(r.source, r.label, r.split, r.subject) for r in rs]  # noqa: E731
    assert view(again) == view(records)
    assert again_skips.items == skips.items


@pytest.mark.parametrize("name", NAMES)
def test_empty_or_missing_dataset_folder_is_an_error_naming_it(tmp_path, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    for root in (empty, tmp_path / "missing"):
        with pytest.raises(DatasetError, match=re.escape(str(root))):
            datasets.read(name, root)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_refused_naming_the_allowed_ones(tmp_path, name):
    allowed = ", ".join(sorted(datasets.get(name).defaults)) or "none"
    with pytest.raises(DatasetError, match=re.escape(f"unknown option(s) no_such_option (allowed: {allowed})")):
        datasets.read(name, tmp_path, {"no_such_option": 1})


@pytest.mark.parametrize("name, option", CHOICES)
def test_value_outside_an_options_choices_is_refused_before_reading(tmp_path, name, option):
    values = ", ".join(map(str, datasets.get(name).choices[option]))
    message = re.escape(f"dataset '{name}': option {option} must be one of {values}, got 'bogus'")
    with pytest.raises(DatasetError, match=message):
        datasets.check_options(name, {option: "bogus"})
    with pytest.raises(DatasetError, match=message):
        datasets.read(name, tmp_path / "absent", {option: "bogus"})   # before the folder is looked at


@pytest.mark.parametrize("name", sorted(LABEL_FILES))
def test_junk_label_files_are_skipped_not_tracebacks(tmp_path, name):
    """Binary junk in every label file (its header kept): each line is skipped with a reason,
    then 'no usable faces', though every image is still there."""
    fixture = FIXTURES[name](tmp_path)
    junk = bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8))
    junk_lines = b"\n".join([junk[:900], b"1,2,3", b"a b c d e f g h", junk[900:]])
    for pattern, header in LABEL_FILES[name].items():
        paths = sorted(fixture.root.glob(pattern))
        assert paths, f"{name}: no label file {pattern} in its fixture"
        for path in paths:
            head = path.read_bytes().split(b"\n", 1)[0] + b"\n" if header else b""
            path.write_bytes(head + junk_lines)
    with pytest.raises(DatasetError, match="no usable faces"):
        datasets.read(name, fixture.root, fixture.options)
