"""The real pipeline, run by DVC on tiny params in a copy of the repo."""
import csv
import json

import numpy as np
import pytest

from pipeline_repo import make_repo, run


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
