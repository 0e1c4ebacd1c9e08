"""The small-face route end to end, on a crowd: `mrfer predict --detector retinaface --small-model`.

Synthetic (the default): faces drawn by mrfer.data.synthetic (apex frames, one expression each,
known label), shrunk so each is --sizes px wide jaw to jaw and pasted with feathered edges onto one
noisy canvas. `mrfer predict` runs on it with the main and small-face models; the annotated image
and predictions.json are copied to --image and --predictions (docs/), and a table of every pasted
face (found or not, its box, the model that classified it, the label against the truth) is printed.

Real (--faces DIR, e.g. LFW's crops): the same crowd made of real photos (one per person, faces
centred), for numbers only: nothing is written but a temporary folder, and the table has no truth
label (the photos have none). Real faces are never written under docs/.

    python scripts/crowd_example.py                                  # writes docs/images/crowd_example.jpg, docs/crowd_example.json
    python scripts/crowd_example.py --faces /tmp/lfw-identities      # numbers only
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from mrfer.data import faces, labels, synthetic
from mrfer.predict import build_parser, predict_command

REPO = Path(__file__).resolve().parents[1]
# Two faces (two people) of each width below 32 px: the detector's reach shows as a share there.
SIZES = [96, 64, 40, 32] + [s for s in (24, 20, 16, 14, 12, 10, 8) for _ in range(2)]
LARGE_ROW, SMALL_ROW, SMALL_PER_ROW = 230, 110, 5   # px, px, faces
CANVAS_WIDTH = 1200


def synthetic_faces(sizes: list[int], seed: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(BGR render, 68 true points, true label) per size: subject k shows the k-th expression."""
    codes = [c for c in sorted(labels.CKPLUS) if labels.CKPLUS[c] != "contempt"]
    out = []
    for k in range(len(sizes)):
        _, ident, _ = synthetic.subject_plan(seed, k, expression_rate=0.5, contempt_rate=0.0)
        code = codes[k % len(codes)]
        # A sequence runs neutral -> apex: neutral (code 0) is the first frame of one.
        frames = synthetic.sequence_frames(ident, code or 1, 2, np.random.default_rng([seed, k, 1]), (256, 256),
                                           difficulty=0.3, apex_intensity=1.0)
        image, points = frames[0 if code == 0 else -1]
        out.append((cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), points, labels.CKPLUS[code]))
    return out


