"""CK+ (Extended Cohn-Kanade) in its distributed layout, read from the zips it is distributed as
or from the folders they extract to:

    extended-cohn-kanade-images.zip  cohn-kanade-images/S005/001/S005_001_00000001.png ...
    Emotion_labels.zip               Emotion/S005/001/S005_001_00000011_emotion.txt      one float, e.g. "   3.0000000e+00"
    Landmarks.zip                    Landmarks/S005/001/S005_001_00000001_landmarks.txt  68 lines "x y"

Each zip holds its folder, so records and skip reports name the same relative paths either way.
Each part is found on its own: the extracted folder if there is one (a zip beside it is then not
read, and a note says so: the folder is what was read before zips were), else the zip; the
landmarks are optional; FACS_labels.zip is not used. A frame inside a zip is a
`records.ArchiveMember`, decoded only when the face is cropped.

Only labelled sequences are used: their last `apex_frames` frames carry the emotion, their
first `neutral_frames` frames are neutral. Subject id is the `Sxxx` folder.

Option `frames: all` (for clip models, e.g. the video-train stage) yields every frame of a
labelled sequence instead, each carrying the sequence's emotion: the clip is the whole onset,
neutral start included, and its label is that emotion (`apex_frames`/`neutral_frames` are not
used then). The default `frames: apex` is the image-level selection above.
"""
from __future__ import annotations

import contextlib
import io
import re
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.records import ArchiveMember, Record, SkipLog
from mrfer.errors import DatasetError

