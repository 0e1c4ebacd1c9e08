"""Benchmark the face detectors as faces shrink: detection rate and landmark error by face size.

Two tables: synthetic faces (always, unless --real-only) and, with --faces DIR, real faces.

Synthetic faces (mrfer.data.synthetic: drawn from 68 iBUG landmarks, so the true points are
known) are rendered at 256x256 (face ~128 px), then shrunk with INTER_AREA so the face (the
x-extent of the 68 landmarks, jaw to jaw) is 128, 96, ... 16 px wide, and padded (edge pixels
repeated) to at least --canvas px so every detector sees the same context. For each detector:
  - rate: share of faces with a detection whose box centre is within half a face of the truth;
  - box centre error and mean landmark error of those detections, in inter-ocular units (the
    distance between the outer eye corners, points 36 and 45, as 300-W normalises); retinaface's
    five points are compared with the five the true 68 give (eye centres, nose tip, mouth corners);
  - CPU ms per image: the process's CPU time (all its threads), which other jobs on the machine
    inflate far less than wall time.
haar gives a box only: its landmark error is n/a.

Real faces (--faces DIR: photos of one person each, the face in the middle, such as LFW's crops,
found recursively; nothing is written anywhere):
  - the truth: each photo, scaled x2 and bordered, goes through landmarks68 and retinaface; a photo
    counts only if both find its central face and their five points (eye centres, nose tip, mouth
    corners; dlib's 68 reduced to those) agree within 0.2 eye distances. The truth is the mean of
    the two: five points, their face square's centre (mrfer.data.faces.landmark_square) and the
    face width (dlib's 68 points, jaw to jaw, as for the synthetic faces). One photo per folder
    (person), --n-real photos, the same for every size;
  - the scenes: each photo is shrunk (INTER_AREA; INTER_LINEAR above its size) so its face is
    --sizes px wide, and pasted with feathered edges onto a --scene-size canvas of smooth colour
    noise plus pixel noise, up to --per-scene per canvas on a jittered grid;
  - rate: share of true faces matched (one detection each, nearest first) by a detection whose box
    centre is within half a face width of the true centre; false/img: detections matched to no
    true face, per image; box centre err and five-point landmark err (dlib: the 68 reduced to five)
    in eye-centre distances; CPU ms per scene image.
Since the truth needs landmarks68 and retinaface to agree at full size, both find every face there
by construction: the table says how each detector's rate falls as the faces shrink. Prints the
tables; no assertions.

    python bench/detect.py [--n 20] [--sizes 128 96 64 48 32 24 16] [--detectors landmarks68 dlib_cnn haar retinaface]
    python bench/detect.py --faces /tmp/lfw-identities --real-only [--n-real 60] [--retinaface-scales 1 1,2]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mrfer.data import detect, faces, synthetic

RENDER = 256


def render_face(index: int, seed: int, difficulty: float) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic apex frame (BGR, RENDER px square) and its 68 true landmarks in pixels."""
    _, ident, codes = synthetic.subject_plan(seed, index, expression_rate=0.5, contempt_rate=0.1)
    rng = np.random.default_rng([seed, index, 1])
    frames = synthetic.sequence_frames(ident, codes[0], 2, rng, (RENDER, RENDER), difficulty, apex_intensity=1.0)
    image, points = frames[-1]
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), points


