"""Tiny photo datasets in the exact official on-disk layouts (FER2013, FER+, RAF-DB, AffectNet,
ExpW, JAFFE) and generic class folders, including the bad cases each reader must skip.

Every `make_*` writes under `root` and returns what it wrote and what a reader must yield:
    {"records": [expected record dicts], "skips": [(source, reason)], "notes": [(source, note)],
     "duplicates": [(source, first_source, split, first_split, action)] (readers that look for them), ...}
An expected record dict holds the Record fields that the reader must set exactly
(source, label, split, subject, box, aligned). The label code tables below are written from
each dataset's documentation, independently of mrfer.data.labels.

Faces are drawn with cv2 (head, eyes, brows, mouth shaped by the expression), so the images
look like faces and differ by class, and the aligned layouts need no face detector.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np

CANONICAL = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")
FER2013_CODES = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
RAFDB_CODES = {"surprise": 1, "fear": 2, "disgust": 3, "happy": 4, "sad": 5, "angry": 6, "neutral": 7}
AFFECTNET_CODES = {"neutral": 0, "happy": 1, "sad": 2, "surprise": 3, "fear": 4, "disgust": 5,
                   "angry": 6, "contempt": 7}
EXPW_CODES = FER2013_CODES
JAFFE_CODES = {"angry": "AN", "disgust": "DI", "fear": "FE", "happy": "HA", "neutral": "NE",
               "sad": "SA", "surprise": "SU"}
FERPLUS_HEADER = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
                  "contempt,unknown,NF")
FERPLUS_VOTE_CLASSES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
FOLDER_USAGES = ("Training", "Training", "Training", "PublicTest", "PrivateTest")
# Class folder spellings of the generic `folders` layout -> canonical class name.
CLASS_FOLDERS = {"Angry": "angry", "happiness": "happy", "Sad": "sad", "neutral": "neutral"}
SUBJECT_REGEX = r"^(S\d+)_"
USAGE_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def label_of(name: str) -> int:
    return CANONICAL.index(name)


def expected(source: str, label: int, split: str | None = None, subject: str | None = None,
             box: tuple | None = None, aligned: bool = False) -> dict:
    return {"source": source, "label": label, "split": split, "subject": subject, "box": box,
            "aligned": aligned}


# ----------------------------------------------------------------------------- drawing faces

def draw_face(canvas: np.ndarray, box: tuple[int, int, int, int], label: int,
              rng: np.random.Generator) -> None:
    """Draw a face whose brows and mouth depend on `label` into `box` (x, y, w, h) of canvas."""
    x, y, w, h = box
    skin = int(rng.integers(150, 210))
    dark = int(rng.integers(20, 60))
    color = (lambda v: v) if canvas.ndim == 2 else (lambda v: (v, v, min(255, v + 25)))
    cx, cy = x + w / 2 + rng.uniform(-0.03, 0.03) * w, y + h / 2 + rng.uniform(-0.03, 0.03) * h
    pt = lambda fx, fy: (int(round(cx + fx * w)), int(round(cy + fy * h)))          # noqa: E731
    ax = lambda fx, fy: (max(1, int(round(fx * w))), max(1, int(round(fy * h))))    # noqa: E731
    cv2.ellipse(canvas, pt(0, 0), ax(0.40, 0.48), 0, 0, 360, color(skin), -1)
    eye_open = 0.07 if label in (2, 5) else 0.045                      # fear, surprise: wide eyes
    for side in (-1, 1):
        cv2.ellipse(canvas, pt(side * 0.17, -0.10), ax(0.08, eye_open), 0, 0, 360, color(245), -1)
        cv2.circle(canvas, pt(side * 0.17, -0.10), max(1, int(0.03 * w)), color(dark), -1)
        inner_drop = {0: 0.06, 4: -0.05, 2: -0.04, 5: -0.02}.get(label, 0.0)   # brow slant
        brow_y = -0.24 if label in (2, 5) else -0.20
        cv2.line(canvas, pt(side * 0.08, brow_y + inner_drop), pt(side * 0.27, brow_y),
                 color(dark), max(1, int(0.03 * w)))
    cv2.line(canvas, pt(0, -0.05), pt(-0.03, 0.10), color(skin - 40), max(1, int(0.015 * w)))
    thick = max(1, int(0.03 * w))
    if label == 3:                                   # happy: wide smile
        cv2.ellipse(canvas, pt(0, 0.18), ax(0.18, 0.10), 0, 10, 170, color(dark), thick)
    elif label == 4:                                 # sad: frown
        cv2.ellipse(canvas, pt(0, 0.30), ax(0.15, 0.07), 0, 200, 340, color(dark), thick)
    elif label == 5:                                 # surprise: open round mouth
        cv2.ellipse(canvas, pt(0, 0.27), ax(0.08, 0.11), 0, 0, 360, color(dark), -1)
    elif label == 2:                                 # fear: small open mouth
        cv2.ellipse(canvas, pt(0, 0.27), ax(0.11, 0.05), 0, 0, 360, color(dark), -1)
    elif label == 1:                                 # disgust: raised lip, wrinkled nose
        cv2.line(canvas, pt(-0.14, 0.28), pt(0.14, 0.23), color(dark), thick)
        cv2.line(canvas, pt(-0.06, 0.02), pt(0.06, 0.02), color(skin - 50), thick)
    elif label == 7:                                 # contempt: one-sided smirk
        cv2.line(canvas, pt(-0.14, 0.27), pt(0.05, 0.27), color(dark), thick)
        cv2.ellipse(canvas, pt(0.09, 0.23), ax(0.06, 0.04), 0, 0, 100, color(dark), thick)
    elif label == 0:                                 # angry: pressed lips
        cv2.line(canvas, pt(-0.10, 0.27), pt(0.10, 0.27), color(dark), thick + 1)
    else:                                            # neutral
        cv2.line(canvas, pt(-0.14, 0.27), pt(0.14, 0.27), color(dark), thick)


def face_image(size: int, label: int, rng: np.random.Generator, color: bool = False) -> np.ndarray:
    """An aligned face filling a size x size image (gray, or BGR if color), with mild noise."""
    shape = (size, size, 3) if color else (size, size)
    image = np.full(shape, int(rng.integers(60, 120)), np.uint8)
    margin = size * 0.06
    draw_face(image, (int(margin), int(margin), int(size - 2 * margin), int(size - 2 * margin)), label, rng)
    noise = rng.integers(-6, 7, size=shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def scene_image(width: int, height: int, faces: list[tuple[tuple[int, int, int, int], int]],
                rng: np.random.Generator, color: bool = True) -> np.ndarray:
    """A photo-like background with a face drawn in every (box, label) of `faces`."""
    shape = (height, width, 3) if color else (height, width)
    ramp = np.linspace(70, 150, width, dtype=np.float32)[None, :]
    image = np.broadcast_to(ramp if not color else ramp[..., None], shape).astype(np.uint8).copy()
    for box, label in faces:
        draw_face(image, box, label, rng)
    noise = rng.integers(-5, 6, size=shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cv2 could not write {path}")


def pixels_text(image: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in image.reshape(-1))


# ----------------------------------------------------------------------------- FER2013

def fer2013_rows(n_per_class: int, rng: np.random.Generator) -> list[tuple[int, np.ndarray, str]]:
    """(emotion code, 48x48 face, Usage) rows: per class 3/5 Training, 1/5 PublicTest, 1/5 PrivateTest."""
    rows = []
    for i in range(n_per_class):
        for name, code in FER2013_CODES.items():
            rows.append((code, face_image(48, label_of(name), rng), FOLDER_USAGES[i % 5]))
    return rows


def make_fer2013(root: Path, n_per_class: int = 5, bad: bool = True, seed: int = 0,
                 csv_name: str = "fer2013.csv") -> dict:
    """Kaggle fer2013.csv (header `emotion,pixels,Usage`), or with csv_name="icml_face_data.csv"
    the competition file (header `emotion, Usage, pixels`). With `bad`, adds one row per bad
    case and a cross-split duplicate of the first face (kept, listed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    icml = csv_name == "icml_face_data.csv"
    rows = [(str(code), pixels_text(img), usage, img) for code, img, usage in fer2013_rows(n_per_class, rng)]
    out = {"records": [], "skips": [], "duplicates": [], "images": {}, "blank": None, "path": root / csv_name}
    bad_rows = []
    if bad:
        face = face_image(48, 0, rng)
        too_short = pixels_text(face).rsplit(" ", 1)[0]
        not_int = pixels_text(face).split(" ")
        not_int[100] = "12.5"
        too_big = pixels_text(face).split(" ")
        too_big[7] = "256"
        first_code, first_pixels, _, first_img = rows[0]
        bad_rows = [
            (("3", too_short, "Training"), "wrong pixel count: 2303 values, expected 2304 (48x48)"),
            (("3", " ".join(not_int), "Training"), "bad pixels: '12.5' is not an integer"),
            (("2", " ".join(too_big), "PublicTest"), "bad pixels: value 256 outside 0..255"),
            (("7", pixels_text(face), "Training"), "unknown label: emotion '7' (FER2013 codes are 0..6)"),
            (("x", pixels_text(face), "Training"), "unknown label: emotion 'x' (FER2013 codes are 0..6)"),
            (("4", pixels_text(face)), "malformed row: 2 fields, expected 3 "
                                       f"({'emotion,usage,pixels' if icml else 'emotion,pixels,usage'})"),
            (("4", pixels_text(face), "Validation"),
             "unknown usage: 'Validation' (expected Training, PublicTest, PrivateTest)"),
            (("6", " ".join(["0"] * 2304), "Training"), "blank image: every pixel is 0"),
            ((first_code, first_pixels, "PrivateTest"), None),     # duplicate of the first row
        ]
    lines = ["emotion, Usage, pixels" if icml else "emotion,pixels,Usage"]

    def add_line(fields: tuple) -> str:
        if icml and len(fields) == 3:
            fields = (fields[0], fields[2], fields[1])
        lines.append(",".join(fields))
        return f"{csv_name}:{len(lines)}"

    half = len(rows) // 2
    for code, pixels, usage, img in rows[:half]:
        source = add_line((code, pixels, usage))
        out["records"].append(expected(source, int(code), USAGE_SPLIT[usage], aligned=True))
        out["images"][source] = img
    first_source = out["records"][0]["source"] if out["records"] else None
    for fields, reason in bad_rows:
        source = add_line(fields)
        if reason is None:
            out["records"].append(expected(source, int(fields[0]), "test", aligned=True))
            out["images"][source] = rows[0][3]
            out["duplicates"].append((source, first_source, "test", "train", "kept"))
            out["duplicate"] = source
        else:
            out["skips"].append((source, reason))
            if reason.startswith("blank"):
                out["blank"] = source
    for code, pixels, usage, img in rows[half:]:
        source = add_line((code, pixels, usage))
        out["records"].append(expected(source, int(code), USAGE_SPLIT[usage], aligned=True))
        out["images"][source] = img
    (root / csv_name).write_text("\n".join(lines) + "\n")
    return out


def make_fer2013_folders(root: Path, n_per_class: int = 5, bad: bool = True, seed: int = 0) -> dict:
    """The Kaggle image release: train/<class>/Training_<id>.jpg, test/<class>/PublicTest_<id>.jpg
    and PrivateTest_<id>.jpg. With `bad`: an unknown class folder, a byte-identical copy of a
    training image under test/ (listed, kept), and a non-image file (ignored)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    folders = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
               "sad": "sad", "surprise": "surprise", "neutral": "neutral"}
    out = {"records": [], "skips": [], "duplicates": []}
    for k, (code, img, usage) in enumerate(fer2013_rows(n_per_class, rng)):
        name = next(n for n, c in FER2013_CODES.items() if c == code)
        top = "train" if usage == "Training" else "test"
        rel = f"{top}/{folders[name]}/{usage}_{10000000 + 7919 * k}.jpg"
        write_image(root / rel, img)
        out["records"].append(expected(rel, label_of(name), USAGE_SPLIT[usage], aligned=True))
    if bad:
        first = next(r for r in out["records"] if r["split"] == "train")
        copy = f"test/{Path(first['source']).parent.name}/PrivateTest_99999999.jpg"
        shutil.copyfile(root / first["source"], root / copy)
        out["records"].append(expected(copy, first["label"], "test", aligned=True))
        out["duplicates"].append((copy, first["source"], "test", "train", "kept"))
        write_image(root / "train/unknown_class/Training_1.jpg", face_image(48, 6, rng))
        out["skips"].append(("train/unknown_class", "unknown class folder: 'unknown_class' (1 images); "
                                                    "map it with class_map"))
        (root / "train/happy/Thumbs.db").write_bytes(b"not an image")
    return out


def make_fer2013_duplicates(root: Path, seed: int = 0) -> dict:
    """fer2013.csv with repeats of every kind: within train, train/val, train/test, val/test, and
    a PublicTest row placed before the Training row it copies. Returns what `duplicates: keep`
    must give ("records", "duplicates") and the rows `drop_from_eval` must drop ("dropped":
    (source, first_source)), the val/test copies of training images."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [(str(code), pixels_text(img), usage) for code, img, usage in
            fer2013_rows(5, np.random.default_rng(seed))]
    base = 3   # line of the first official row: header, the early PublicTest copy, then rows
    line_of = lambda i: f"fer2013.csv:{base + i}"                                   # noqa: E731
    train = [i for i, row in enumerate(rows) if row[2] == "Training"]
    val = [i for i, row in enumerate(rows) if row[2] == "PublicTest"]
    late_train = train[-1]                 # its PublicTest copy comes first in the file
    copies = [  # (row copied, Usage of the copy, the copy is dropped by drop_from_eval)
        (train[0], "Training", False),     # within train
        (train[1], "PublicTest", True),    # train / val
        (train[0], "PrivateTest", True),   # train / test (a third copy of train[0])
        (val[0], "PrivateTest", False),    # val / test
    ]
    lines = ["emotion,pixels,Usage", f"{rows[late_train][0]},{rows[late_train][1]},PublicTest"]
    lines += [",".join(row) for row in rows]
    lines += [f"{rows[i][0]},{rows[i][1]},{usage}" for i, usage, _ in copies]
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")

    out = {"records": [], "duplicates": [], "dropped": []}
    out["records"].append(expected("fer2013.csv:2", int(rows[late_train][0]), "val", aligned=True))
    out["duplicates"].append(("fer2013.csv:2", line_of(late_train), "val", "train", "kept"))
    out["dropped"].append(("fer2013.csv:2", line_of(late_train)))
    for i, (code, _, usage) in enumerate(rows):
        out["records"].append(expected(line_of(i), int(code), USAGE_SPLIT[usage], aligned=True))
    for k, (i, usage, dropped) in enumerate(copies):
        source = f"fer2013.csv:{base + len(rows) + k}"
        out["records"].append(expected(source, int(rows[i][0]), USAGE_SPLIT[usage], aligned=True))
        out["duplicates"].append((source, line_of(i), USAGE_SPLIT[usage], USAGE_SPLIT[rows[i][2]], "kept"))
        if dropped:
            out["dropped"].append((source, line_of(i)))
    return out


