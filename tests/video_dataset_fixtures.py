"""Tiny copies of Oulu-CASIA, SFEW 2.0, AFEW and Aff-Wild2 in their distributed layouts.

Each `make_*` writes real files (JPEG/PNG images, MJPG .avi clips, annotation text exactly as
the datasets ship it), including the broken cases a reader must report, and returns what it
wrote: the good items with their true class names, and the (source, reason kind) pairs the
reader should skip or note with default options. The `*_expected` functions turn that into the
records a reader must yield, as ROW_FIELDS tuples.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mrfer.data import labels

# Folder / code spellings of each dataset -> canonical class name (written independently of
# mrfer.data.labels, so the tests check the reader's mapping rather than repeat it).
OULU_CLASSES = {"Anger": "angry", "Disgust": "disgust", "Fear": "fear", "Happiness": "happy",
                "Sadness": "sad", "Surprise": "surprise"}
EMOTIW_CLASSES = {"Angry": "angry", "Disgust": "disgust", "Fear": "fear", "Happy": "happy",
                  "Neutral": "neutral", "Sad": "sad", "Surprise": "surprise"}
AFFWILD2_CODES = {0: "neutral", 1: "angry", 2: "disgust", 3: "fear", 4: "happy", 5: "sad",
                  6: "surprise"}
AFFWILD2_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AFFWILD2_HEADER_V2 = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"   # ABAW 2020/2021
# The Record fields the `*_expected` rows give, in their order.
ROW_FIELDS = ("source", "label", "subject", "split", "sequence", "frame", "aligned")


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (16, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size[1], size[0], 3), value, np.uint8)
    assert cv2.imwrite(str(path), image), path


def write_video(path: Path, brightness: list[int], size: tuple[int, int] = (32, 24)) -> None:
    """An MJPG .avi whose frame i is a flat grey of brightness[i]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    assert writer.isOpened(), path
    for value in brightness:
        writer.write(np.full((size[1], size[0], 3), value, np.uint8))
    writer.release()


def make_oulu(root: Path, image_set: str = "OriginalImg", n_frames: int = 5) -> dict:
    """OriginalImg/{VL,NI}/{Strong,Weak}/P00x/<Class>/000.jpeg ...; quirks under VL/Strong."""
    base = root / image_set if image_set else root
    sequences = []
    for camera in ("VL", "NI"):
        for lighting in ("Strong", "Weak"):
            for subject, classes in (("P001", ("Anger", "Happiness")), ("P002", ("Sadness",))):
                for cls in classes:
                    seq_dir = base / camera / lighting / subject / cls
                    for frame in range(n_frames):
                        write_image(seq_dir / f"{frame:03d}.jpeg", 20 * frame)
                    sequences.append({"camera": camera, "lighting": lighting, "subject": subject,
                                      "cls": cls, "frames": list(range(n_frames)),
                                      "dir": seq_dir.relative_to(root).as_posix()})
    strong = base / "VL" / "Strong"
    # A 2-frame sequence: kept, with a note that it is short.
    for frame in range(2):
        write_image(strong / "P002" / "Surprise" / f"{frame:03d}.jpeg")
    short = {"camera": "VL", "lighting": "Strong", "subject": "P002", "cls": "Surprise",
             "frames": [0, 1], "dir": (strong / "P002" / "Surprise").relative_to(root).as_posix()}
    sequences.append(short)
    write_image(strong / "P001" / "Smile" / "000.jpeg")              # not an Oulu class
    (strong / "P002" / "Fear").mkdir(parents=True)                     # no frames, only junk
    (strong / "P002" / "Fear" / "Thumbs.db").write_bytes(b"\0" * 8)
    write_image(strong / "P001" / "Anger" / "cover.jpeg")              # not a frame number
    write_image(strong / "Extras" / "Anger" / "000.jpeg")              # not a subject folder
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return {
        "base": base,
        "sequences": sequences,
        "skips": [(rel(strong / "P001" / "Smile"), "unknown class folder"),
                  (rel(strong / "P002" / "Fear"), "empty sequence"),
                  (rel(strong / "P001" / "Anger" / "cover.jpeg"), "unexpected file"),
                  (rel(strong / "Extras"), "unexpected folder")],
        "notes": [(short["dir"], "short sequence")],
    }