def at_face_size(image: np.ndarray, points: np.ndarray, face_px: int, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """The image scaled so the landmarks are `face_px` wide, padded to at least `canvas` px."""
    scale = face_px / np.ptp(points[:, 0])
    side = max(1, round(image.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(image, (side, side), interpolation=interp)
    pad = max(0, (canvas - side + 1) // 2)
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return padded, points * (side / image.shape[0]) + pad


def inter_ocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[45] - points[36]))


def score(found: list[detect.Face], truth: np.ndarray) -> tuple[float, float] | None:
    """(box-centre error, landmark error) in inter-ocular units of the detection on the true face,
    or None when no detection has its centre within half a face of it."""
    center = (truth.min(0) + truth.max(0)) / 2
    width = np.ptp(truth[:, 0])
    for face in found:
        x, y, w, h = face.box
        error = np.linalg.norm(np.array([x + w / 2, y + h / 2]) - center)
        if error <= width / 2:
            iod = inter_ocular(truth)
            marks = face.landmarks
            if marks is not None and len(marks) == 5:  # retinaface: against the five the 68 give
                truth = five_points(detect.Face(face.box, truth))
            landmark = np.linalg.norm(marks - truth, axis=1).mean() / iod if marks is not None else float("nan")
            return error / iod, landmark
    return None


# ---------------------------------------------------------------- real faces


@dataclass
class RealFace:
    """A photo (BGR) and the truth of its face in the photo's pixels."""
    image: np.ndarray
    points: np.ndarray        # 5 x 2: eye centres, nose tip, mouth corners
    width: float              # jaw to jaw (dlib's 68 points)


def five_points(face: detect.Face) -> np.ndarray | None:
    """A detection's five points (RetinaFace's own, or dlib's 68 reduced to them), else None."""
    marks = face.landmarks
    if marks is None or len(marks) == 5:
        return marks
    return np.stack([marks[36:42].mean(0), marks[42:48].mean(0), marks[30], marks[48], marks[54]])


def eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[1] - points[0]))


def central(found: list[detect.Face], shape: tuple[int, ...]) -> detect.Face | None:
    """The detection whose box centre is nearest the image centre, if within a quarter of it."""
    centre = np.array([shape[1], shape[0]]) / 2
    best = min(found, key=lambda f: np.linalg.norm(np.array(f.box[:2]) + np.array(f.box[2:]) / 2 - centre),
               default=None)
    if best is None or np.linalg.norm(np.array(best.box[:2]) + np.array(best.box[2:]) / 2 - centre) > shape[0] / 4:
        return None
    return best


def real_truth(image: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(five points, jaw width) of the photo's central face where landmarks68 and retinaface agree."""
    border = image.shape[0] // 3
    view = cv2.copyMakeBorder(cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR),
                              border, border, border, border, cv2.BORDER_REPLICATE)
    dlib_face = central(detect.find_faces(view, "landmarks68"), view.shape)
    retina_face = central(detect.find_faces(view, "retinaface"), view.shape)
    if dlib_face is None or retina_face is None:
        return None
    a, b = five_points(dlib_face), five_points(retina_face)
    if np.linalg.norm(a - b, axis=1).mean() > 0.2 * eye_distance((a + b) / 2):
        return None
    return ((a + b) / 2 - border) / 2, float(np.ptp(dlib_face.landmarks[:, 0])) / 2


def read_real_faces(folder: Path, n: int, seed: int) -> tuple[list[RealFace], int]:
    """Up to `n` photos with a truth, one per sub-folder (person), in a seeded order; and how many
    photos were tried."""
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in faces.IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"{folder}: no images under this folder")
    first: dict[Path, Path] = {}
    for path in paths:
        first.setdefault(path.parent, path)
    order = list(first.values())
    np.random.default_rng(seed).shuffle(order)
    found, tried = [], 0
    for path in order:
        if len(found) == n:
            break
        tried += 1
        image = faces.load_image(path)
        truth = real_truth(image)
        if truth is not None:
            found.append(RealFace(image, *truth))
    return found, tried