def real_faces(folder: Path, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(photo, 68 points by landmarks68, "") for `count` photos where landmarks68 finds the face."""
    from mrfer.data import detect

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in faces.IMAGE_SUFFIXES)
    first: dict[Path, Path] = {}
    for path in paths:
        first.setdefault(path.parent, path)
    order = list(first.values())
    np.random.default_rng(seed).shuffle(order)
    out = []
    for path in order:
        image = faces.load_image(path)
        big = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
        found = detect.find_faces(big, "landmarks68")
        if found:
            out.append((image, found[0].landmarks / 2, ""))
        if len(out) == count:
            break
    if len(out) < count:
        raise SystemExit(f"{folder}: landmarks68 found only {len(out)} faces, {count} needed")
    return out


def head_patch(image: np.ndarray, points: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A square around the face (1.8 face widths), scaled so the face is `width` px wide jaw to
    jaw; and the face's centre (its 68 points' box) in the patch."""
    lo, hi = points.min(0), points.max(0)
    centre, side = (lo + hi) / 2, 1.8 * (hi[0] - lo[0])
    scale = width / (hi[0] - lo[0])
    out = max(1, round(side * scale))
    patch = faces.square_warp(image, centre, side, out)
    return patch, np.array([out / 2, out / 2])


def paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """`patch` onto `canvas` at (x, y), its outer tenth faded into the background."""
    h, w = patch.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    edge = np.minimum.reduce([xx + 0.5, yy + 0.5, w - xx - 0.5, h - yy - 0.5])
    alpha = np.clip(edge / max(1.0, 0.1 * min(h, w)), 0, 1)[..., None]
    region = canvas[y:y + h, x:x + w].astype(np.float32)
    canvas[y:y + h, x:x + w] = np.round(alpha * patch + (1 - alpha) * region).astype(np.uint8)


def crowd(sources: list[tuple[np.ndarray, np.ndarray, str]], sizes: list[int],
          seed: int) -> tuple[np.ndarray, list[dict]]:
    """Faces of >= 32 px on the first row, smaller ones on two rows below (SMALL_PER_ROW each);
    every face's truth (width, centre, label)."""
    rng = np.random.default_rng(seed)
    large = [k for k, s in enumerate(sizes) if s >= 32]
    small = [k for k, s in enumerate(sizes) if s < 32]
    rows = [large] + [small[i:i + SMALL_PER_ROW] for i in range(0, len(small), SMALL_PER_ROW)]
    heights = [LARGE_ROW] + [SMALL_ROW] * (len(rows) - 1)
    field = cv2.resize(rng.normal(120, 30, (9, 16, 3)).astype(np.float32), (CANVAS_WIDTH, sum(heights)),
                       interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8)
    truth = [dict() for _ in sizes]
    top = 0
    for members, height in zip(rows, heights):
        step = CANVAS_WIDTH // max(1, len(members))
        for slot, k in enumerate(members):
            patch, centre = head_patch(sources[k][0], sources[k][1], sizes[k])
            h, w = patch.shape[:2]
            x = slot * step + (step - w) // 2
            y = top + (height - h) // 2 + height // 8    # room above for the label
            paste(canvas, patch, x, y)
            truth[k] = {"width": sizes[k], "centre": [float(x + centre[0]), float(y + centre[1])],
                        "label": sources[k][2]}
        top += height
    return canvas, truth


def assign(truth: list[dict], rows: list[dict]) -> list[dict | None]:
    """The prediction row whose box centre is nearest each true face, within half a face width
    (the box of a 10 px face is about 12 px)."""
    out = []
    for face in truth:
        best, best_d = None, math.inf
        for row in rows:
            x, y, w, h = row["box"]
            d = math.dist(face["centre"], (x + w / 2, y + h / 2))
            if d < best_d and d <= max(face["width"], w) / 2:
                best, best_d = row, d
        out.append(best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/base.pt", help="main model (default models/base.pt)")
    parser.add_argument("--small-model", default="models/multires.pt",
                        help="small-face model (default models/multires.pt)")
    parser.add_argument("--small-face-px", type=int, default=48)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                        help="face widths, jaw to jaw, in px, one per face (default: 96 64 40 32, then two each "
                             "of 24 20 16 14 12 10 8)")
    parser.add_argument("--faces", help="real photos instead of synthetic faces: numbers only, nothing under docs/")
    parser.add_argument("--image", default="docs/images/crowd_example.jpg", help="annotated image (synthetic only)")
    parser.add_argument("--predictions", default="docs/crowd_example.json", help="predictions.json (synthetic only)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    sources = real_faces(Path(args.faces), len(args.sizes), args.seed) if args.faces else \
        synthetic_faces(args.sizes, args.seed)
    image, truth = crowd(sources, args.sizes, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "crowd.jpg"
        cv2.imwrite(str(source), image)
        result = predict_command(build_parser().parse_args([
            str(source), "--model", args.model, "--small-model", args.small_model, "--small-face-px",
            str(args.small_face_px), "--detector", "retinaface", "--out", str(Path(tmp) / "out"), "--device", "cpu"]))
        if not args.faces:
            Path(args.image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / "out" / "annotated" / "crowd.jpg", args.image)
            for row in result["faces"]:
                row["file"] = "crowd.jpg"
            result["input"] = "crowd.jpg"
            result["truth"] = truth
            Path(args.predictions).write_text(json.dumps(result, indent=1) + "\n")
    matched = assign(truth, result["faces"])
    print("| face px (jaw) | truth | found | box | face_px | model | predicted |")
    print("|---:|---|---|---|---:|---|---|")
    for face, row in zip(truth, matched):
        if row is None:
            print(f"| {face['width']} | {face['label'] or '-'} | no | - | - | - | - |")
            continue
        print(f"| {face['width']} | {face['label'] or '-'} | yes | {tuple(row['box'])} | {row['face_px']} "
              f"| {row['model_role']} | {row['label']} {row['probability']:.2f} |")
    extra = len(result["faces"]) - sum(r is not None for r in matched)
    print(f"{sum(r is not None for r in matched)} of {len(truth)} faces found, {extra} other detections; "
          f"models: main {args.model}, small {args.small_model} (faces < {args.small_face_px} px)")


if __name__ == "__main__":
    main()
