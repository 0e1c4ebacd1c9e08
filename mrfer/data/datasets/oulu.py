"""Oulu-CASIA NIR&VIS facial expression database, in its distributed layout.

    OriginalImg/VL/Strong/P001/Anger/000.jpeg 001.jpeg ...
    <image set>/<camera>/<lighting>/<subject>/<class>/<frame>.jpeg

- image set: `OriginalImg` (full 320x240 frames) or the cropped-face set shipped beside it; the
  reader takes the camera folders from the root itself or from the one sub-folder that holds
  them (option `image_set` names it when there are several).
- camera: `VL` (visible light) or `NI` (near infrared), recorded at the same time.
- lighting: `Strong`, `Weak` or `Dark`.
- subject: `P001` ... `P080`.
- class: `Anger, Disgust, Fear, Happiness, Sadness, Surprise` (no neutral folder); each folder
  is one posed sequence, neutral -> apex, frames numbered from `000`.

The last `last_frames` frames of a sequence carry its class; with `first_neutral` the first
frame is labelled neutral. A sequence shorter than that never labels a frame twice. Subject is
the `Pxxx` folder (the same person across cameras and lightings); sequence id is
`camera/lighting/subject/class`; frame is the number in the file name. Faces are located later
(Haar detection); set `aligned` for the cropped-face image set if the detector misses them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.faces import IMAGE_SUFFIXES
from mrfer.data.records import Record, SkipLog, inside, require_dir
from mrfer.errors import DatasetError

CAMERAS = ("VL", "NI")
LIGHTINGS = ("Strong", "Weak", "Dark")
SUBJECT_RE = re.compile(r"^P\d{3}$")
FRAME_RE = re.compile(r"^\d+$")


def as_list(value, allowed: tuple[str, ...], what: str) -> list[str]:
    """A string or list option -> list of allowed values; DatasetError names a bad one."""
    values = [value] if isinstance(value, str) else list(value or [])
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise DatasetError(f"oulu: {what} must be one or more of {', '.join(allowed)}, got {value!r}")
    return values


def find_image_set(root: Path, image_set: str) -> Path:
    """The folder holding VL/ and NI/: `image_set` if given, else the root or its one child."""
    if image_set:
        if inside(root, image_set) is None:
            raise DatasetError(f"{root}: oulu image_set {image_set!r} escapes the dataset root")
        return require_dir(root / image_set, f"Oulu-CASIA image set '{image_set}'")
    if any((root / camera).is_dir() for camera in CAMERAS):
        return root
    found = sorted(p for p in root.iterdir()
                   if p.is_dir() and any((p / camera).is_dir() for camera in CAMERAS))
    if not found:
        raise DatasetError(f"{root}: no Oulu-CASIA camera folder (VL/ or NI/) at the root or one "
                           f"level below (expected e.g. OriginalImg/VL/Strong/P001/Anger/000.jpeg)")
    if len(found) > 1:
        raise DatasetError(f"{root}: several Oulu-CASIA image sets ({', '.join(p.name for p in found)}); "
                           f"choose one with option image_set")
    return found[0]


def sequence_frames(seq_dir: Path, root: Path, skips: SkipLog) -> list[Path]:
    """Frame images of one sequence in frame-number order; other image files are reported."""
    frames = []
    for path in sorted(seq_dir.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # Thumbs.db and the like
        if FRAME_RE.match(path.stem):
            frames.append(path)
        else:
            skips.add(path.relative_to(root).as_posix(),
                      f"unexpected file: {path.name} is not a numbered frame image")
    return sorted(frames, key=lambda p: int(p.stem))


@register("oulu", image_set="", camera="VL", lighting="Strong", last_frames=3,
          first_neutral=False, aligned=False)
def read_oulu(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """Oulu-CASIA: last N frames of each sequence = its class, optionally first frame = neutral."""
    require_dir(root, "Oulu-CASIA dataset folder")
    base = find_image_set(root, options["image_set"])
    cameras = as_list(options["camera"], CAMERAS, "camera")
    lightings = as_list(options["lighting"], LIGHTINGS, "lighting")
    last = int(options["last_frames"])
    if last < 1:
        raise DatasetError(f"oulu: last_frames must be >= 1, got {options['last_frames']!r}")
    first_neutral = bool(options["first_neutral"])
    for camera in cameras:
        for lighting in lightings:
            light_dir = require_dir(base / camera / lighting,
                                    f"Oulu-CASIA folder {camera}/{lighting} (camera/lighting)")
            for subject_dir in sorted(p for p in light_dir.iterdir() if p.is_dir()):
                subject = subject_dir.name
                if not SUBJECT_RE.match(subject):
                    skips.add(subject_dir.relative_to(root).as_posix(),
                              f"unexpected folder: '{subject}' is not a subject folder Pxxx")
                    continue
                for seq_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
                    rel_seq = seq_dir.relative_to(root).as_posix()
                    try:
                        label = labels.index(seq_dir.name)
                    except KeyError:
                        skips.add(rel_seq, f"unknown class folder: '{seq_dir.name}'")
                        continue
                    frames = sequence_frames(seq_dir, root, skips)
                    if not frames:
                        skips.add(rel_seq, "empty sequence: no frame images")
                        continue
                    n_last = min(last, len(frames))
                    n_neutral = min(int(first_neutral), len(frames) - n_last)
                    if n_last + n_neutral < last + int(first_neutral):
                        skips.note(rel_seq, f"short sequence: {len(frames)} frames, "
                                            f"{n_last} labelled {seq_dir.name}, {n_neutral} neutral")
                    chosen = [(f, labels.index("neutral")) for f in frames[:n_neutral]]
                    chosen += [(f, label) for f in frames[len(frames) - n_last:]]
                    sequence = f"{camera}/{lighting}/{subject}/{seq_dir.name}"
                    for path, frame_label in chosen:
                        yield Record(image=path, label=frame_label,
                                     source=path.relative_to(root).as_posix(), subject=subject,
                                     sequence=sequence, frame=int(path.stem),
                                     aligned=bool(options["aligned"]))