def oulu_expected(truth, cameras=("VL",), lightings=("Strong",), last=3, first_neutral=False,
                  aligned=False):
    """Rows of a make_oulu copy read with these options (the defaults: the oulu reader's)."""
    expected = []
    for seq in truth["sequences"]:
        if seq["camera"] not in cameras or seq["lighting"] not in lightings:
            continue
        frames = seq["frames"]
        n_last = min(last, len(frames))
        n_neutral = min(int(first_neutral), len(frames) - n_last)
        chosen = [(f, "neutral") for f in frames[:n_neutral]]
        chosen += [(f, OULU_CLASSES[seq["cls"]]) for f in frames[len(frames) - n_last:]]
        for frame, name in chosen:
            expected.append((f"{seq['dir']}/{frame:03d}.jpeg", labels.index(name), seq["subject"],
                             None, f"{seq['camera']}/{seq['lighting']}/{seq['subject']}/{seq['cls']}",
                             frame, aligned))
    return sorted(expected)


def make_sfew(root: Path, nested: bool = True) -> dict:
    """Train[/Train_Aligned_Faces]/<Class>/*.png and Val[/Val_Aligned_Faces]/<Class>/*.png."""
    def split_dir(name: str) -> Path:
        return root / name / f"{name}_Aligned_Faces" if nested else root / name

    images = []
    for name, split, cls, files in (
            ("Train", "train", "Angry", ("Airheads_000519240_00000005.png", "Bridesmaids_001_1.png")),
            ("Train", "train", "Happy", ("Hangover_002_1.png",)),
            ("Val", "val", "Sad", ("Serendipity_003_1.png",)),
            ("Val", "val", "Neutral", ("Unstoppable_004_2.png",))):
        for file in files:
            path = split_dir(name) / cls / file
            write_image(path)
            images.append({"source": path.relative_to(root).as_posix(), "cls": cls, "split": split})
    corrupt = split_dir("Val") / "Fear" / "Broken_005_1.png"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    images.append({"source": corrupt.relative_to(root).as_posix(), "cls": "Fear", "split": "val"})
    unknown = split_dir("Train") / "Confused"   # not an SFEW class
    write_image(unknown / "Movie_006_1.png")
    write_image(root / "Test" / "Test_Aligned_Faces" / "Movie_007_1.png")   # unlabelled
    if nested:  # full movie frames beside the aligned faces must not be read
        write_image(root / "Train" / "Angry" / "Airheads_000519240.png", size=(72, 57))
    return {
        "images": images,
        "corrupt": corrupt,
        "skips": [(unknown.relative_to(root).as_posix(), "unknown class folder")],
        "notes": [("Test", "not read")],
    }


def sfew_expected(truth, val_split="val", aligned=True):
    """Rows of a make_sfew copy read with these options (the defaults: the sfew reader's)."""
    return sorted((i["source"], labels.index(EMOTIW_CLASSES[i["cls"]]), None,
                   val_split if i["split"] == "val" else i["split"], None, None, aligned)
                  for i in truth["images"])


def make_afew(root: Path) -> dict:
    """Train_AFEW/<Class>/<clip>.avi, Val_AFEW/<Class>/<clip>.avi, plus broken clips."""
    clips = []
    for top, split, cls, clip_id, brightness in (
            ("Train_AFEW", "train", "Angry", "000046280", [10, 50, 90, 130, 170, 210]),
            ("Train_AFEW", "train", "Happy", "000147120", [40, 120, 200]),
            ("Val_AFEW", "val", "Sad", "003218160", [200, 150, 100, 50])):
        path = root / top / cls / f"{clip_id}.avi"
        write_video(path, brightness)
        clips.append({"path": path, "source": path.relative_to(root).as_posix(), "cls": cls,
                      "split": split, "clip": clip_id, "brightness": brightness})
    corrupt = root / "Train_AFEW" / "Fear" / "000999001.avi"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"RIFF....AVI LIST not a real clip" * 4)
    empty = root / "Val_AFEW" / "Neutral" / "000999002.avi"
    write_video(empty, [])
    duplicate = root / "Val_AFEW" / "Happy" / "000046280.avi"     # same id as a Train clip
    write_video(duplicate, [60, 60])
    unknown = root / "Train_AFEW" / "Bored" / "000999003.avi"   # not an AFEW class
    write_video(unknown, [60, 60])
    faces = root / "Train_AFEW" / "AlignedFaces_LBPTOP_Points" / "Faces" / "000046280"
    write_image(faces / "0001.png")
    (root / "Train_AFEW" / "Angry" / "notes.txt").write_text("not a clip\n")
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return {
        "clips": clips,
        "skips": [(rel(corrupt), "unreadable video"), (rel(empty), "empty video"),
                  (rel(duplicate), "duplicate clip"), (rel(unknown.parent), "unknown class folder")],
        "notes": [(rel(faces.parent.parent), "not read")],
    }


