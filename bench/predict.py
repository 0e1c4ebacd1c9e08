"""Benchmark `mrfer predict`: batched vs one-by-one classification, torch (.pt) vs onnxruntime
(.onnx from `mrfer export`), and the time of each face detector.

Writes N face images (random crops of the photo matplotlib ships, jittered in position, scale
and brightness) to a temp folder, then times, in `--given-box` mode so detection is separate:
  - classification only (images already in memory): batches of --batch-size vs one face per call,
    with the .pt model (torch) and its ONNX export (onnxruntime, CPU);
  - the whole command (read, classify, annotate, write JSON/CSV) with --batch-size B vs 1;
  - detection per full-size image, for each detector (dlib_cnn on fewer images: ~1 s each).
Prints the figures; no assertions.

    python bench/predict.py [--model models/base.pt] [--n 1000] [--device auto]
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported; progress bars would bury the figures

import cv2
import numpy as np
import torch
from matplotlib import cbook

from mrfer import export, predict
from mrfer.data import detect
from mrfer.data.faces import load_image
from mrfer.infer import pick_device
from mrfer.nets import build
from mrfer.nets import checkpoint

PHOTO_FACE = (149, 100, 231, 231)  # x, y, w, h of the face in grace_hopper.jpg


def write_faces(folder: Path, n: int, rng: np.random.Generator) -> None:
    photo = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    x, y, w, h = PHOTO_FACE
    for k in range(n):
        side = int(w * rng.uniform(0.9, 1.2))
        dx, dy = rng.integers(-15, 16, 2)
        face = photo[y + dy:y + dy + side, x + dx:x + dx + side].astype(np.float32)
        face = face * rng.uniform(0.7, 1.3) + rng.normal(0, 4, face.shape)
        out = int(rng.integers(48, 129))  # faces of 48..128 px, like detected ones
        face = cv2.resize(np.clip(face, 0, 255).astype(np.uint8), (out, out), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"face{k:04d}.jpg"), face)


def default_model(path: Path) -> Path:
    """An untrained baseline CNN shaped like params.yaml's (64 px gray, width 0.25): speed only."""
    model = build("baseline_cnn", num_classes=7, in_chans=1, image_size=64, width=0.25)
    classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    checkpoint.save_model(path, model, {"arch": "baseline_cnn", "options": {"width": 0.25}, "classes": classes,
                                        "size": 64, "channels": 1, "mean": [110.0], "std": [50.0],
                                        "params_hash": "bench", "stage": "pretrain_base"})
    return path


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model file (default: an untrained baseline CNN)")
    parser.add_argument("--n", type=int, default=1000, help="number of face images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--n-single", type=int, default=200,
                        help="faces for the (slow) one-by-one runs: the first N of the folder")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and opencv (default: theirs). On a busy "
                        "machine 1 avoids OpenMP threads waiting on each other at small batches")
    parser.add_argument("--detect-images", type=int, default=50, help="images for the detection timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = pick_device(args.device)
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = Path(args.model) if args.model else default_model(tmp / "model.pt")
        faces_dir = tmp / "faces"
        faces_dir.mkdir()
        write_faces(faces_dir, args.n, rng)
        clf = predict.load_classifier(model_path, "main", device)
        print(f"model {model_path.name}: {clf.meta['arch']} {clf.meta['size']} px, device {device}, "
              f"torch threads {torch.get_num_threads()}, opencv threads {cv2.getNumThreads()}, {args.n} faces")
        onnx_path = tmp / "model.onnx"
        export.export_onnx(model_path, onnx_path, opset=17)
        onnx_clf = predict.load_classifier(onnx_path, "main", torch.device("cpu"))

        # Classification only: the same Predictor.predict the command uses, images in memory.
        items = [predict.Item(str(p), None, load_image(p)) for p in sorted(faces_dir.iterdir())]
        runtimes = (("torch", clf, device), ("onnxruntime cpu", onnx_clf, torch.device("cpu")))
        for runtime, model_clf, model_device in runtimes:
            for batch_size, subset in ((args.batch_size, items), (1, items[:args.n_single])):
                predictor = predict.Predictor(model_clf, detect=False, device=model_device, batch_size=batch_size)
                predictor.predict(subset[:batch_size])  # warm-up
                sync(model_device)

                def classify_all():
                    for start in range(0, len(subset), batch_size):
                        predictor.predict(subset[start:start + batch_size])
                    sync(model_device)

                seconds = timed(classify_all)
                print(f"classify {runtime:<16} (crop + forward), batch {batch_size:4d}: "
                      f"{len(subset) / seconds:8.1f} faces/s ({len(subset)} faces)")

        # The whole command: read files, classify, draw, write annotated images + JSON/CSV.
        single_dir = tmp / "faces_single"
        single_dir.mkdir()
        for path in sorted(faces_dir.iterdir())[:args.n_single]:
            os.link(path, single_dir / path.name)
        for batch_size, folder, n in ((args.batch_size, faces_dir, args.n), (1, single_dir, args.n_single)):
            argv = [str(folder), "--given-box", "--model", str(model_path), "--device", args.device,
                    "--batch-size", str(batch_size), "--out", str(tmp / f"out{batch_size}")]
            parsed = predict.build_parser().parse_args(argv)
            seconds = timed(lambda: predict.predict_command(parsed))
            print(f"whole command (--given-box),  batch {batch_size:4d}: {n / seconds:8.1f} faces/s ({n} faces)")

        # Detection on full-size photos (480 px high), per image, for each detector.
        photo = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        for name in detect.DETECTORS:
            detect.load(name)
            n_images = max(1, args.detect_images // 10) if name == "dlib_cnn" else args.detect_images
            frames = [cv2.resize(photo, (410, 480)) for _ in range(n_images)]
            found = 0

            def detect_all():
                nonlocal found
                found = sum(bool(faces) for faces in detect.find_faces_batch(frames, name))

            cpu_start = time.process_time()
            seconds = timed(detect_all)
            cpu_seconds = time.process_time() - cpu_start
            print(f"{name} detection on 410x480 images: {1000 * seconds / len(frames):.1f} ms/image wall, "
                  f"{1000 * cpu_seconds / len(frames):.1f} ms/image CPU ({found}/{len(frames)} with a face)")


if __name__ == "__main__":
    main()
