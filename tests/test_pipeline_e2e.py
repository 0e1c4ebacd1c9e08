"""The real pipeline, run by DVC on tiny params in a copy of the repo."""
import csv
import json

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset_fixtures_a import make_fer2013, make_rafdb
from pipeline_repo import TINY, make_repo, run


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("repo"))


def manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_data_stages_then_noop(repo):
    run(["dvc", "repro", "assemble"], repo)
    stats = json.loads((repo / "data/assembled/stats.json").read_text())
    assert stats["size"] == [32, 32] and stats["channels"] == 1
    subjects = {}
    for split in ("train", "val", "test"):
        rows = manifest(repo / f"data/assembled/{split}/manifest.csv")
        for scale in ("hr", "x2", "x4"):
            images = np.load(repo / f"data/assembled/{split}/{scale}.npy", mmap_mode="r")
            assert images.shape == (len(rows), 32, 32, 1) and images.dtype == np.uint8
        assert all(r["class"] == stats["classes"][int(r["label"])] for r in rows)
        subjects[split] = {r["subject"] for r in rows}
    assert not subjects["train"] & subjects["test"] and not subjects["train"] & subjects["val"]
    assert not subjects["val"] & subjects["test"]
    report = json.loads((repo / "reports/assemble.json").read_text())
    assert report["subject_independent"] is True
    assert (repo / "reports/contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    second = run(["dvc", "repro", "assemble"], repo)
    assert "Running stage" not in second.stdout
    assert "up to date" in run(["dvc", "status", "assemble"], repo).stdout


def test_whole_graph_then_noop(repo):
    run(["dvc", "repro"], repo)
    classify = json.loads((repo / "reports/classify.json").read_text())
    assert set(classify) == {"base", "multires", "base+fsr"}
    assert set(classify["base"]) == {"hr", "x2", "x4"}
    kfold = json.loads((repo / "reports/kfold.json").read_text())
    assert kfold["folds"] == 3 and set(kfold["base"]["x4"]) >= {"accuracy_mean", "accuracy_std"}
    for png in ("tsne.png", "confusion.png", "accuracy_vs_resolution.png", "training_curves.png",
                "kfold_confusion.png"):
        assert (repo / "reports/plots" / png).is_file(), png
    video = json.loads((repo / "reports/video.json").read_text())
    assert set(video) >= {"gru", "frame_mean", "frame_majority"}
    for model in ("base", "multires", "fsr", "video"):
        assert (repo / f"models/{model}.pt").is_file()
    second = run(["dvc", "repro"], repo)
    assert "Running stage" not in second.stdout, second.stdout
    assert "up to date" in run(["dvc", "status"], repo).stdout
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert shown  # classify metrics are declared and readable by DVC


def test_predict_cli_agrees_with_classify_on_known_labels(repo, tmp_path):
    """`mrfer predict` on the test faces (as PNGs, known labels) gives the classify stage's figure."""
    if not (repo / "models/base.pt").is_file():
        run(["dvc", "repro", "classify"], repo)
    faces = np.load(repo / "data/assembled/test/hr.npy")
    rows = manifest(repo / "data/assembled/test/manifest.csv")
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, face in enumerate(faces):
        cv2.imwrite(str(folder / f"{i:04d}.png"), face[:, :, 0])
    run(["python", "-m", "mrfer", "predict", str(folder), "--model", "models/base.pt", "--given-box",
         "--out", str(tmp_path / "out")], repo)
    predicted = {Path(r["file"]).name: r["label"] for r in manifest(tmp_path / "out/predictions.csv")}
    assert len(predicted) == len(rows)
    correct = sum(predicted[f"{i:04d}.png"] == row["class"] for i, row in enumerate(rows))
    classify = json.loads((repo / "reports/classify.json").read_text())
    assert round(correct / len(rows), 4) == classify["base"]["hr"]["head"]["accuracy"]


@pytest.mark.parametrize("name", ["fer2013", "rafdb"])
def test_real_dataset_layouts_assemble(tmp_path, name):
    params = copy.deepcopy(TINY)
    params["extract"] = {"dataset": name, "root": f"data/raw/{name}", "options": {}, "size": 32}
    repo = make_repo(tmp_path / "repo", params)
    if name == "fer2013":
        made = make_fer2013(repo / "data/raw/fer2013", n_per_class=10)
    else:
        made = make_rafdb(repo / "data/raw/rafdb", n_per_class=10)
    run(["dvc", "repro", "assemble"], repo)
    report = json.loads((repo / "reports/extract.json").read_text())
    assert report["dataset"] == name and report["faces"] == len(made["records"])
    assert report["skipped"] >= len(made["skips"]) > 0  # the fixture's bad rows are reported
    sources = {}
    for split in ("train", "val", "test"):
        rows = manifest(repo / f"data/assembled/{split}/manifest.csv")
        images = np.load(repo / f"data/assembled/{split}/x4.npy", mmap_mode="r")
        assert images.shape == (len(rows), 32, 32, 1)
        sources[split] = {r["source_split"] for r in rows}
    assert sources["test"] == {"test"}  # the dataset's own test split is kept
    assert "test" not in sources["train"] | sources["val"]