def afew_expected(truth, frames_of=range, val_split="val"):
    """Rows of a make_afew copy when `frames_of(n)` picks the frames read of an n-frame clip."""
    expected = []
    for clip in truth["clips"]:
        split = val_split if clip["split"] == "val" else clip["split"]
        for frame in frames_of(len(clip["brightness"])):
            expected.append((f"{clip['source']}#{frame}", labels.index(EMOTIW_CLASSES[clip["cls"]]),
                             None, split, clip["clip"], frame, False))
    return sorted(expected)


def write_annotation(path: Path, header: str | None, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{line}\n" for line in ([header] if header else []) + lines)
    path.write_text(text)


def make_affwild2(root: Path, release: str = "abaw3") -> dict:
    """EXPR_Set/{Train_Set,Validation_Set}/<video>.txt + cropped_aligned/<video>/00001.jpg.

    release "abaw3": `EXPR_Set/Train_Set`, 8-class header (with Other);
    release "abaw2": `annotations/EXPR_Set/Training_Set`, 7-class header, no code 7.
    """
    if release == "abaw3":
        expr, train_name, header = root / "EXPR_Set", "Train_Set", AFFWILD2_HEADER
        codes_a = [0, 4, 4, -1, 7, 6, 1, 2, 3, 5]
    else:
        expr, train_name, header = root / "annotations" / "EXPR_Set", "Training_Set", AFFWILD2_HEADER_V2
        codes_a = [0, 4, 4, -1, 5, 6, 1, 2, 3, 5]
    train, val = expr / train_name, expr / "Validation_Set"
    videos = {
        "10-60-1280x720": {"dir": train, "split": "train", "codes": codes_a, "missing": {7}},
        "video59_left": {"dir": val, "split": "val", "codes": [5, 5, 0], "missing": set()},
        "video59_right": {"dir": val, "split": "val", "codes": [6, -1, 6], "missing": set()},
    }
    for name, video in videos.items():
        write_annotation(video["dir"] / f"{name}.txt", header, [str(c) for c in video["codes"]])
        for frame, code in enumerate(video["codes"], start=1):
            # no face crop where the frame is ignored, or where the fixture wants one missing
            if code != -1 and frame not in video["missing"]:
                write_image(root / "cropped_aligned" / name / f"{frame:05d}.jpg", 10 * frame)
        video["ann"] = (video["dir"] / f"{name}.txt").relative_to(root).as_posix()
    write_image(root / "cropped_aligned" / "10-60-1280x720" / f"{len(codes_a) + 1:05d}.jpg")  # extra
    bad = {
        "badline": (["0", "1", "x1", "2"], "malformed annotation"),
        "noheader": (None, "malformed annotation"),
        "noimages": (["0", "3"], "missing image folder"),
        "empty": ([], "empty annotation"),
        "range": (["0", "9"], "label out of range"),
    }
    for name, (lines, _) in bad.items():
        path = train / f"{name}.txt"
        if name == "noheader":
            write_annotation(path, None, ["0", "1"])
        elif name == "empty":
            path.write_text("")
        else:
            write_annotation(path, header, lines)
    for name in ("badline", "range", "noheader"):
        write_image(root / "cropped_aligned" / name / "00001.jpg")
    a = videos["10-60-1280x720"]
    skips = [(train.relative_to(root).joinpath(f"{name}.txt").as_posix(), kind)
             for name, (_, kind) in bad.items()]
    skips += [(a["ann"], "ignored frames"), (a["ann"], "missing image")]
    skips += [(videos["video59_right"]["ann"], "ignored frames")]
    if release == "abaw3":
        skips += [(a["ann"], "other class")]
    return {"videos": videos, "skips": skips, "expr": expr.relative_to(root).as_posix()}


def affwild2_expected(truth, stride=1, val_split="val"):
    """Rows of a make_affwild2 copy read with frame_stride `stride`."""
    expected = []
    for name, video in truth["videos"].items():
        split = val_split if video["split"] == "val" else video["split"]
        for frame, code in enumerate(video["codes"], start=1):
            if (frame - 1) % stride or code not in AFFWILD2_CODES or frame in video["missing"]:
                continue
            expected.append((f"cropped_aligned/{name}/{frame:05d}.jpg",
                             labels.index(AFFWILD2_CODES[code]), name, split, name, frame, True))
    return sorted(expected)
