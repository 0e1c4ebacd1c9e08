"""Clips for clip models (the video-train recipe): the frames of a raw dataset grouped into
labelled clips, each clip placed in the assembled data's subject split, faces cropped as
extract does. (How a clip model windows a clip and aggregates window scores is in
`mrfer.nets.clip_gru`.)

Clips. The raw dataset is read with the reader named by `extract` (CK+ with `frames: all`, so a
clip is a whole neutral -> apex sequence; AFEW / Aff-Wild2 clips by their `sequence` id), every
frame's face is cropped exactly as the extract stage does (`extract.face_or_skip`, same size,
margin and colour), frames are grouped by `sequence` and ordered by `frame`. A clip's label is the
label its frames carry (for CK+ the sequence's emotion); a sequence whose frames change label
(Aff-Wild2's per-frame annotation) is cut into runs of one label, each its own clip
`<sequence>@<first frame>`. Contempt follows `extract.contempt`.

Split. Clips follow the assembled data's subject split: the train/val/test manifests give each
group (subject, else sequence: `splits.groups_of`) its split, so no test subject is ever trained
on. A clip whose group is in no manifest takes the dataset's own split when the reader gives
one, and is otherwise skipped and reported.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrfer.data import datasets, extract, shards, splits
from mrfer.data.records import Record, SkipLog
from mrfer.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass
class Clip:
    """Frames of one labelled clip, in frame order. `rows` index the extracted face array."""
    id: str
    sequence: str
    label: int
    subject: str | None
    source_split: str | None
    records: list[Record] = field(default_factory=list, repr=False)
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    @property
    def group(self) -> str:
        return str(splits.groups_of([self.subject], [self.sequence])[0])


@dataclass
class ClipSet:
    """The clips of each split with their cropped faces, and what was skipped on the way."""
    faces: np.ndarray                   # (frames, size, size, channels) uint8; Clip.rows index it
    by_split: dict[str, list[Clip]]     # train / val / test, each in clip order
    clip_skips: SkipLog                 # clips left out, and why
    input_skips: SkipLog                # records (frames) the reader or the face crop left out

    @property
    def clips(self) -> list[Clip]:
        return [c for name in splits.SPLITS for c in self.by_split[name]]


def reader_options(dataset: str, extract_options: dict | None, overrides: dict | None) -> dict:
    """`extract.options` with the clip overrides on top; `overrides` null adds `frames: all`
    where the reader has that option (every frame of a sequence, not just its apex)."""
    merged = dict(extract_options or {})
    if overrides is None:
        if "frames" in datasets.get(dataset).defaults:
            merged["frames"] = "all"
    else:
        merged.update(overrides)
    return merged


def group_clips(records: list[Record], n_classes: int, skips: SkipLog) -> list[Clip]:
    """Records -> clips: grouped by `sequence`, ordered by `frame`, cut where the label changes.

    Records without a sequence id and clips of a class the model lacks (contempt dropped) are
    reported in `skips`."""
    by_sequence: dict[str, list[Record]] = {}
    no_sequence = 0
    for record in records:
        if record.sequence in (None, ""):
            no_sequence += 1
            continue
        by_sequence.setdefault(str(record.sequence), []).append(record)
    if no_sequence:
        skips.add("(dataset)", f"not a clip: {no_sequence} records have no sequence id")
    clips = []
    for sequence in sorted(by_sequence):
        frames = sorted(by_sequence[sequence], key=lambda r: (r.frame is None, r.frame or 0, r.source))
        runs: list[list[Record]] = []
        for record in frames:
            if runs and runs[-1][-1].label == record.label:
                runs[-1].append(record)
            else:
                runs.append([record])
        for run in runs:
            clip_id = sequence if len(runs) == 1 else f"{sequence}@{run[0].frame}"
            label = int(run[0].label)
            if label >= n_classes:
                skips.add(clip_id, f"contempt dropped: extract.contempt is 'drop' ({len(run)} frames)")
                continue
            clips.append(Clip(clip_id, sequence, label, run[0].subject, run[0].split, list(run)))
    return clips


def manifest_groups(data_dir: str | os.PathLike) -> dict[str, set[str]]:
    """Group id (subject, else sequence) -> the assembled splits its rows are in."""
    out: dict[str, set[str]] = {}
    for split in splits.SPLITS:
        rows = shards.read_manifest(Path(data_dir) / split / "manifest.csv")
        groups = splits.groups_of([r["subject"] for r in rows], [r["sequence"] for r in rows])
        for group in set(groups.tolist()):
            if not group.startswith("row:"):
                out.setdefault(group, set()).add(split)
    return out


def assign_clip_splits(clips: list[Clip], groups: dict[str, set[str]],
                       skips: SkipLog) -> dict[str, list[Clip]]:
    """Each clip in its group's assembled split; otherwise its dataset's own split, else skipped."""
    out: dict[str, list[Clip]] = {name: [] for name in splits.SPLITS}
    for clip in clips:
        found = groups.get(clip.group, set())
        if len(found) == 1:
            out[next(iter(found))].append(clip)
        elif clip.source_split in found or (not found and clip.source_split in splits.SPLITS):
            out[clip.source_split].append(clip)
        elif found:
            skips.add(clip.id, f"ambiguous split: {clip.group} is in {sorted(found)} of the assembled data")
        else:
            skips.add(clip.id, f"not in the assembled data: {clip.group} is in no train/val/test "
                               f"manifest and the dataset gives no split")
    return out


def extract_clip_faces(clips: list[Clip], extract_cfg: extract.ExtractParams, clip_skips: SkipLog,
                       frame_skips: SkipLog) -> tuple[np.ndarray, list[Clip]]:
    """Crop every frame's face like the extract stage; fills `clip.rows`. Frames that fail are
    reported and left out; a clip left with no frame is skipped."""
    size, channels = extract_cfg.size, 1 if extract_cfg.color == "gray" else 3
    total = sum(len(c.records) for c in clips)
    faces = np.empty((total, size, size, channels), dtype=np.uint8)
    n, kept = 0, []
    for clip in clips:
        rows = []
        for record in clip.records:
            face, _ = extract.face_or_skip(record, extract_cfg, frame_skips)
            if face is None:
                continue
            faces[n] = face
            rows.append(n)
            n += 1
        if not rows:
            clip_skips.add(clip.id, f"no face: none of its {len(clip.records)} frames gave a face")
            continue
        clip.rows = np.asarray(rows, dtype=np.int64)
        kept.append(clip)
    return faces[:n], kept


def load_clips(extract_cfg: extract.ExtractParams, raw: str | os.PathLike, data: str | os.PathLike,
               options: dict, n_classes: int) -> ClipSet:
    """The labelled clips of the raw dataset at `raw` (read with `options`), split as the assembled
    data at `data` splits their subjects, with every frame's face cropped. No train or no test
    clip is a DatasetError."""
    records, input_skips = datasets.read(extract_cfg.reader, raw, options)
    clip_skips = SkipLog()
    clips = group_clips(records, n_classes, clip_skips)
    by_split = assign_clip_splits(clips, manifest_groups(data), clip_skips)
    ordered = [c for name in splits.SPLITS for c in by_split[name]]
    faces, kept = extract_clip_faces(ordered, extract_cfg, clip_skips, input_skips)
    kept_ids = {id(c) for c in kept}
    by_split = {name: [c for c in by_split[name] if id(c) in kept_ids] for name in splits.SPLITS}
    for name in ("train", "test"):
        if not by_split[name]:
            raise DatasetError(f"no {name} clips ({len(clips)} clips read, {len(clip_skips)} skipped: "
                               f"{clip_skips.reasons()})")
    log.info("clips per split: %s (%d frames); skipped %d clips (%s)",
             {n: len(c) for n, c in by_split.items()}, len(faces), len(clip_skips), clip_skips.reasons())
    return ClipSet(faces, by_split, clip_skips, input_skips)
