"""Benchmark the face detectors as faces shrink: detection rate and landmark error by face size.

Synthetic faces (mrfer.data.synthetic: drawn from 68 iBUG landmarks, so the true points are
known) are rendered at 256x256 (face ~128 px), then shrunk with INTER_AREA so the face (the
x-extent of the 68 landmarks, jaw to jaw) is 128, 96, ... 16 px wide, and padded (edge pixels
repeated) to at least --canvas px so every detector sees the same context. For each detector:
  - rate: share of faces with a detection whose box centre is within half a face of the truth;
  - box centre error and mean landmark error of those detections, in inter-ocular units (the
    distance between the outer eye corners, points 36 and 45, as 300-W normalises);
  - ms per image (CPU, this machine's threads).
haar gives a box only: its landmark error is n/a. Prints one table; no assertions.

    python bench/detect.py [--n 20] [--sizes 128 96 64 48 32 24 16] [--detectors landmarks68 dlib_cnn haar]
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from mrfer.data import detect, synthetic

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
            landmark = (np.linalg.norm(face.landmarks - truth, axis=1).mean() / iod
                        if face.landmarks is not None else float("nan"))
            return error / iod, landmark
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="faces (subjects) per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 96, 64, 48, 32, 24, 16],
                        help="face widths in px")
    parser.add_argument("--detectors", nargs="+", default=list(detect.DETECTORS), choices=detect.DETECTORS)
    parser.add_argument("--difficulty", type=float, default=0.3, help="synthetic nuisance level (0..1)")
    parser.add_argument("--canvas", type=int, default=160, help="smallest image side after padding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faces = [render_face(i, args.seed, args.difficulty) for i in range(args.n)]
    for name in args.detectors:
        detect.load(name)
    print(f"{args.n} synthetic faces per size, difficulty {args.difficulty}, dlib upsample {detect.UPSAMPLE}, "
          f"errors in inter-ocular units (outer eye corners)")
    print(f"| {'detector':<11} | face px | rate | box centre err | landmark err | ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.detectors:
        for size in args.sizes:
            scaled = [at_face_size(image, points, size, args.canvas) for image, points in faces]
            start = time.perf_counter()
            found = detect.find_faces_batch([image for image, _ in scaled], name)
            ms = 1000 * (time.perf_counter() - start) / len(scaled)
            hits = [s for s in (score(f, points) for f, (_, points) in zip(found, scaled)) if s is not None]
            box_err = f"{np.mean([h[0] for h in hits]):.3f}" if hits else "-"
            mark_err = ("n/a" if name == "haar" else f"{np.mean([h[1] for h in hits]):.3f}") if hits else "-"
            print(f"| {name:<11} | {size:7d} | {len(hits) / len(scaled):4.2f} | {box_err:>14} | {mark_err:>12} "
                  f"| {ms:8.1f} |", flush=True)


if __name__ == "__main__":
    main()