def noise_canvas(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour noise (a 16 x 12 random field, bicubic) plus pixel noise: a busy background."""
    field = rng.integers(0, 256, (12, 16, 3)).astype(np.float32)
    smooth = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """`patch` onto `canvas` at (x, y), its outer tenth faded into the background."""
    h, w = patch.shape[:2]
    ramp = max(1.0, 0.1 * min(h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(np.minimum.reduce([xx + 0.5, yy + 0.5, w - xx - 0.5, h - yy - 0.5]) / ramp, 0, 1)[..., None]
    region = canvas[y:y + h, x:x + w].astype(np.float32)
    canvas[y:y + h, x:x + w] = np.round(alpha * patch + (1 - alpha) * region).astype(np.uint8)


@dataclass
class Truth:
    points: np.ndarray
    centre: np.ndarray
    width: float


def scenes(real: list[RealFace], size: int, scene_size: tuple[int, int], per_scene: int,
           rng: np.random.Generator) -> list[tuple[np.ndarray, list[Truth]]]:
    """Every photo's face shrunk to `size` px and pasted on noise canvases, with the truth moved along."""
    width, height = scene_size
    placed = []
    for face in real:
        scale = size / face.width
        side = max(1, round(face.image.shape[1] * scale)), max(1, round(face.image.shape[0] * scale))
        patch = cv2.resize(face.image, side, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        factor = np.array([side[0] / face.image.shape[1], side[1] / face.image.shape[0]])
        placed.append((patch, face.points * factor))
    cell = max(max(p.shape[:2]) for p, _ in placed) + 4
    cols, rows = max(1, width // cell), max(1, height // cell)
    per = max(1, min(per_scene, cols * rows))
    out = []
    for start in range(0, len(placed), per):
        canvas = noise_canvas(max(width, cols * cell), max(height, rows * cell), rng)
        truths = []
        for slot, k in enumerate(rng.permutation(cols * rows)[:len(placed[start:start + per])]):
            patch, points = placed[start + slot]
            h, w = patch.shape[:2]
            x = int(k % cols * cell + rng.integers(0, cell - w + 1))
            y = int(k // cols * cell + rng.integers(0, cell - h + 1))
            paste(canvas, patch, x, y)
            moved = points + [x, y]
            centre, _, _ = faces.landmark_square(moved)
            truths.append(Truth(moved, centre, float(size)))
        out.append((canvas, truths))
    return out


def match(found: list[detect.Face], truths: list[Truth]) -> tuple[list[tuple[Truth, detect.Face]], int]:
    """One detection per true face, nearest pairs first, each within half a face width; and the
    number of detections left over."""
    pairs = []
    for i, truth in enumerate(truths):
        for j, face in enumerate(found):
            x, y, w, h = face.box
            distance = float(np.linalg.norm(np.array([x + w / 2, y + h / 2]) - truth.centre))
            if distance <= truth.width / 2:
                pairs.append((distance, i, j))
    used_t, used_f, matched = set(), set(), []
    for _, i, j in sorted(pairs):
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            matched.append((truths[i], found[j]))
    return matched, len(found) - len(used_f)


def real_rows(real: list[RealFace], name: str, label: str, sizes: list[int], scene_size: tuple[int, int],
              per_scene: int, seed: int) -> None:
    """Print one row per size for detector `name` (labelled `label`)."""
    for k, size in enumerate(sizes):
        images = scenes(real, size, scene_size, per_scene, np.random.default_rng([seed, size]))
        if k == 0:  # warm-up, untimed: onnxruntime plans its memory per input shape on the first run
            detect.find_faces_batch([image for image, _ in images], name)
        start = time.process_time()
        found = detect.find_faces_batch([image for image, _ in images], name)
        ms = 1000 * (time.process_time() - start) / len(images)
        hits, box_errors, mark_errors, false = 0, [], [], 0
        for detections, (_, truths) in zip(found, images):
            matched, extra = match(detections, truths)
            false += extra
            hits += len(matched)
            for truth, face in matched:
                x, y, w, h = face.box
                iod = eye_distance(truth.points)
                box_errors.append(np.linalg.norm(np.array([x + w / 2, y + h / 2]) - truth.centre) / iod)
                points = five_points(face)
                if points is not None:
                    mark_errors.append(np.linalg.norm(points - truth.points, axis=1).mean() / iod)
        total = sum(len(t) for _, t in images)
        box_err = f"{np.mean(box_errors):.3f}" if box_errors else "-"
        mark_err = f"{np.mean(mark_errors):.3f}" if mark_errors else ("n/a" if hits else "-")
        print(f"| {label:<14} | {size:7d} | {hits / total:4.2f} | {false / len(images):9.2f} | {box_err:>14} "
              f"| {mark_err:>12} | {ms:12.1f} |", flush=True)


def retinaface_variants(detectors: list[str], variants: list[str] | None) -> list[tuple[str, tuple | None]]:
    """(row label, RETINAFACE_SCALES to set or None) per detector row; --retinaface-scales adds one
    retinaface row per variant, labelled `retinaface@1,2`."""
    out = []
    for name in detectors:
        if name == "retinaface" and variants:
            out += [(f"retinaface@{v}", tuple(float(s) for s in v.split(","))) for v in variants]
        else:
            out.append((name, None))
    return out


def run_real(args: argparse.Namespace) -> None:
    for name in ("landmarks68", "retinaface"):
        detect.load(name)
    start = time.perf_counter()
    real, tried = read_real_faces(Path(args.faces), args.n_real, args.seed)
    print(f"\nReal faces: {len(real)} photos from {args.faces} with a truth (of {tried} tried, "
          f"{time.perf_counter() - start:.0f} s), {args.scene_size[0]}x{args.scene_size[1]} scenes, at most "
          f"{args.per_scene} faces each; dlib upsample {detect.UPSAMPLE}, retinaface scales "
          f"{detect.RETINAFACE_SCALES} score > {detect.RETINAFACE_SCORE}; errors in eye-centre distances")
    if not real:
        raise SystemExit(f"{args.faces}: no photo has a face both landmarks68 and retinaface agree on")
    print(f"| {'detector':<14} | face px | rate | false/img | box centre err | landmark err | CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    default_scales = detect.RETINAFACE_SCALES
    for label, scales in retinaface_variants(args.detectors, args.retinaface_scales):
        detect.RETINAFACE_SCALES = scales or default_scales
        real_rows(real, label.split("@")[0], label, args.sizes, tuple(args.scene_size), args.per_scene, args.seed)
    detect.RETINAFACE_SCALES = default_scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="synthetic faces (subjects) per size")
    parser.add_argument("--sizes", type=int, nargs="+", help="face widths in px (default: 128 96 64 48 32 24 16 "
                        "synthetic; 128 96 64 48 32 24 20 16 14 12 10 8 real)")
    parser.add_argument("--detectors", nargs="+", default=list(detect.DETECTORS), choices=detect.DETECTORS)
    parser.add_argument("--difficulty", type=float, default=0.3, help="synthetic nuisance level (0..1)")
    parser.add_argument("--canvas", type=int, default=160, help="synthetic: smallest image side after padding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faces", help="a folder of real face photos (e.g. LFW crops): adds the real-face table")
    parser.add_argument("--real-only", action="store_true", help="with --faces: skip the synthetic table")
    parser.add_argument("--n-real", type=int, default=60, help="real photos (one per person) per size")
    parser.add_argument("--scene-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"),
                        help="real-face scene canvas (default 640 480)")
    parser.add_argument("--per-scene", type=int, default=12, help="most real faces per scene")
    parser.add_argument("--retinaface-scales", nargs="+", metavar="S[,S...]",
                        help="retinaface rows per scale set, e.g. `1 1,2 2` (default: one row at "
                             f"{','.join(f'{s:g}' for s in detect.RETINAFACE_SCALES)})")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for retinaface (dlib: 1)")
    args = parser.parse_args()
    if args.real_only and not args.faces:
        parser.error("--real-only needs --faces")
    detect.RETINAFACE_THREADS = args.threads
    for name in args.detectors:
        detect.load(name)
    if not args.real_only:
        run_synthetic(args)
    if args.faces:
        args.sizes = args.sizes or [128, 96, 64, 48, 32, 24, 20, 16, 14, 12, 10, 8]
        run_real(args)


def run_synthetic(args: argparse.Namespace) -> None:
    sizes = args.sizes or [128, 96, 64, 48, 32, 24, 16]
    faces_ = [render_face(i, args.seed, args.difficulty) for i in range(args.n)]
    print(f"{args.n} synthetic faces per size, difficulty {args.difficulty}, dlib upsample {detect.UPSAMPLE}, "
          f"errors in inter-ocular units (outer eye corners)")
    print(f"| {'detector':<11} | face px | rate | box centre err | landmark err | CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.detectors:
        detect.find_faces(faces_[0][0], name)  # warm-up, untimed
        for size in sizes:
            scaled = [at_face_size(image, points, size, args.canvas) for image, points in faces_]
            start = time.process_time()
            found = detect.find_faces_batch([image for image, _ in scaled], name)
            ms = 1000 * (time.process_time() - start) / len(scaled)
            hits = [s for s in (score(f, points) for f, (_, points) in zip(found, scaled)) if s is not None]
            box_err = f"{np.mean([h[0] for h in hits]):.3f}" if hits else "-"
            mark_err = ("n/a" if name == "haar" else f"{np.mean([h[1] for h in hits]):.3f}") if hits else "-"
            print(f"| {name:<11} | {size:7d} | {len(hits) / len(scaled):4.2f} | {box_err:>14} | {mark_err:>12} "
                  f"| {ms:12.1f} |", flush=True)


if __name__ == "__main__":
    main()
