"""Load images, find the face, crop and align it to a square of the model size.

Order of preference (DESIGN): given landmarks (eyes levelled) > given box > an already aligned
image (used whole) > a detector (`mrfer.data.detect`: dlib's 68 landmarks or RetinaFace's five
points, eyes levelled as for given landmarks, or a Haar box) > the centre crop, if allowed.
"""
from __future__ import annotations

import functools
import os
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from mrfer.data import detect
from mrfer.data.records import ArchiveMember, Record
from mrfer.errors import ImageError

# What cv2.imread reads; readers and `predict` pick image files by these suffixes.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                  ".pbm", ".pgm", ".ppm", ".pnm"}
VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"}
COLORS = ("gray", "rgb")
NO_FACE_MODES = ("skip", "center")

# We report unreadable files ourselves (ImageError, naming the file); opencv's own stderr noise
# about broken PNG chunks would only bury that report.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def read_frame(path: Path, frame: int) -> np.ndarray:
    """Frame `frame` (0-based) of a video file, BGR uint8."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageError(f"unreadable video: {path}")
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = capture.read()
    finally:
        capture.release()
    if not ok or image is None:
        raise ImageError(f"unreadable video frame {frame}: {path}")
    return image


@functools.lru_cache(maxsize=4)
def open_archive(path: str, stamp: tuple[int, int, int, int]) -> zipfile.ZipFile:
    """An open zip, kept for the next image from it: reading a 10k-member index per image
    would cost more than decoding. `stamp` (process id, inode, mtime, size) makes a forked
    worker or a rewritten archive open its own."""
    return zipfile.ZipFile(path)


def read_member(member: ArchiveMember) -> bytes:
    """The bytes of a zip member; ImageError naming archive and member if absent or unreadable."""
    try:
        st = os.stat(member.archive)
    except FileNotFoundError:
        raise ImageError(f"missing file: {member.archive}") from None
    try:
        archive = open_archive(str(member.archive), (os.getpid(), st.st_ino, st.st_mtime_ns, st.st_size))
        return archive.read(member.name)
    except KeyError:
        raise ImageError(f"missing file: {member}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
        # not a zip, bad CRC or header, damaged deflate stream, unsupported compression, encrypted
        raise ImageError(f"unreadable or corrupt image: {member} ({e})") from None


def decode_member(member: ArchiveMember) -> np.ndarray:
    """A zip member decoded as cv2.imread decodes the same bytes from a file."""
    data = np.frombuffer(read_member(member), dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise ImageError(f"unreadable or corrupt image: {member}")
    return image


def load_image(source: str | os.PathLike | ArchiveMember | np.ndarray, frame: int | None = None) -> np.ndarray:
    """An image as uint8 HxWx3 BGR (gray images are expanded). Raises ImageError naming the file."""
    if isinstance(source, np.ndarray):
        image = source
    elif isinstance(source, ArchiveMember):
        image = decode_member(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"missing file: {path}")
        if path.suffix.lower() in VIDEO_SUFFIXES:
            image = read_frame(path, frame or 0)
        else:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.size == 0:
                raise ImageError(f"unreadable or corrupt image: {path}")
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the top 8 bits
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}: {source if not isinstance(source, np.ndarray) else 'array'}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ImageError(f"unsupported image shape {image.shape}")


def square_warp(image: np.ndarray, center: np.ndarray, side: float, size: int,
                angle_deg: float = 0.0) -> np.ndarray:
    """Crop a `side`-pixel square around `center`, rotated by `angle_deg`, resized to `size`."""
    scale = size / max(side, 1.0)
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), angle_deg, scale)
    matrix[:, 2] += size / 2.0 - np.asarray(center, dtype=np.float64)
    # INTER_AREA when shrinking avoids aliasing; replicate borders instead of black bars.
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


# Five points (RetinaFace's: eye centres, nose tip, mouth corners) to the square the 68 points would
# give, in the eye-levelled frame around the eyes' midpoint, in units of u = (eye-centre distance +
# eyes-to-mouth height) / 2: side 2.31 u, centre 0.74 u below the eyes and 1.31 times the nose's
# sideways offset the other way (a turned face shows more of its far cheek). Fitted (medians / least
# squares) to dlib's 68 points on 417 LFW photos; the side varies by 5.5 % (cv) around it.
FIVE_POINT_SIDE = 2.31
FIVE_POINT_DROP = 0.74
FIVE_POINT_NOSE = -1.31


def eye_angle(left_eye: np.ndarray, right_eye: np.ndarray) -> tuple[float, np.ndarray]:
    """(roll in degrees, rotation matrix that levels it) of the line between the eyes."""
    dx, dy = right_eye - left_eye
    angle = np.degrees(np.arctan2(dy, dx))
    theta = np.radians(-angle)
    return angle, np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def landmark_square(landmarks: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(centre, side, roll in degrees) of the eye-levelled face square of 68 iBUG points (their box
    in the levelled frame) or of five points (FIVE_POINT_* above); the margin is not included."""
    if len(landmarks) == 5:
        left_eye, right_eye, nose, mouth = landmarks[0], landmarks[1], landmarks[2], landmarks[3:5].mean(axis=0)
    else:
        left_eye, right_eye = landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)
    angle, rot = eye_angle(left_eye, right_eye)
    eyes_mid = (left_eye + right_eye) / 2
    if len(landmarks) == 5:
        nose_x = ((nose - eyes_mid) @ rot.T)[0]
        unit = (np.linalg.norm(right_eye - left_eye) + abs(((mouth - eyes_mid) @ rot.T)[1])) / 2
        offset, side = np.array([FIVE_POINT_NOSE * nose_x, FIVE_POINT_DROP * unit]), FIVE_POINT_SIDE * unit
    else:
        # Box of the landmarks in the levelled frame, so the crop is tight after rotation.
        levelled = (landmarks - eyes_mid) @ rot.T
        lo, hi = levelled.min(axis=0), levelled.max(axis=0)
        offset, side = (lo + hi) / 2, float((hi - lo).max())
    return eyes_mid + offset @ rot, float(side), float(angle)  # offset back to image coordinates


