"""A fixture for every registered dataset reader, for the checks tests/test_readers.py runs on each.

FIXTURES maps a reader name to a builder: `build(root)` writes a tiny dataset under `root` in
that reader's exact real layout, bad cases included (with the makers of
tests/photo_dataset_fixtures.py, video_dataset_fixtures.py, identity_dataset_fixtures.py and
ckplus_fixture.py), and returns a ReaderFixture: what reading it must give. A new reader needs a
builder here; test_readers.py fails, naming this file, until it has one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ckplus_fixture import make_ckplus
from identity_dataset_fixtures import make_casia_webface, make_vggface2
from photo_dataset_fixtures import (ferplus_expected, make_affectnet, make_expw, make_fer2013, make_ferplus,
                                    make_folders, make_jaffe, make_rafdb)
from video_dataset_fixtures import (ROW_FIELDS, afew_expected, affwild2_expected, make_afew, make_affwild2,
                                    make_oulu, make_sfew, oulu_expected, sfew_expected)


@dataclass
class ReaderFixture:
    """What reading the dataset at `root` with `options` must give."""
    root: Path
    records: list[dict] | None          # per record, the Record fields the fixture fixes (source and
                                        # label at least); None: only the reader's own tests state them
    skips: list[tuple[str, str]]        # (source, reason kind) of every input the reader must refuse
    notes: list[tuple[str, str]] = field(default_factory=list)   # (source, note kind): kept, but told
    options: dict = field(default_factory=dict)


def kind(reason: str) -> str:
    """A skip reason's kind: the text before its first ':'."""
    return reason.split(":")[0]


def from_made(root: Path, made: dict) -> ReaderFixture:
    """A `make_*` result holding expected record dicts and (source, full reason) skips."""
    return ReaderFixture(root, made["records"], [(s, kind(r)) for s, r in made["skips"]],
                         [(s, kind(n)) for s, n in made.get("notes", [])], made.get("options", {}))


def from_rows(root: Path, truth: dict, rows: list[tuple], options: dict | None = None) -> ReaderFixture:
    """A video-dataset maker's result (skips and notes by kind) with its `*_expected` rows."""
    return ReaderFixture(root, [dict(zip(ROW_FIELDS, row)) for row in rows], truth["skips"],
                         truth.get("notes", []), options or {})


def ferplus(root: Path) -> ReaderFixture:
    records, skips = ferplus_expected(make_ferplus(root), "majority")
    return from_made(root, {"records": records, "skips": skips})


def oulu(root: Path) -> ReaderFixture:
    truth = make_oulu(root)
    return from_rows(root, truth, oulu_expected(truth))


def sfew(root: Path) -> ReaderFixture:
    truth = make_sfew(root)
    return from_rows(root, truth, sfew_expected(truth))


def afew(root: Path) -> ReaderFixture:
    truth = make_afew(root)
    return from_rows(root, truth, afew_expected(truth))


def affwild2(root: Path) -> ReaderFixture:
    truth = make_affwild2(root)
    return from_rows(root, truth, affwild2_expected(truth), {"frame_stride": 1})


def ckplus(root: Path) -> ReaderFixture:
    """make_ckplus's faults; its records are stated in tests/test_ckplus_reader.py."""
    faults = [("S010/003", "unlabelled sequence"),
              ("Emotion/S011/001/S011_001_00000005_emotion.txt", "label out of range"),
              ("Emotion/S012/001/S012_001_00000005_emotion.txt", "empty emotion file"),
              ("Landmarks/S013/001/S013_001_00000005_landmarks.txt", "bad landmark file")]
    return ReaderFixture(make_ckplus(root), None, faults)


FIXTURES: dict[str, Callable[[Path], ReaderFixture]] = {
    "afew": afew,
    "affectnet": lambda root: from_made(root, make_affectnet(root)),
    "affwild2": affwild2,
    "casia_webface": lambda root: from_made(root, make_casia_webface(root)),
    "ckplus": ckplus,
    "expw": lambda root: from_made(root, make_expw(root)),
    "fer2013": lambda root: from_made(root, make_fer2013(root)),
    "ferplus": ferplus,
    "folders": lambda root: from_made(root, make_folders(root)),
    "jaffe": lambda root: from_made(root, make_jaffe(root)),
    "oulu": oulu,
    "rafdb": lambda root: from_made(root, make_rafdb(root)),
    "sfew": sfew,
    "vggface2": lambda root: from_made(root, make_vggface2(root)),
}

# Readers whose labels come from label files: those files (globs under the fixture's root) and
# whether their first line is a header. Junk in them must give skips, never a traceback.
LABEL_FILES: dict[str, dict[str, bool]] = {
    "affectnet": {"Manually_Annotated_file_lists/training.csv": True,
                  "Manually_Annotated_file_lists/validation.csv": False},
    "affwild2": {"EXPR_Set/*/*.txt": True},
    "ckplus": {"Emotion/*/*/*_emotion.txt": False},
    "expw": {"label/label.lst": False},
    "fer2013": {"fer2013.csv": True},
    "ferplus": {"fer2013.csv": True, "fer2013new.csv": True},
    "rafdb": {"EmoLabel/list_patition_label.txt": False},
}