FRAME_RE = re.compile(r"^(S\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)
N_LANDMARKS = 68
FRAME_MODES = ("apex", "all")
# (folder, the zip it is distributed as, what it is)
IMAGES = ("cohn-kanade-images", "extended-cohn-kanade-images.zip", "images")
EMOTION = ("Emotion", "Emotion_labels.zip", "labels")
LANDMARKS = ("Landmarks", "Landmarks.zip", "landmarks")
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


class FolderPart:
    """One CK+ part extracted: `root/<top>/<subject>/<sequence>/<file>`."""

    def __init__(self, root: Path, top: str):
        self.root, self.top = root, top

    def sequences(self) -> list[tuple[str, str]]:
        return sorted((p.parent.name, p.name) for p in (self.root / self.top).glob("*/*") if p.is_dir())

    def names(self, subject: str, seq: str) -> list[str]:
        folder = self.root / self.top / subject / seq
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def has(self, subject: str, seq: str, name: str) -> bool:
        return (self.root / self.top / subject / seq / name).is_file()

    def read_text(self, subject: str, seq: str, name: str) -> tuple[str | None, str | None]:
        return (self.root / self.top / subject / seq / name).read_text(errors="replace"), None

    def image(self, subject: str, seq: str, name: str) -> Path:
        return self.root / self.top / subject / seq / name


class ZipPart:
    """One CK+ part as distributed: a zip holding `<top>/<subject>/<sequence>/<file>`.

    The member index is read once; texts are read when asked for, images only referenced."""

    def __init__(self, archive: Path, top: str, zf: zipfile.ZipFile):
        self.archive, self.top, self.zip = archive, top, zf
        self.index: dict[tuple[str, str], set[str]] = {}
        for info in zf.infolist():
            check_member(archive, info)
            parts = info.filename.rstrip("/").split("/")
            if parts[0] != top or len(parts) < 3:
                continue
            names = self.index.setdefault((parts[1], parts[2]), set())  # a sequence folder, maybe empty
            if len(parts) == 4 and not info.is_dir():
                names.add(parts[3])
        if not self.index:
            found = next((i.filename for i in zf.infolist() if not i.is_dir()), "nothing")
            raise DatasetError(f"{archive}: no member under '{top}/<subject>/<sequence>/' (CK+'s zip "
                               f"holds e.g. '{top}/S005/001/...'; this one holds {found!r})")

    def sequences(self) -> list[tuple[str, str]]:
        return sorted(self.index)

    def names(self, subject: str, seq: str) -> list[str]:
        return sorted(self.index.get((subject, seq), ()))

    def has(self, subject: str, seq: str, name: str) -> bool:
        return name in self.index.get((subject, seq), ())

    def read_text(self, subject: str, seq: str, name: str) -> tuple[str | None, str | None]:
        member = f"{self.top}/{subject}/{seq}/{name}"
        try:
            return self.zip.read(member).decode(errors="replace"), None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:   # bad CRC, damaged data
            return None, f"unreadable archive member: {self.archive.name}:{member} ({e})"

    def image(self, subject: str, seq: str, name: str) -> ArchiveMember:
        return ArchiveMember(self.archive, f"{self.top}/{subject}/{seq}/{name}")


def check_member(archive: Path, info: zipfile.ZipInfo) -> None:
    """Refuse an archive with a member outside its folder, or one Python's zipfile cannot read."""
    parts = info.filename.replace("\\", "/").split("/")
    if info.filename.startswith(("/", "\\")) or ".." in parts:
        raise DatasetError(f"{archive}: refused: member {info.filename!r} points outside the archive")
    if info.flag_bits & 0x1:
        raise DatasetError(f"{archive}: member {info.filename!r} is encrypted; extract the archive "
                           f"and use the folders")
    if info.compress_type not in ZIP_METHODS:
        raise DatasetError(f"{archive}: member {info.filename!r} uses compression method "
                           f"{info.compress_type}, which Python's zipfile cannot read; extract the "
                           f"archive and use the folders")


def open_part(root: Path, part: tuple[str, str, str], stack: contextlib.ExitStack,
              skips: SkipLog) -> FolderPart | ZipPart | None:
    """The part as its extracted folder, else as its zip (closed with `stack`), else None."""
    top, zip_name, _ = part
    folder, archive = root / top, root / zip_name
    if folder.is_dir():
        if archive.is_file():
            skips.note(zip_name, f"not read: the extracted folder '{top}' beside it is read instead")
        return FolderPart(root, top)
    if not archive.is_file():
        return None
    try:
        zf = stack.enter_context(zipfile.ZipFile(archive))
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise DatasetError(f"{archive}: not a readable zip archive ({e})") from None
    return ZipPart(archive, top, zf)


def require_part(root: Path, part: tuple[str, str, str], stack: contextlib.ExitStack,
                 skips: SkipLog) -> FolderPart | ZipPart:
    found = open_part(root, part, stack, skips)
    if found is None:
        top, zip_name, what = part
        raise DatasetError(f"{root}: CK+ {what} not found: expected the folder '{top}' or its zip "
                           f"'{zip_name}'")
    return found


def read_emotion(text: str, name: str) -> tuple[int | None, str | None]:
    """(canonical label, None) or (None, skip reason) for the text of CK+ emotion file `name`."""
    text = text.strip()
    if not text:
        return None, f"empty emotion file: {name}"
    try:
        value = float(text.split()[0])
    except ValueError:
        return None, f"unparseable emotion file: {name} holds {text[:30]!r}"
    # Emotion files hold codes 1..7 only; 0 (neutral) never appears in them.
    if value != int(value) or not 1 <= int(value) <= 7:
        return None, f"label out of range: {name} holds {value:g} (CK+ codes are 1..7)"
    return labels.lookup(labels.CKPLUS, int(value)), None


def read_landmarks(text: str, name: str) -> tuple[np.ndarray | None, str | None]:
    """(68x2 array, None), or (None, reason) if landmark file `name` (its text) has the wrong size."""
    try:
        points = np.loadtxt(io.StringIO(text), dtype=np.float32, ndmin=2)
    except ValueError as e:
        return None, f"bad landmark file: {name}: {e}"
    if points.shape != (N_LANDMARKS, 2):
        return None, (f"bad landmark file: {name} has {points.shape[0]} points x "
                      f"{points.shape[1] if points.ndim == 2 else 0} coords, expected 68 x 2")
    if not np.isfinite(points).all():
        return None, f"bad landmark file: {name} has non-finite values"
    return points, None


def sequence_label(emotion: FolderPart | ZipPart, subject: str, seq: str, skips: SkipLog) -> int | None:
    """The sequence's canonical label, or None with the reason added to `skips`."""
    rel_seq = f"{subject}/{seq}"
    emotion_files = [n for n in emotion.names(subject, seq) if n.endswith("_emotion.txt")]
    if not emotion_files:
        skips.add(rel_seq, "unlabelled sequence: no emotion file")
        return None
    if len(emotion_files) > 1:
        skips.add(rel_seq, f"ambiguous label: {len(emotion_files)} emotion files")
        return None
    name = emotion_files[0]
    text, reason = emotion.read_text(subject, seq, name)
    label, reason = (None, reason) if reason else read_emotion(text, name)
    if reason:
        skips.add(f"{EMOTION[0]}/{rel_seq}/{name}", reason)
    return label


def choose_frames(frames: list[str], label: int, mode: str, apex: int, neutral: int) -> list[tuple[str, int]]:
    """(frame name, label) of the frames used: all of them, or the neutral start and the apex."""
    if mode == "all":  # the whole clip, labelled with the sequence's emotion
        return [(f, label) for f in frames]
    n_apex = min(apex, len(frames))
    n_neutral = min(neutral, len(frames) - n_apex)  # a short sequence never double-labels a frame
    chosen = [(f, labels.index("neutral")) for f in frames[:n_neutral]]
    return chosen + [(f, label) for f in frames[len(frames) - n_apex:]]


@register("ckplus", apex_frames=3, neutral_frames=1, frames="apex")
def read_ckplus(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """CK+: labelled sequences, last N frames = emotion, first M frames = neutral (or all frames)."""
    if options["frames"] not in FRAME_MODES:
        raise DatasetError(f"ckplus: frames must be one of {FRAME_MODES}, got {options['frames']!r}")
    apex, neutral = int(options["apex_frames"]), int(options["neutral_frames"])
    with contextlib.ExitStack() as stack:
        images = require_part(root, IMAGES, stack, skips)
        emotion = require_part(root, EMOTION, stack, skips)
        marks = open_part(root, LANDMARKS, stack, skips)
        for subject, seq in images.sequences():
            rel_seq = f"{subject}/{seq}"
            frames = [n for n in images.names(subject, seq) if FRAME_RE.match(n)]
            if not frames:
                skips.add(rel_seq, "empty sequence: no frame images")
                continue
            label = sequence_label(emotion, subject, seq, skips)
            if label is None:
                continue
            for name, frame_label in choose_frames(frames, label, options["frames"], apex, neutral):
                mark = f"{Path(name).stem}_landmarks.txt"
                landmarks, reason = None, None
                if marks is not None and marks.has(subject, seq, mark):
                    text, reason = marks.read_text(subject, seq, mark)
                    if not reason:
                        landmarks, reason = read_landmarks(text, mark)
                if reason:
                    skips.add(f"{LANDMARKS[0]}/{rel_seq}/{mark}", reason)
                    continue
                yield Record(image=images.image(subject, seq, name), label=frame_label,
                             source=f"{IMAGES[0]}/{rel_seq}/{name}", subject=subject, sequence=rel_seq,
                             frame=int(FRAME_RE.match(name).group(3)), landmarks=landmarks)
