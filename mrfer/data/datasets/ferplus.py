"""FER+ (Microsoft's re-labelled FER2013): the FER2013 CSV plus `fer2013new.csv`.

    fer2013.csv        emotion,pixels,Usage   (the images; see fer2013.py)
    fer2013new.csv     Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
                       Training,fer0000000.png,4,0,0,1,3,2,0,0,0,0

Row i of fer2013new.csv labels row i of fer2013.csv (same order, same row count; a Usage
that disagrees between the two files means they are not aligned and the row is skipped).
Each row holds the votes of 10 taggers. An empty `Image name` marks an image FER+ rejected
as not a face: skipped. The label is decided by `vote`:

  majority   FER+'s own rule (paper, and its reference reader): votes of 1 are dropped as
             outliers, then the top class needs more than half of the remaining votes.
  plurality  the class with the most votes; a tie for the top is dropped.

`min_votes` additionally requires that many votes for the winner. A winner of `unknown` or
`NF` (not a face) is dropped; contempt becomes index 7 (kept or dropped later by the
extract stage). Splits: Training / PublicTest / PrivateTest -> train / val / test.

FER2013's repeated images are FER+'s too: `duplicates` (keep | drop_from_eval) works as in
fer2013.py, on the images FER+ labels.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.datasets.fer2013 import (CSV_CANDIDATES, DUPLICATE_MODES, PUBLIC_TEST_MODES, find_csv,
                                         parse_pixels, read_csv_rows, resolve_duplicates, usage_split)
from mrfer.data.records import Record, SkipLog, require_dir
from mrfer.errors import DatasetError

FERPLUS_CSV = "fer2013new.csv"
PLUS_COLUMNS = ("usage", "image name") + tuple(name.lower() for name in labels.FERPLUS_COLUMNS)
VOTE_MODES = ("majority", "plurality")
NO_EXPRESSION = {"unknown": "no expression: most votes for unknown",
                 "NF": "not a face: most votes for NF (not a face)"}


def parse_votes(row: dict) -> tuple[list[int] | None, str | None]:
    try:
        votes = [int(row[name.lower()]) for name in labels.FERPLUS_COLUMNS]
    except ValueError:
        return None, "bad votes: " + ",".join(row[name.lower()][:8] for name in labels.FERPLUS_COLUMNS)
    if min(votes) < 0:
        return None, f"bad votes: negative count in {votes}"
    if sum(votes) == 0:
        return None, "no votes: every count is 0"
    return votes, None


def winner(votes: list[int], vote: str, min_votes: int) -> tuple[str | None, str | None]:
    """(winning FER+ column name, None) or (None, skip reason)."""
    names = labels.FERPLUS_COLUMNS
    if vote == "majority":
        kept = [v if v > 1 else 0 for v in votes]   # single votes are outliers
        top = max(kept)
        if top == 0 or top <= sum(kept) / 2:
            best = names[kept.index(top)] if top else names[votes.index(max(votes))]
            return None, (f"no majority: top class {best} has {top} of {sum(kept)} votes "
                          f"(after dropping single votes), needs more than half")
    else:
        kept = votes
        top = max(kept)
        tied = [name for name, v in zip(names, kept) if v == top]
        if len(tied) > 1:
            return None, f"tied vote: {', '.join(tied)} have {top} votes each"
    best = names[kept.index(top)]
    if best in NO_EXPRESSION:
        return None, NO_EXPRESSION[best]
    if top < min_votes:
        return None, f"too few votes: {best} has {top}, min_votes is {min_votes}"
    return best, None


@register("ferplus", vote="majority", min_votes=0, public_test="val", duplicates="keep",
          choices={"vote": VOTE_MODES, "public_test": PUBLIC_TEST_MODES, "duplicates": DUPLICATE_MODES})
def read_ferplus(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """FER+: FER2013 pixels with the 10-tagger votes of fer2013new.csv."""
    require_dir(root, "FER+ folder")
    vote, min_votes, public_test = options["vote"], int(options["min_votes"]), options["public_test"]
    fer_csv = find_csv(root)
    if fer_csv is None:
        raise DatasetError(f"{root}: FER2013 pixels not found (expected {' or '.join(CSV_CANDIDATES)})")
    plus_csv = root / FERPLUS_CSV
    if not plus_csv.is_file():
        raise DatasetError(f"{plus_csv}: FER+ label file not found")
    fer_args = (fer_csv, ("emotion", "pixels", "usage"), fer_csv.relative_to(root).as_posix())
    plus_args = (plus_csv, PLUS_COLUMNS, FERPLUS_CSV)
    n_fer, n_plus = (sum(1 for _ in read_csv_rows(*args)) for args in (fer_args, plus_args))
    if n_fer != n_plus:   # counted first, so a short file is an error before anything is read
        raise DatasetError(f"{plus_csv}: {n_plus} rows but {fer_csv.name} has {n_fer}; "
                           f"FER+ labels pair with images by row order")
    pairs = zip(read_csv_rows(*plus_args), read_csv_rows(*fer_args))
    found = []   # (record, pixel hash): duplicates are resolved once every split is read
    for (plus_source, plus, plus_reason), (fer_source, fer, fer_reason) in pairs:
        if plus_reason or fer_reason:
            skips.add(plus_source if plus_reason else fer_source, plus_reason or fer_reason)
            continue
        if plus["usage"] != fer["usage"]:
            skips.add(plus_source, f"usage mismatch: {FERPLUS_CSV} says {plus['usage']!r}, "
                                   f"{fer_source} says {fer['usage']!r} (files not aligned?)")
            continue
        split = usage_split(fer["usage"], public_test)
        if split is None:
            skips.add(fer_source, f"unknown usage: {fer['usage'][:30]!r}")
            continue
        if not plus["image name"]:
            skips.add(plus_source, "not a face: FER+ leaves the image name empty")
            continue
        votes, reason = parse_votes(plus)
        if reason is None:
            best, reason = winner(votes, vote, min_votes)
        if reason:
            skips.add(plus_source, reason)
            continue
        pixels, reason = parse_pixels(fer["pixels"])
        if reason:
            skips.add(fer_source, reason)
            continue
        record = Record(image=pixels, label=labels.index(best), source=plus["image name"],
                        split=split, aligned=True)
        found.append((record, hashlib.sha1(pixels.tobytes()).digest()))
    yield from resolve_duplicates(found, options["duplicates"], skips)
