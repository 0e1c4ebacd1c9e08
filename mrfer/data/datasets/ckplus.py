"""CK+ (Extended Cohn-Kanade) in its distributed layout.

    cohn-kanade-images/S005/001/S005_001_00000001.png ...
    Emotion/S005/001/S005_001_00000011_emotion.txt      one float, e.g. "   3.0000000e+00"
    Landmarks/S005/001/S005_001_00000001_landmarks.txt  68 lines "x y"

Only labelled sequences are used: their last `apex_frames` frames carry the emotion, their
first `neutral_frames` frames are neutral. Subject id is the `Sxxx` folder.

Option `frames: all` (for clip models, e.g. the video-train stage) yields every frame of a
labelled sequence instead, each carrying the sequence's emotion: the clip is the whole onset,
neutral start included, and its label is that emotion (`apex_frames`/`neutral_frames` are not
used then). The default `frames: apex` is the image-level selection above.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.records import Record, SkipLog, require_dir
from mrfer.errors import DatasetError

FRAME_RE = re.compile(r"^(S\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)
N_LANDMARKS = 68
FRAME_MODES = ("apex", "all")


def read_emotion(path: Path) -> tuple[int | None, str | None]:
    """(canonical label, None) or (None, skip reason) for a CK+ emotion file."""
    text = path.read_text(errors="replace").strip()
    if not text:
        return None, f"empty emotion file: {path.name}"
    try:
        value = float(text.split()[0])
    except ValueError:
        return None, f"unparseable emotion file: {path.name} holds {text[:30]!r}"
    # Emotion files hold codes 1..7 only; 0 (neutral) never appears in them.
    if value != int(value) or not 1 <= int(value) <= 7:
        return None, f"label out of range: {path.name} holds {value:g} (CK+ codes are 1..7)"
    return labels.lookup(labels.CKPLUS, int(value)), None


def read_landmarks(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(68x2 array, None), or (None, reason) if the file is unreadable or has the wrong size."""
    try:
        points = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as e:
        return None, f"bad landmark file: {path.name}: {e}"
    if points.shape != (N_LANDMARKS, 2):
        return None, (f"bad landmark file: {path.name} has {points.shape[0]} points x "
                      f"{points.shape[1] if points.ndim == 2 else 0} coords, expected 68 x 2")
    if not np.isfinite(points).all():
        return None, f"bad landmark file: {path.name} has non-finite values"
    return points, None


@register("ckplus", apex_frames=3, neutral_frames=1, frames="apex")
def read_ckplus(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """CK+: labelled sequences, last N frames = emotion, first M frames = neutral (or all frames)."""
    if options["frames"] not in FRAME_MODES:
        raise DatasetError(f"ckplus: frames must be one of {FRAME_MODES}, got {options['frames']!r}")
    images_root = require_dir(root / "cohn-kanade-images", "CK+ image folder 'cohn-kanade-images'")
    require_dir(root / "Emotion", "CK+ label folder 'Emotion'")
    apex, neutral = int(options["apex_frames"]), int(options["neutral_frames"])
    for seq_dir in sorted(p for p in images_root.glob("*/*") if p.is_dir()):
        subject, seq = seq_dir.parent.name, seq_dir.name
        rel_seq = f"{subject}/{seq}"
        frames = sorted(p for p in seq_dir.iterdir() if FRAME_RE.match(p.name))
        if not frames:
            skips.add(rel_seq, "empty sequence: no frame images")
            continue
        emotion_files = sorted((root / "Emotion" / subject / seq).glob("*_emotion.txt"))
        if not emotion_files:
            skips.add(rel_seq, "unlabelled sequence: no emotion file")
            continue
        if len(emotion_files) > 1:
            skips.add(rel_seq, f"ambiguous label: {len(emotion_files)} emotion files")
            continue
        label, reason = read_emotion(emotion_files[0])
        if reason:
            skips.add(f"Emotion/{rel_seq}/{emotion_files[0].name}", reason)
            continue
        if options["frames"] == "all":  # the whole clip, labelled with the sequence's emotion
            chosen = [(f, label) for f in frames]
        else:
            n_apex = min(apex, len(frames))
            n_neutral = min(neutral, len(frames) - n_apex)  # a short sequence never double-labels a frame
            chosen = [(f, labels.index("neutral")) for f in frames[:n_neutral]]
            chosen += [(f, label) for f in frames[len(frames) - n_apex:]]
        for frame_path, frame_label in chosen:
            landmark_path = root / "Landmarks" / subject / seq / f"{frame_path.stem}_landmarks.txt"
            landmarks = None
            if landmark_path.is_file():
                landmarks, reason = read_landmarks(landmark_path)
                if reason:
                    skips.add(f"Landmarks/{rel_seq}/{landmark_path.name}", reason)
                    continue
            yield Record(image=frame_path, label=frame_label,
                         source=str(frame_path.relative_to(root)), subject=subject,
                         sequence=rel_seq, frame=int(FRAME_RE.match(frame_path.name).group(3)),
                         landmarks=landmarks)
