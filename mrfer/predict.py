"""Detect faces and classify their expression with a trained model (`python -m mrfer predict`).

Inputs: one image, a folder of images, a video file (every Nth frame) or a camera (`--camera 0`).
Outputs under `--out`: annotated images (`annotated/<name>`) or an annotated video
(`annotated.avi`), plus `predictions.json` and `predictions.csv` with one row per face:
file, frame, box (x, y, w, h), face short side in px, model used, predicted class and the
probability of every class.

Faces are found by `--detector` (`mrfer.data.detect`) and cropped exactly as the extract stage
crops detected faces (`mrfer.data.faces`). Share of real faces found, by face width (jaw to jaw, in
pixels of the input image; bench/detect.py on LFW faces in 640x480 scenes, docs/benchmarks.md
"Face detectors by face size"): `retinaface` (default: RetinaFace MobileNet-0.25 + five points,
eyes levelled; scanned at 1x and 2x, batched) all down to 16 px, 87 % at 14, 67 % at 12, 27 % at
10, 3 % at 8; `landmarks68` (dlib's HOG detector + 68 landmarks, eyes levelled) all down to 32 px,
10 % at 24, none at 20; `dlib_cnn` (dlib's MMOD CNN + 68 landmarks, batched per image size; 6-7
CPU seconds per 640x480 image) all down to 32 px, none at 24; `haar` (opencv's cascade, a box
only, not levelled) nearly all down to 48 px, 85 % at 24-32, 62 % at 20, none at 14. A face the
detector does not find is never guessed: it has no row, and an image where no face is found is
listed under `no_face`.
`--given-box` / `--no-detect` treats each image as an already cropped face (the whole image is the
face).

Models: a `.pt` mrfer model runs with torch through `mrfer.infer.infer` (the training
preprocessing); a `.onnx` file written by `mrfer export` runs with onnxruntime on the CPU, its
preprocessing read from the file's metadata (same labels as the `.pt`).

Small-face rule: with `--small-model`, a face whose short side, in pixels of the input image,
is below `--small-face-px` (default 48) is classified by the small-face (multi-resolution)
model; every other face by the main `--model`. Each row reports `face_px` and the model used.

Batching: images (or sampled video frames) are read `--batch-size` at a time, faces are detected
per image, then all faces of that batch that go to the same model are classified in one `infer`
call, not one forward pass per file.

Errors: an image without a face is listed under `no_face` and logged, never labelled. In a folder,
an unreadable image is listed under `unreadable`, logged, and the run goes on (one bad file
should not cost the other predictions); files that are not images are listed under `skipped`.
A single input that cannot be read, an unsupported file type, a missing or wrong checkpoint,
or a camera that does not open stop the run with one clear line and exit code 2.

The annotated video holds the classified frames (every Nth) at the source fps / N, so it plays at
the source's speed. A camera runs until `--max-frames`, `q` in the window, or Ctrl-C.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mrfer import cli
from mrfer import export
from mrfer.data import detect
from mrfer.data.faces import IMAGE_SUFFIXES, VIDEO_SUFFIXES, extract_face, load_image
from mrfer.data.records import Record
from mrfer.errors import ImageError, InputError, MissingInputError
from mrfer.infer import infer, pick_device
from mrfer.io import atomic_path, write_json
from mrfer.nets import checkpoint

log = logging.getLogger(__name__)

BOX_COLORS = {"main": (0, 200, 0), "small": (0, 140, 255)}  # BGR: green / orange


# ---------------------------------------------------------------- models


@dataclass
class Classifier:
    role: str                 # "main" | "small"
    path: str
    model: torch.nn.Module | None   # a torch model, or None for an ONNX file
    meta: dict
    session: object = None          # onnxruntime InferenceSession of an ONNX file

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def color(self) -> str:
        return "gray" if self.meta["channels"] == 1 else "rgb"

    def describe(self) -> dict:
        return {"path": self.path, "arch": self.meta.get("arch"), "stage": self.meta.get("stage"),
                "params_hash": self.meta.get("params_hash"), "size": self.meta.get("size"),
                "channels": self.meta.get("channels"), "runtime": "onnxruntime" if self.session else "torch"}

    def probs(self, faces: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
        """Class probabilities of uint8 NHWC faces (the training preprocessing either way)."""
        if self.session is None:
            return infer(self.model, faces, self.meta["mean"], self.meta["std"], device, batch_size,
                         what="probs").numpy()
        logits = export.onnx_logits(self.session, faces, self.meta["mean"], self.meta["std"], batch_size)
        return torch.from_numpy(logits).softmax(1).numpy()


def load_classifier(path: str | os.PathLike, role: str, device: torch.device) -> Classifier:
    """An mrfer model file (.pt, or .onnx from `mrfer export`), or one clear error naming it
    (missing, not mrfer, wrong architecture)."""
    if Path(path).suffix.lower() == ".onnx":
        session, meta = export.load_onnx(path)
        return Classifier(role, str(path), None, meta, session)
    try:
        model, meta = checkpoint.load_model(path, device)
        for key in ("classes", "size", "channels", "mean"):
            meta[key]
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # RuntimeError: tensor shape mismatch
        message = " ".join(str(e).split())[:300]  # torch's shape-mismatch report is many lines
        if str(path) not in message:
            message = f"{path}: not a usable mrfer model ({type(e).__name__}: {message})"
        raise InputError(message) from None
    return Classifier(role, str(path), model, meta)


# ---------------------------------------------------------------- prediction


@dataclass
class Item:
    """One image to look at: a file, or frame `frame` of a video / camera."""
    file: str
    frame: int | None
    image: np.ndarray         # BGR uint8


@dataclass
class Predictor:
    main: Classifier
    small: Classifier | None = None
    small_face_px: int = 48
    margin: float = 0.1
    detect: bool = True
    detector: str = "retinaface"
    device: torch.device = torch.device("cpu")
    batch_size: int = 64

    def choose(self, face_px: int) -> Classifier:
        """The small-face rule: faces below `small_face_px` go to the small model (if any)."""
        if self.small is not None and face_px < self.small_face_px:
            return self.small
        return self.main

    def faces(self, items: list[Item]) -> list[list[detect.Face]]:
        """The faces of every item, largest first (dlib_cnn detects a batch of frames at once)."""
        if not self.detect:
            return [[detect.Face((0, 0, item.image.shape[1], item.image.shape[0]))] for item in items]
        return detect.find_faces_batch([item.image for item in items], self.detector)

    def crop(self, item: Item, found: detect.Face, clf: Classifier) -> np.ndarray:
        """The training crop: the extract stage's own function, at this model's size and colour:
        levelled by the detector's landmarks when it has them, else the box."""
        record = Record(image=item.image, label=-1, source=item.file,
                        landmarks=found.landmarks if self.detect else None,
                        box=found.box if self.detect else None, aligned=not self.detect)
        face, _ = extract_face(record, clf.meta["size"], self.margin, clf.color, "skip", self.detector)
        return face

    def predict(self, items: list[Item]) -> list[list[dict]]:
        """Rows of the faces of each item (an empty list: no face), classifying per model in one call."""
        jobs: dict[str, list[tuple[int, tuple, int, np.ndarray]]] = {"main": [], "small": []}
        classifiers = {"main": self.main, "small": self.small}
        face_counts = []
        for index, (item, found) in enumerate(zip(items, self.faces(items))):
            face_counts.append(len(found))
            for face in found:
                box = face.box
                face_px = int(min(box[2], box[3]))
                clf = self.choose(face_px)
                jobs[clf.role].append((index, box, face_px, self.crop(item, face, clf)))
        rows: list[list[dict]] = [[] for _ in items]
        for role, faces in jobs.items():
            if not faces:
                continue
            clf = classifiers[role]
            probs = clf.probs(np.stack([f[3] for f in faces]), self.device, self.batch_size)
            for (index, box, face_px, _), p in zip(faces, probs):
                rows[index].append(face_row(items[index], box, face_px, clf, p))
        for item_rows in rows:  # keep the detector's order (largest face first) across both models
            item_rows.sort(key=lambda r: -r["box"][2] * r["box"][3])
            for k, row in enumerate(item_rows):
                row["face"] = k
        return rows


