"""AFEW (Acted Facial Expressions in the Wild, EmotiW video track), in its distributed layout.

    Train_AFEW/Angry/000046280.avi ...     (Train_AFEW.zip)
    Val_AFEW/Happy/003218160.avi ...       (Val_AFEW.zip)
    Train_AFEW/AlignedFaces_LBPTOP_Points/  organisers' faces, LBP-TOP features, points (not read)

Classes are the folders `Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise`; a clip is a short
movie excerpt (`<9 digits>.avi`). `Train/` and `Val/` are accepted as folder names too. The test
set has no public labels and is not read.

Each clip yields one record per sampled frame: `image` is the video path and `frame` the 0-based
frame index that `mrfer.data.faces.load_image` decodes; the face is found later by the detector.
Every `frame_stride`-th frame is sampled; if that gives more than `max_frames` (0 = no cap), that
many are kept, evenly spread over the clip (first and last included). The clip id (file name
without suffix) is the `sequence`, so a video model can regroup the frames; `source` is the
clip path plus `#<frame>`. AFEW has no actor ids (subject None). A clip that opencv cannot open
or decode, or that has no frames, is skipped; so is a clip id seen twice.
Train -> "train"; Val -> "val", or "test" with `val_split: test`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.faces import VIDEO_SUFFIXES
from mrfer.data.records import Record, SkipLog, require_dir
from mrfer.errors import DatasetError

SPLITS = ((("Train_AFEW", "Train"), "train"), (("Val_AFEW", "Val"), "val"))
VAL_SPLITS = ("val", "test")
ORGANISER_FOLDER = "alignedfaces_lbptop_points"   # AlignedFaces_LBPTOP_Points[_Val]


def split_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for path in sorted(root.iterdir()):
        if path.is_dir() and path.name.lower() in {n.lower() for n in names}:
            return path
    return None


def count_frames(path: Path) -> tuple[int, str | None]:
    """(number of frames, None), or (0, skip reason) for a clip opencv cannot decode."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0, f"unreadable video: opencv cannot open {path.name}"
        ok, _ = capture.read()
        if not ok:
            return 0, f"empty video: {path.name} has no decodable frame"
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # container without a frame count: count by decoding
            count = 1
            while capture.grab():
                count += 1
        return count, None
    finally:
        capture.release()


def sample_frames(count: int, stride: int, max_frames: int) -> list[int]:
    """Every `stride`-th frame index; at most `max_frames` of them, evenly spread (0 = all)."""
    indices = list(range(0, count, stride))
    if max_frames and len(indices) > max_frames:
        picks = np.linspace(0, len(indices) - 1, max_frames).round().astype(int)
        indices = [indices[i] for i in picks]
    return indices


@register("afew", val_split="val", frame_stride=1, max_frames=16)
def read_afew(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """AFEW: class folders of .avi clips; sampled frames decoded later, clip id = sequence."""
    require_dir(root, "AFEW dataset folder")
    if options["val_split"] not in VAL_SPLITS:
        raise DatasetError(f"afew: val_split must be one of {VAL_SPLITS}, got {options['val_split']!r}")
    stride, max_frames = int(options["frame_stride"]), int(options["max_frames"])
    if stride < 1 or max_frames < 0:
        raise DatasetError(f"afew: frame_stride must be >= 1 and max_frames >= 0, "
                           f"got {options['frame_stride']!r} and {options['max_frames']!r}")
    tops = [(split_dir(root, names), split) for names, split in SPLITS]
    if not any(top for top, _ in tops):
        raise DatasetError(f"{root}: no AFEW split folder (expected Train_AFEW/ and Val_AFEW/, "
                           f"e.g. Train_AFEW/Angry/000046280.avi)")
    seen: dict[str, str] = {}
    for top, split in tops:
        if top is None:
            skips.note(split, f"no {split} folder: split '{split}' is absent")
            continue
        split = options["val_split"] if split == "val" else split
        for class_dir in sorted(p for p in top.iterdir() if p.is_dir()):
            rel_dir = class_dir.relative_to(root).as_posix()
            if class_dir.name.lower().startswith(ORGANISER_FOLDER):
                skips.note(rel_dir, "not read: organisers' aligned faces and features; "
                                    "faces are detected in the .avi frames")
                continue
            clips = sorted(p for p in class_dir.iterdir()
                           if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            try:
                label = labels.index(class_dir.name)
            except KeyError:
                skips.add(rel_dir, f"unknown class folder: '{class_dir.name}' ({len(clips)} clips)")
                continue
            for clip in clips:
                rel = clip.relative_to(root).as_posix()
                if clip.stem in seen:
                    skips.add(rel, f"duplicate clip: id {clip.stem} already read from {seen[clip.stem]}")
                    continue
                seen[clip.stem] = rel
                count, reason = count_frames(clip)
                if reason:
                    skips.add(rel, reason)
                    continue
                for frame in sample_frames(count, stride, max_frames):
                    yield Record(image=clip, label=label, source=f"{rel}#{frame}", split=split,
                                 sequence=clip.stem, frame=frame)