def align_by_landmarks(image: np.ndarray, landmarks: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Rotate so the eyes are level, then crop the face's square (landmark_square) grown by `margin`
    per side."""
    center, side, angle = landmark_square(landmarks)
    return square_warp(image, center, side * (1 + 2 * margin), size, angle_deg=angle)


def crop_box(image: np.ndarray, box: tuple[int, int, int, int], size: int, margin: float) -> np.ndarray:
    x, y, w, h = box
    center = np.array([x + w / 2.0, y + h / 2.0])
    return square_warp(image, center, max(w, h) * (1 + 2 * margin), size)


def to_color(face_bgr: np.ndarray, color: str) -> np.ndarray:
    """HxWx1 gray or HxWx3 RGB, the layout stored in the arrays."""
    if color == "gray":
        return cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
    if color == "rgb":
        return cv2.cvtColor(face_bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f"color must be one of {COLORS}, got {color!r}")


def crop_detected(image: np.ndarray, face: detect.Face, size: int, margin: float) -> np.ndarray:
    """A detected face cropped as a given one: levelled by its landmarks if it has them, else its box."""
    if face.landmarks is not None:
        return align_by_landmarks(image, face.landmarks, size, margin)
    return crop_box(image, face.box, size, margin)


def extract_face(record: Record, size: int, margin: float, color: str, no_face: str,
                 detector: str) -> tuple[np.ndarray | None, str]:
    """(face array, how it was located) or (None, reason). Raises ImageError if unreadable.
    `detector` (one of detect.DETECTORS) is used only for records without landmarks, box or alignment."""
    image = load_image(record.image, record.frame if not isinstance(record.image, np.ndarray) else None)
    if record.landmarks is not None:
        face, how = align_by_landmarks(image, record.landmarks, size, margin), "landmarks"
    elif record.box is not None:
        face, how = crop_box(image, record.box, size, margin), "box"
    elif record.aligned:
        face, how = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA
                               if min(image.shape[:2]) > size else cv2.INTER_LINEAR), "aligned"
    else:
        found = detect.find_faces(image, detector)
        if found:
            face, how = crop_detected(image, found[0], size, margin), f"detected ({detector})"
        elif no_face == "center":
            h, w = image.shape[:2]
            face = square_warp(image, np.array([w / 2, h / 2]), min(h, w), size)
            how = "center"
        else:
            return None, f"no face found by the {detector} detector"
    return to_color(face, color), how