def face_row(item: Item, box, face_px: int, clf: Classifier, probs: np.ndarray) -> dict:
    best = int(np.argmax(probs))
    return {"file": item.file, "frame": item.frame, "face": 0, "box": [int(v) for v in box],
            "face_px": face_px, "model": clf.path, "model_role": clf.role,
            "label": clf.classes[best], "probability": float(probs[best]),
            "probs": {c: float(p) for c, p in zip(clf.classes, probs)}}


def annotate(image: np.ndarray, rows: list[dict]) -> np.ndarray:
    """A copy of `image` with box, label and probability per face (or "no face")."""
    out = image.copy()
    scale = max(0.4, min(out.shape[:2]) / 500)
    thick = max(1, round(scale * 2))
    if not rows:
        cv2.putText(out, "no face", (5, int(20 * scale) + 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 255), thick, cv2.LINE_AA)
    for row in rows:
        x, y, w, h = row["box"]
        color = BOX_COLORS[row["model_role"]]
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), color, thick)
        text = f"{row['label']} {row['probability']:.2f}"
        (text_w, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = y - text_h - base - 2 if y >= text_h + base + 2 else y + h  # above the box if it fits
        cv2.rectangle(out, (x, top), (x + text_w + 2, top + text_h + base + 2), color, cv2.FILLED)
        cv2.putText(out, text, (x + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    return out


# ---------------------------------------------------------------- inputs


@dataclass
class Report:
    faces: list[dict]
    no_face: list[dict]
    unreadable: list[dict]
    skipped: list[dict]
    images: int = 0           # images or frames looked at

    def add(self, item: Item, rows: list[dict]) -> None:
        self.images += 1
        if rows:
            self.faces.extend(rows)
            return
        self.no_face.append({"file": item.file, "frame": item.frame})
        if item.frame is None:
            log.warning("no face found: %s", item.file)
        else:  # a stream can have thousands of empty frames: counted in the summary instead
            log.debug("no face found: %s frame %d", item.file, item.frame)


def batched(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def list_folder(folder: Path, report: Report) -> list[Path]:
    """The image files directly in `folder`, sorted; anything else is listed as skipped."""
    images = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            report.skipped.append({"file": str(path), "reason": f"not an image file ({path.suffix or 'no suffix'})"})
            log.info("skipped %s: not an image file", path)
    return images


# Detection needs about 65 bytes per image pixel (the detectors scan it upsampled 2 x 2; measured
# at 12 MP: 0.6 GB landmarks68, 0.7 GB haar, 0.8 GB retinaface): 50 MP, about 3 GB, is the most.
MAX_PIXELS = 50_000_000


def read_image(path: Path) -> np.ndarray:
    """`load_image`, after the pixel count in the file's header (PIL reads only the header) is
    checked: an image over MAX_PIXELS is refused before it is decoded (docs/faults.md)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                pixels, shape = image.width * image.height, f"{image.width} x {image.height} = "
    except Image.DecompressionBombError as e:   # over PIL's own limit: its message has the count
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels, shape = (int(found.group(1)) if found else MAX_PIXELS + 1), ""
    except Exception:   # a header PIL does not read: opencv decides, as for any image
        return load_image(path)
    if pixels > MAX_PIXELS:
        raise ImageError(f"{path}: {shape}{pixels / 1e6:.0f} megapixels, over the {MAX_PIXELS / 1e6:.0f}-megapixel "
                         f"limit (detecting faces in it needs about {pixels * 65 / 1e9:.0f} GB): downscale or crop "
                         "it first")
    return load_image(path)


def run_images(predictor: Predictor, paths: list[Path], out_dir: Path, report: Report, single: bool) -> None:
    annotated_dir = out_dir / "annotated"   # made at the first image written: a failed run leaves no empty one
    quiet = {"disable": True} if single else {}  # a bar for one image is noise; else tqdm's defaults / TQDM_* env
    with tqdm(total=len(paths), desc="predict", unit="image", **quiet) as progress:
        for chunk in batched(paths, predictor.batch_size):
            items = []
            for path in chunk:
                try:
                    items.append(Item(str(path), None, read_image(path)))
                except ImageError as e:
                    if single:
                        raise
                    log.warning("%s (continuing with the other files)", e)
                    report.unreadable.append({"file": str(path), "error": str(e)})
            for item, rows in zip(items, predictor.predict(items)):
                report.add(item, rows)
                target = annotated_dir / Path(item.file).name
                annotated_dir.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), annotate(item.image, rows)):
                    raise InputError(f"{target}: could not write the annotated image")
            progress.update(len(chunk))


def open_capture(source: str | int) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        if isinstance(source, int):
            raise InputError(f"camera {source} could not be opened (is it connected, and free?)")
        raise ImageError(f"unreadable video: {source}")
    return capture


def open_writer(path: Path, fps: float, frame: np.ndarray) -> cv2.VideoWriter:
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), fourcc, fps, (frame.shape[1], frame.shape[0]))
    if not writer.isOpened():
        raise InputError(f"{path}: cannot write a video here (use a .avi or .mp4 name)")
    return writer


def check_display() -> None:
    # opencv's Qt window aborts the whole process without a display; fail clearly instead.
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("no display to show the video on: pass --no-show "
                         "(the annotated video is written under --out either way)")


def run_stream(predictor: Predictor, source: str | int, out_dir: Path, report: Report, every: int,
               max_frames: int | None, show: bool, video_name: str) -> Path:
    """Classify every `every`-th frame of a video file or camera; write the annotated frames."""
    if show:
        check_display()
    capture = open_capture(source)
    is_camera = isinstance(source, int)
    name = f"camera:{source}" if is_camera else str(source)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = (fps if fps and math.isfinite(fps) and fps > 0 else 25.0) / every
    total = None if is_camera else math.ceil(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) / every) or None
    if max_frames:
        total = min(total or max_frames, max_frames)
    # A camera is classified frame by frame (live); a video file in batches of frames.
    frames_per_batch = 1 if is_camera else predictor.batch_size
    out_path = out_dir / video_name
    writer, pending, index, stop = None, [], 0, False
    progress = tqdm(total=total, desc="predict", unit="frame")

    def flush() -> bool:
        """Classify, annotate and write the pending frames; False when the user pressed q."""
        nonlocal writer
        for item, rows in zip(pending, predictor.predict(pending)):
            report.add(item, rows)
            frame = annotate(item.image, rows)
            if writer is None:
                writer = open_writer(out_path, fps, frame)
            writer.write(frame)
            progress.update(1)
            if show:
                cv2.imshow(f"mrfer predict: {name}", frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    return False
        pending.clear()
        return True

    try:
        while not stop:
            if not capture.grab():
                break
            if index % every == 0:  # decode only the frames we classify
                ok, image = capture.retrieve()
                if not ok:
                    break
                pending.append(Item(name, index, image))
                if len(pending) >= frames_per_batch:
                    stop = not flush()
                if max_frames and report.images + len(pending) >= max_frames:
                    break
            index += 1
        if not stop:
            flush()
    except KeyboardInterrupt:
        log.info("stopped by Ctrl-C after %d frames", report.images)
    finally:
        progress.close()
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    if report.images == 0:
        raise ImageError(f"no frame could be read from {name}")
    return out_path


# ---------------------------------------------------------------- outputs


CSV_FIELDS = ["file", "frame", "face", "x", "y", "w", "h", "face_px", "model", "model_role", "label", "probability"]


def write_csv(path: Path, faces: list[dict], classes: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS + [f"p_{c}" for c in classes])
        for row in faces:
            x, y, w, h = row["box"]
            writer.writerow([row["file"], "" if row["frame"] is None else row["frame"], row["face"], x, y, w, h,
                             row["face_px"], row["model"], row["model_role"], row["label"],
                             f"{row['probability']:.6f}"] + [f"{row['probs'][c]:.6f}" for c in classes])


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("input", nargs="?", help="an image, a folder of images, or a video file")
    parser.add_argument("--camera", type=int, metavar="INDEX", help="read from camera INDEX instead of a file")
    parser.add_argument("--model", required=True, help="main model file, e.g. models/base.pt, or an ONNX file "
                        "from `mrfer export` (models/onnx/base.onnx: onnxruntime, CPU)")
    parser.add_argument("--small-model", help="small-face (multi-resolution) model, e.g. models/multires.pt (or .onnx)")
    parser.add_argument("--small-face-px", type=int, default=48,
                        help="faces whose short side is below this many pixels use --small-model (default 48)")
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--detector", choices=detect.DETECTORS, default="retinaface",
                        help="retinaface (default: RetinaFace + 5 points, eyes levelled; real faces >= 16 px, "
                             "two thirds at 12) | landmarks68 (dlib HOG + 68 landmarks, eyes levelled; >= 32 px) | "
                             "dlib_cnn (dlib MMOD CNN + 68 landmarks; seconds per image on a CPU) | "
                             "haar (opencv cascade, box only; most >= 20 px); docs/benchmarks.md")
    parser.add_argument("--given-box", "--no-detect", dest="detect", action="store_false",
                        help="each image is already a cropped face: skip detection, use the whole image")
    parser.add_argument("--margin", type=float, default=0.1,
                        help="crop margin per side around the detected box; use extract.margin of params.yaml "
                             "(default 0.1)")
    parser.add_argument("--every", type=int, default=1, help="video/camera: classify every Nth frame (default 1)")
    parser.add_argument("--max-frames", type=int, help="video/camera: stop after this many classified frames")
    parser.add_argument("--show", action=argparse.BooleanOptionalAction, default=True,
                        help="video/camera: show the annotated stream in a window (--no-show: only write it)")
    parser.add_argument("--video-name", default="annotated.avi",
                        help="annotated video file name under --out (.avi: MJPG, .mp4: mp4v)")
    parser.add_argument("--batch-size", type=int, default=64, help="images (frames) per batch and faces per "
                                                                  "forward pass (default 64)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.set_defaults(func=predict_command)
    return parser


def predict_command(args: argparse.Namespace) -> dict:
    """Run predict for parsed arguments; returns the JSON report (also written under --out)."""
    if (args.input is None) == (args.camera is None):
        raise InputError("give exactly one input: an image, a folder or a video file, or --camera INDEX")
    if args.every < 1 or args.batch_size < 1 or args.small_face_px < 1:
        raise InputError("--every, --batch-size and --small-face-px must be positive")
    source = None
    if args.input is not None:
        source = Path(args.input)
        if not source.exists():
            raise MissingInputError(f"{source}: input not found")
        suffix = source.suffix.lower()
        if source.is_file() and suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise InputError(f"{source}: unsupported file type {suffix or '(no suffix)'}; expected an image "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}) or a video ({', '.join(sorted(VIDEO_SUFFIXES))})")

    device = pick_device(args.device)
    main = load_classifier(args.model, "main", device)
    small = load_classifier(args.small_model, "small", device) if args.small_model else None
    if small is not None and small.classes != main.classes:
        raise InputError(f"{args.small_model}: classes {small.classes} differ from {args.model}: {main.classes}")
    if args.detect:
        detect.load(args.detector)  # a missing dlib model fails here, before any work
    predictor = Predictor(main, small, args.small_face_px, args.margin, args.detect, args.detector, device,
                          args.batch_size)

    out_dir = Path(args.out)   # created by the first output written, so a run that fails first leaves none
    report = Report([], [], [], [])
    video_out = None
    if args.camera is not None:
        mode = "camera"
        video_out = run_stream(predictor, args.camera, out_dir, report, args.every, args.max_frames,
                               args.show, args.video_name)
    elif source.is_dir():
        mode = "folder"
        paths = list_folder(source, report)
        if not paths:
            raise InputError(f"{source}: no image files in this folder")
        run_images(predictor, paths, out_dir, report, single=False)
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        mode = "video"
        video_out = run_stream(predictor, str(source), out_dir, report, args.every, args.max_frames,
                               args.show, args.video_name)
    else:
        mode = "image"
        run_images(predictor, [source], out_dir, report, single=True)

    result = {
        "input": f"camera:{args.camera}" if args.camera is not None else str(source), "mode": mode,
        "detector": args.detector if args.detect else "given-box", "margin": args.margin,
        "models": {"main": main.describe(), "small": small.describe() if small else None},
        "small_face_px": args.small_face_px if small else None,
        "small_face_rule": "faces with short side < small_face_px use the small model" if small else None,
        "classes": main.classes, "annotated_video": str(video_out) if video_out else None,
        "summary": {"images" if mode in ("image", "folder") else "frames": report.images,
                    "faces": len(report.faces), "no_face": len(report.no_face),
                    "unreadable": len(report.unreadable), "skipped": len(report.skipped)},
        "faces": report.faces, "no_face": report.no_face, "unreadable": report.unreadable,
        "skipped": report.skipped,
    }
    write_json(out_dir / "predictions.json", result)
    write_csv(out_dir / "predictions.csv", report.faces, main.classes)
    log.info("predict: %d faces in %d %s (%d without a face, %d unreadable) -> %s",
             len(report.faces), report.images, "frames" if video_out else "images", len(report.no_face),
             len(report.unreadable), out_dir / "predictions.json")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrfer predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_arguments(parser)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cli.run(lambda: predict_command(args))


if __name__ == "__main__":
    main()
