"""A tiny CK+ tree in the exact distributed layout, with hand-placed faults for reader tests,
and the same tree as the zips CK+ is distributed as."""
from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np


def face_landmarks(cx: float, cy: float, scale: float) -> np.ndarray:
    """68 plausible points (jaw, brows, nose, eyes, mouth) around a centre."""
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 0.05, (68, 2))
    pts[0:17] += np.stack([np.linspace(-1, 1, 17), 0.3 + 0.7 * (1 - np.linspace(-1, 1, 17) ** 2)], 1)
    pts[17:27] += np.stack([np.linspace(-0.8, 0.8, 10), np.full(10, -0.55)], 1)
    pts[27:36] += np.stack([np.zeros(9), np.linspace(-0.4, 0.15, 9)], 1)
    pts[36:42] += np.stack([-0.4 + 0.15 * np.cos(np.linspace(0, 6.28, 6)), -0.3 + 0.05 * np.sin(np.linspace(0, 6.28, 6))], 1)
    pts[42:48] += np.stack([0.4 + 0.15 * np.cos(np.linspace(0, 6.28, 6)), -0.3 + 0.05 * np.sin(np.linspace(0, 6.28, 6))], 1)
    pts[48:68] += np.stack([0.35 * np.cos(np.linspace(0, 6.28, 20)), 0.45 + 0.1 * np.sin(np.linspace(0, 6.28, 20))], 1)
    return (pts * scale + [cx, cy]).astype(np.float32)


def write_landmarks(path: Path, points: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points))


def write_sequence(root: Path, subject: str, seq: str, n_frames: int, code: float | None,
                   size: int = 96) -> list[Path]:
    """Frames S###_###_########.png + landmarks for each; emotion file after the last frame."""
    frames = []
    (root / "Emotion" / subject / seq).mkdir(parents=True, exist_ok=True)
    for i in range(1, n_frames + 1):
        stem = f"{subject}_{seq}_{i:08d}"
        image = np.full((size, size), 90, np.uint8)
        cv2.ellipse(image, (size // 2, size // 2), (size // 3, size // 2 - 6), 0, 0, 360, 200, -1)
        cv2.putText(image, str(i), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
        path = root / "cohn-kanade-images" / subject / seq / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        write_landmarks(root / "Landmarks" / subject / seq / f"{stem}_landmarks.txt",
                        face_landmarks(size / 2, size / 2, size / 3))
        frames.append(path)
    if code is not None:
        stem = f"{subject}_{seq}_{n_frames:08d}"
        (root / "Emotion" / subject / seq / f"{stem}_emotion.txt").write_text(f"   {code:.7e}\n")
    return frames


def make_ckplus(root: Path) -> Path:
    """Good sequences plus one of each fault. Returns root."""
    write_sequence(root, "S005", "001", 6, 3.0)      # disgust
    write_sequence(root, "S005", "002", 5, 5.0)      # happy
    write_sequence(root, "S010", "001", 6, 7.0)      # surprise
    write_sequence(root, "S010", "002", 4, 2.0)      # contempt
    write_sequence(root, "S010", "003", 5, None)     # unlabelled: empty Emotion dir, as in CK+
    write_sequence(root, "S011", "001", 5, 9.0)      # label out of range
    frames = write_sequence(root, "S011", "002", 5, 1.0)  # anger, last frame corrupt
    frames[-1].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_sequence(root, "S012", "001", 5, 6.0)      # sadness, empty emotion file
    next((root / "Emotion/S012/001").glob("*_emotion.txt")).write_text("")
    frames = write_sequence(root, "S013", "001", 5, 4.0)  # fear, one landmark file with 67 points
    lm = root / "Landmarks/S013/001" / f"{frames[-1].stem}_landmarks.txt"
    lm.write_text("".join(lm.read_text().splitlines(keepends=True)[:67]))
    return root


# CK+ as distributed: each zip holds its folder.
ZIPS = {"cohn-kanade-images": "extended-cohn-kanade-images.zip", "Emotion": "Emotion_labels.zip",
        "Landmarks": "Landmarks.zip"}


def zip_ckplus(folders: Path, out: Path, compression: int = zipfile.ZIP_DEFLATED, dirs: bool = True,
               parts: tuple[str, ...] = tuple(ZIPS)) -> Path:
    """The CK+ tree at `folders` as CK+'s zips in `out` (`parts`: which folders to zip). `dirs`:
    folder entries too, as `zip -r` writes them (empty folders survive). Returns out."""
    out.mkdir(parents=True, exist_ok=True)
    for top in parts:
        with zipfile.ZipFile(out / ZIPS[top], "w", compression) as zf:
            for path in [folders / top, *sorted((folders / top).rglob("*"))]:
                if path.is_file() or dirs:
                    zf.write(path, path.relative_to(folders).as_posix())
    return out


def corrupt_member(archive: Path, name: str) -> None:
    """Flip a byte of member `name`'s data in place, so reading it fails its CRC (or inflate)."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    data = bytearray(archive.read_bytes())
    header = info.header_offset   # local header: 30 bytes, then the name and extra field
    name_len = int.from_bytes(data[header + 26:header + 28], "little")
    extra_len = int.from_bytes(data[header + 28:header + 30], "little")
    start = header + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def write_zip(archive: Path, members: dict[str, bytes]) -> Path:
    """A zip holding exactly `members` (name -> bytes), for hand-made faulty archives."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return archive