# ----------------------------------------------------------------------------- FER+

def make_ferplus(root: Path, seed: int = 0) -> dict:
    """fer2013.csv + fer2013new.csv (FER+ votes, same row order). Every row states what
    `vote: majority` and `vote: plurality` must make of it: ("label", index) or ("skip", reason)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    V = lambda **votes: [votes.get(c, 0) for c in FERPLUS_VOTE_CLASSES + ("unknown", "NF")]  # noqa: E731
    clear = []   # (votes, winner): 8 or 9 votes for the winner, the rest spread as single votes
    for i, name in enumerate(FERPLUS_VOTE_CLASSES):
        other = FERPLUS_VOTE_CLASSES[(i + 1) % 8]
        clear.append((V(**{name: 8 + i % 2, other: 1}), label_of(name)))
    no_majority = ("no majority: top class happiness has 4 of 10 votes (after dropping single "
                   "votes), needs more than half")
    tie_majority = ("no majority: top class neutral has 5 of 10 votes (after dropping single "
                    "votes), needs more than half")
    cases = [  # (name, votes, majority outcome, plurality outcome)
        ("fer{}.png", V(happy=4, neutral=3, sad=3), ("skip", no_majority), ("label", label_of("happy"))),
        ("fer{}.png", V(happy=5, neutral=1, surprise=1, sad=1, angry=1, fear=1),
         ("label", label_of("happy")), ("label", label_of("happy"))),
        ("fer{}.png", V(neutral=5, happy=5), ("skip", tie_majority),
         ("skip", "tied vote: neutral, happiness have 5 votes each")),
        ("fer{}.png", V(unknown=7, neutral=3), ("skip", "no expression: most votes for unknown"),
         ("skip", "no expression: most votes for unknown")),
        ("fer{}.png", V(NF=6, neutral=4), ("skip", "not a face: most votes for NF (not a face)"),
         ("skip", "not a face: most votes for NF (not a face)")),
        ("", V(NF=10), ("skip", "not a face: FER+ leaves the image name empty"),
         ("skip", "not a face: FER+ leaves the image name empty")),
        ("fer{}.png", V(), ("skip", "no votes: every count is 0"), ("skip", "no votes: every count is 0")),
    ]
    rows = [("fer{}.png", votes, ("label", lab), ("label", lab)) for votes, lab in clear] + cases
    fer_lines, plus_lines = ["emotion,pixels,Usage"], [FERPLUS_HEADER]
    out = {"rows": [], "skips_always": [], "duplicate": None}
    for k, (name, votes, majority, plurality) in enumerate(rows):
        usage = ("Training", "PublicTest", "PrivateTest")[k % 3]
        image_name = name.format(f"{k:07d}")
        face_label = majority[1] if majority[0] == "label" else 6
        fer_lines.append(f"{min(face_label, 6)},{pixels_text(face_image(48, face_label, rng))},{usage}")
        plus_lines.append(",".join([usage, image_name] + [str(v) for v in votes]))
        out["rows"].append({"source": image_name, "plus_source": f"fer2013new.csv:{len(plus_lines)}",
                            "split": USAGE_SPLIT[usage], "votes": votes,
                            "majority": majority, "plurality": plurality})
    # A PrivateTest copy of the first (Training) face with the same votes, as FER2013 has:
    # labelled like it, kept unless `duplicates: drop_from_eval`.
    first = out["rows"][0]
    fer_lines.append(fer_lines[1].rsplit(",", 1)[0] + ",PrivateTest")
    plus_lines.append(",".join(["PrivateTest", "fer9000000.png"] + [str(v) for v in first["votes"]]))
    out["rows"].append(dict(first, source="fer9000000.png", plus_source=f"fer2013new.csv:{len(plus_lines)}",
                            split="test"))
    out["duplicate"] = ("fer9000000.png", first["source"])
    # Rows every mode must skip: bad votes, a short FER+ row, disagreeing Usage, bad pixels.
    face = pixels_text(face_image(48, 3, rng))
    specials = [
        ("3," + face + ",Training", "Training,fer9000001.png,9,x,0,0,0,0,0,0,0,0",
         "plus", "bad votes: 9,x,0,0,0,0,0,0,0,0"),
        ("3," + face + ",Training", "Training,fer9000002.png,10,0,0,0,0,0,0,0,0",
         "plus", "malformed row: 11 fields, expected 12 (usage,image name,neutral,happiness,surprise,"
                 "sadness,anger,disgust,fear,contempt,unknown,nf)"),
        ("3," + face + ",PublicTest", "Training,fer9000003.png,0,10,0,0,0,0,0,0,0,0",
         "plus", None),
        ("3," + face.rsplit(" ", 1)[0] + ",Training", "Training,fer9000004.png,0,10,0,0,0,0,0,0,0,0",
         "fer", "wrong pixel count: 2303 values, expected 2304 (48x48)"),
    ]
    for fer_line, plus_line, where, reason in specials:
        fer_lines.append(fer_line)
        plus_lines.append(plus_line)
        fer_source, plus_source = f"fer2013.csv:{len(fer_lines)}", f"fer2013new.csv:{len(plus_lines)}"
        if reason is None:
            reason = (f"usage mismatch: fer2013new.csv says 'Training', {fer_source} "
                      f"says 'PublicTest' (files not aligned?)")
        out["skips_always"].append((plus_source if where == "plus" else fer_source, reason))
    (root / "fer2013.csv").write_text("\n".join(fer_lines) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(plus_lines) + "\n")
    return out


def ferplus_expected(made: dict, vote: str, min_votes: int = 0) -> tuple[list[dict], list[tuple]]:
    """Records and skips that `vote` (and `min_votes`) must give for a make_ferplus dataset."""
    records, skips = [], []
    for row in made["rows"]:
        kind, value = row[vote]
        if kind == "label" and max(row["votes"]) < min_votes:
            name = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                    "contempt")[FERPLUS_VOTE_CLASSES.index(CANONICAL[value])]
            kind, value = "skip", f"too few votes: {name} has {max(row['votes'])}, min_votes is {min_votes}"
        if kind == "label":
            records.append(expected(row["source"], value, row["split"], aligned=True))
        else:
            skips.append((row["plus_source"], value))
    skips += made["skips_always"]
    return records, skips


# ----------------------------------------------------------------------------- RAF-DB

def make_rafdb(root: Path, n_per_class: int = 4, images: str = "aligned", bad: bool = True,
               seed: int = 0, basic_folder: bool = False) -> dict:
    """RAF-DB basic: EmoLabel/list_patition_label.txt and Image/aligned/*_aligned.jpg (100x100),
    or with images="original" Image/original/*.jpg plus Annotation/boundingbox/*_boundingbox.txt.
    Every 4th face of a class is a test_ image (test names have 4 digits, train names 5)."""
    root = Path(root)
    base = root / "basic" if basic_folder else root
    prefix = "basic/" if basic_folder else ""
    rng = np.random.default_rng(seed)
    out = {"records": [], "skips": []}
    lines: list[str] = []
    counters = {"train": 0, "test": 0}

    def add_image(name: str, label: int) -> tuple[str, tuple | None]:
        """Write the image for label-file entry `name`; (source, expected box)."""
        stem = Path(name).stem
        if images == "aligned":
            rel = f"Image/aligned/{stem}_aligned.jpg"
            write_image(base / rel, face_image(100, label, rng, color=True))
            return prefix + rel, None
        x, y = int(rng.integers(10, 60)), int(rng.integers(10, 40))
        side = int(rng.integers(90, 120))
        rel = f"Image/original/{name}"
        write_image(base / rel, scene_image(200, 170, [((x, y, side, side), label)], rng))
        box_rel = base / f"Annotation/boundingbox/{stem}_boundingbox.txt"
        box_rel.parent.mkdir(parents=True, exist_ok=True)
        box_rel.write_text(f"{x + 0.4:.2f} {y - 0.2:.2f} {x + side:.2f} {y + side + 0.1:.2f}\n")
        return prefix + rel, (x, y, side, side)

    for i in range(n_per_class):
        for name, code in RAFDB_CODES.items():
            split = "test" if i % 4 == 3 else "train"
            counters[split] += 1
            image_name = f"train_{counters['train']:05d}.jpg" if split == "train" \
                else f"test_{counters['test']:04d}.jpg"
            source, box = add_image(image_name, label_of(name))
            lines.append(f"{image_name} {code}")
            out["records"].append(expected(source, label_of(name), split, box=box,
                                           aligned=images == "aligned"))
    label_rel = f"{prefix}EmoLabel/list_patition_label.txt"
    if bad:
        add_image("train_09991.jpg", 0)
        add_image("val_0001.jpg", 0)
        missing = "Image/aligned/train_09990_aligned.jpg" if images == "aligned" \
            else "Image/original/train_09990.jpg"
        bad_lines = [
            ("train_09990.jpg 4",
             (prefix + missing, f"missing file: {prefix + missing} (listed on line {{line}})")),
            ("train_09991.jpg 8", (None, "unknown label: train_09991.jpg has code '8' (RAF-DB codes are 1..7)")),
            ("train_09992.jpg", (None, "malformed line: 1 fields, expected 2 (image label): 'train_09992.jpg'")),
            ("../../../outside/train_09993.jpg 3",
             (None, "path escapes the dataset root: ../../../outside/train_09993.jpg")),
            ("val_0001.jpg 2", (None, "unknown split: val_0001.jpg starts with neither train_ nor test_")),
            (lines[0], (None, f"duplicate entry: {lines[0].split()[0]} already listed on line 1")),
        ]
        if images == "original":
            add_image("train_09994.jpg", 3)
            box_rel = "Annotation/boundingbox/train_09994_boundingbox.txt"
            (base / box_rel).write_text("12.0 abc\n")
            bad_lines.append(("train_09994.jpg 4", (prefix + box_rel, f"bad box file: {prefix + box_rel} "
                                                                       f"must hold 4 numbers x1 y1 x2 y2")))
        insert_at = len(lines) // 2
        for offset, (line, (source, reason)) in enumerate(bad_lines):
            line_no = insert_at + offset + 1
            lines.insert(insert_at + offset, line)
            out["skips"].append((source or f"{label_rel}:{line_no}", reason.format(line=line_no)))
    (base / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (base / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return out


# ----------------------------------------------------------------------------- AffectNet

def landmarks_68(box: tuple[int, int, int, int]) -> np.ndarray:
    """68 points in the iBUG layout, roughly placed in the face box (eyes at 36..47)."""
    x, y, w, h = box
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([0.5 - 0.45 * np.cos(t), 0.45 + 0.5 * np.sin(t)], 1)
    brows = np.stack([np.linspace(0.15, 0.85, 10), np.full(10, 0.30)], 1)
    nose = np.stack([np.r_[np.full(4, 0.5), np.linspace(0.4, 0.6, 5)],
                     np.r_[np.linspace(0.38, 0.6, 4), np.full(5, 0.64)]], 1)
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)) * 0.07,
                     np.sin(np.linspace(0, 2 * np.pi, 6, endpoint=False)) * 0.03], 1)
    eyes = np.r_[ring + [0.33, 0.4], ring + [0.67, 0.4]]
    mouth = np.stack([0.5 + 0.18 * np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                      0.78 + 0.06 * np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], 1)
    points = np.r_[jaw, brows, nose, eyes, mouth]
    return (points * [w, h] + [x, y]).astype(np.float32)


def make_affectnet(root: Path, n_per_class: int = 2, bad: bool = True, seed: int = 0,
                   images_dir: str = "Manually_Annotated_Images") -> dict:
    """Manually_Annotated_file_lists/training.csv (with header) and validation.csv (no header,
    as distributed), photos under <images_dir>/<subDirectory>/<56-hex-name>.jpg."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    header = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
              "expression,valence,arousal")
    files = {"training.csv": [header], "validation.csv": []}
    out = {"records": [], "skips": [], "landmarks": {}, "bad_landmarks": None}
    counter = [0]

    def photo(label: int, suffix: str = ".jpg", write: bool = True) -> tuple[str, tuple]:
        counter[0] += 1
        sub = str(300 + counter[0] % 3)
        rel = f"{sub}/{hashlib.sha224(str(counter[0]).encode()).hexdigest()}{suffix}"
        x, y, side = int(rng.integers(5, 50)), int(rng.integers(5, 40)), int(rng.integers(80, 110))
        if write:
            photo = scene_image(180, 160, [((x, y, side, side), max(label, 0))], rng)
            write_image(root / images_dir / rel, photo)
        return rel, (x, y, side, side)

    def row(rel: str, box: tuple, code: str, points: np.ndarray | None = None, valence: str = "0.5") -> str:
        points = landmarks_68(box) if points is None else points
        text = ";".join(f"{v:.2f}" for v in points.reshape(-1))
        return ",".join([rel, *(str(v) for v in box), text, code, valence, "-0.25"])

    def add(list_name: str, line: str) -> str:
        files[list_name].append(line)
        return f"Manually_Annotated_file_lists/{list_name}:{len(files[list_name])}"

    for i in range(n_per_class):
        for name, code in AFFECTNET_CODES.items():
            list_name = "validation.csv" if i % 2 else "training.csv"
            rel, box = photo(label_of(name), ".png" if name == "fear" else ".jpg")
            add(list_name, row(rel, box, str(code)))
            out["records"].append(expected(f"{images_dir}/{rel}", label_of(name),
                                           "test" if i % 2 else "train", box=box))
            out["landmarks"][f"{images_dir}/{rel}"] = landmarks_68(box)
    if bad:
        for code, meaning in ((8, "none"), (9, "uncertain"), (10, "no-face")):
            rel, box = photo(-1)
            source = add("training.csv", row(rel, box, str(code), valence="-2"))
            out["skips"].append((source, f"no expression label: code {code} ({meaning})"))
        rel, box = photo(0)
        out["skips"].append((add("validation.csv", row(rel, box, "11")),
                             "unknown label: expression '11' (AffectNet codes are 0..10)"))
        rel, box = photo(3, write=False)
        add("training.csv", row(rel, box, "1"))
        out["skips"].append((f"{images_dir}/{rel}", f"missing file: {images_dir}/{rel} (listed in "
                                                    f"Manually_Annotated_file_lists/training.csv:"
                                                    f"{len(files['training.csv'])})"))
        rel, box = photo(3)
        source = add("training.csv", row("../../outside/" + rel, box, "1"))
        out["skips"].append((source, f"path escapes the dataset root: ../../outside/{rel} "
                                     f"leaves {images_dir}/"))
        source = add("training.csv", ",".join(row(rel, box, "1").split(",")[:8]))
        out["skips"].append((source, "malformed row: 8 fields, expected 9"))
        rel, box = photo(3)
        source = add("validation.csv", row(rel, (10, 10, 0, 50), "1", points=landmarks_68(box)))
        out["skips"].append((source, "bad box: x=10 y=10 w=0 h=50 (needs w, h > 0 and x, y >= 0)"))
        rel, box = photo(4)   # landmark list cut short: a record unless landmarks are requested
        source = add("training.csv", row(rel, box, "2", points=landmarks_68(box)[:67]))
        out["records"].append(expected(f"{images_dir}/{rel}", label_of("sad"), "train", box=box))
        out["bad_landmarks"] = (f"{images_dir}/{rel}", source, "bad landmarks: 134 values, expected 136")
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (lists / name).write_text("\n".join(lines) + "\n")
    return out


# ----------------------------------------------------------------------------- ExpW

def make_expw(root: Path, n_photos: int = 6, bad: bool = True, seed: int = 0) -> dict:
    """label/label.lst (`image_name face_id top left right bottom confidence label`) and photos
    in image/origin/, several with two faces."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    keywords = ("afraid_African", "happy_teacher", "angry_boss", "sad_grandmother", "surprised_kid",
                "disgusted_man", "calm_woman", "furious_driver")
    out = {"records": [], "skips": [], "confidence": {}}
    lines: list[str] = []
    width, height = 260, 180
    label_cycle = 0
    for p in range(n_photos):
        name = f"{keywords[p % len(keywords)]}_{100 + p}.jpg"
        n_faces = 1 + p % 2
        faces = []
        for face_id in range(n_faces):
            label = label_cycle % 7
            label_cycle += 1
            left, top = 10 + face_id * 125 + int(rng.integers(0, 10)), int(rng.integers(5, 50))
            side = int(rng.integers(90, 115))
            confidence = round(float(rng.uniform(20, 95)), 4)
            faces.append(((left, top, side, side), label))
            lines.append(f"{name} {face_id} {top} {left} {left + side} {top + side} {confidence} "
                         f"{EXPW_CODES[CANONICAL[label]]}")
            source = f"image/origin/{name}#{face_id}"
            out["records"].append(expected(source, label, box=(left, top, side, side)))
            out["confidence"][source] = confidence
        write_image(root / "image/origin" / name, scene_image(width, height, faces, rng))
    if bad:
        first = lines[0]
        name0 = first.split()[0]
        write_image(root / "image/origin/crowd_party_7.jpg",
                    scene_image(width, height, [((10, 10, 100, 100), 3), ((140, 20, 90, 90), 4)], rng))
        (root / "image/origin/broken_photo_3.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")
        bad_lines = [
            (f"{name0} 5 10 10 100 100 50.0 7",
             f"unknown label: {name0} face 5 has code 7 (ExpW codes are 0..6)"),
            (f"{name0} 6 10 10 100 100 50.0", "malformed line: 7 fields, expected 8: "
                                              f"'{name0} 6 10 10 100 100 50.0'"),
            (f"{name0} 7 10 abc 100 100 50.0 3", f"malformed line: non-numeric field in "
                                                 f"'{name0} 7 10 abc 100 100 50.0 3'"),
            (f"{name0} 8 40 60 60 120 50.0 3", "empty box: top=40 left=60 right=60 bottom=120"),
            (f"{name0} 9 10 200 400 100 50.0 3",
             f"box outside image: top=10 left=200 right=400 bottom=100 in a {width}x{height} photo"),
            ("missing_person_1.jpg 0 10 10 100 100 50.0 3",
             "missing file: image/origin/missing_person_1.jpg"),
            ("../../../outside_2.jpg 0 10 10 100 100 50.0 3",
             "path escapes the dataset root: ../../../outside_2.jpg"),
            ("broken_photo_3.jpg 0 10 10 100 100 50.0 3", "unreadable image: image/origin/broken_photo_3.jpg"),
            (first, "duplicate line: repeats label/label.lst:1"),
            ("crowd_party_7.jpg 0 10 10 110 110 70.0 3", None),                # conflicts with the next
            ("crowd_party_7.jpg 0 10 10 110 110 70.0 4", "conflicting line: face 0 of crowd_party_7.jpg "
                                                        "differs from label/label.lst:{first}"),
            ("crowd_party_7.jpg 1 20 140 230 110 70.0 4", "keep"),
        ]
        for line, reason in bad_lines:
            lines.append(line)
            source = f"label/label.lst:{len(lines)}"
            if reason is None:
                conflict_first = len(lines)
                out["skips"].append((source, "conflicting line: face 0 of crowd_party_7.jpg is "
                                             "labelled differently later"))
            elif reason == "keep":
                out["records"].append(expected("image/origin/crowd_party_7.jpg#1", label_of("sad"),
                                               box=(140, 20, 90, 90)))
                out["confidence"]["image/origin/crowd_party_7.jpg#1"] = 70.0
            else:
                out["skips"].append((source, reason.replace("{first}", str(conflict_first))
                                     if "{first}" in reason else reason))
    (root / "label").mkdir(parents=True, exist_ok=True)
    (root / "label/label.lst").write_text("\n".join(lines) + "\n")
    return out


# ----------------------------------------------------------------------------- JAFFE

def jaffe_photo(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 256x256 gray photo with the face in the middle, like JAFFE's."""
    return scene_image(256, 256, [((40, 30, 176, 200), label)], rng, color=False)


def make_jaffe(root: Path, subjects: tuple[str, ...] = ("KA", "KL", "KM", "YM"), bad: bool = True,
               seed: int = 0, folder: str = "jaffedbase") -> dict:
    """jaffedbase/<SUBJECT>.<CODE><n>.<number>.tiff (256x256 gray photos), one per subject and
    expression, plus an accepted .jpg and a lower-case .png name. With `bad`: an unknown
    expression code, a macOS `._` metadata file, an unrelated image, a converted copy of a
    .tiff (duplicate) and a README (ignored)."""
    root = Path(root)
    base = root / folder if folder else root
    rng = np.random.default_rng(seed)
    out = {"records": [], "skips": []}
    prefix = f"{folder}/" if folder else ""
    number = 20
    for subject in subjects:
        for name, code in JAFFE_CODES.items():
            number += 1
            file_name = f"{subject}.{code}{1 + number % 3}.{number}.tiff"
            write_image(base / file_name, jaffe_photo(label_of(name), rng))
            out["records"].append(expected(prefix + file_name, label_of(name), subject=subject))
    extras = (("NA.HA1.202.jpg", "NA", "happy"), ("tm.su2.190.png", "TM", "surprise"))
    for file_name, subject, name in extras:
        write_image(base / file_name, jaffe_photo(label_of(name), rng))
        out["records"].append(expected(prefix + file_name, label_of(name), subject=subject))
    if bad:
        first = out["records"][0]["source"]
        stem = Path(first).name.rsplit(".", 1)[0]
        write_image(base / "KA.XX1.99.tiff", jaffe_photo(6, rng))
        out["skips"].append((prefix + "KA.XX1.99.tiff",
                             "unknown label: expression code XX (JAFFE codes are AN DI FE HA NE SA SU)"))
        (base / f"._{Path(first).name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        write_image(base / "group_photo.png", scene_image(64, 64, [], rng))
        for junk in (f"._{Path(first).name}", "group_photo.png"):
            out["skips"].append((prefix + junk, "unrecognized name: expected <subject>.<code><n>.<number>.<ext>, "
                                                "e.g. KA.AN1.39.tiff"))
        shutil.copyfile(base / Path(first).name, base / f"{stem}.png")
        out["skips"].append((prefix + f"{stem}.png", f"duplicate image: {stem} already read from {first}"))
        (base / "README").write_text("The JAFFE images may be used only for non-commercial research.\n")
    return out


# ----------------------------------------------------------------------------- class folders

def make_folders(root: Path, n_subjects: int = 2, bad: bool = True, seed: int = 0) -> dict:
    """{train,test}/<Class>/S<nn>_<k>.png with the class folders spelled as datasets spell them
    (CLASS_FOLDERS), read with `subject_regex: SUBJECT_REGEX` ("options"). With `bad`: an
    unknown class folder, a file name with no subject (both skipped) and a Thumbs.db (ignored)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    out = {"records": [], "skips": [], "options": {"subject_regex": SUBJECT_REGEX}}
    for split in ("train", "test"):
        for k, (folder, name) in enumerate(CLASS_FOLDERS.items()):
            for s in range(1, n_subjects + 1):
                rel = f"{split}/{folder}/S{s:02d}_{k}.png"
                write_image(root / rel, face_image(48, label_of(name), rng))
                out["records"].append(expected(rel, label_of(name), split, subject=f"S{s:02d}", aligned=True))
    if bad:
        write_image(root / "train/bored/S01_9.png", face_image(48, 6, rng))
        out["skips"].append(("train/bored", "unknown class folder: 'bored' (1 images); map it with class_map"))
        write_image(root / "test/Sad/portrait.png", face_image(48, 4, rng))
        out["skips"].append(("test/Sad/portrait.png",
                             f"no subject: file name does not match subject_regex {SUBJECT_REGEX!r}"))
        (root / "train/Angry/Thumbs.db").write_bytes(b"not an image")
    return out
