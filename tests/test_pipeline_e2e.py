"""The real pipeline, run by DVC on tiny params in a copy of the repo."""
import csv
import json

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from photo_dataset_fixtures import make_fer2013, make_rafdb
from mrfer.data import lowres, shards
from pipeline_repo import REPO, TINY, make_repo, run


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """Where every stage run by this module's `dvc repro`s records the params it loaded and read."""
    return tmp_path_factory.mktemp("trace") / "params_trace.jsonl"


def manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_data_stages_then_noop(repo, trace):
    run(["dvc", "repro", "assemble@synthetic"], repo, env={"MRFER_PARAMS_TRACE": str(trace)})
    data = repo / "data/assembled/synthetic"
    stats = json.loads((data / "stats.json").read_text())
    assert stats["size"] == [32, 32] and stats["channels"] == 1
    subjects = {}
    for split in ("train", "val", "test"):
        rows = manifest(data / split / "manifest.csv")
        stored = ["hr"] if split == "train" else ["hr", "x2", "x4"]   # assemble.train_scales: false
        assert sorted(p.stem for p in (data / split).glob("*.npy")) == stored
        for scale in ("hr", "x2", "x4"):   # train below hr: made from hr.npy by the reader
            images = lowres.load_split(data, split, scale)[0]
            assert images.shape == (len(rows), 32, 32, 1) and images.dtype == np.uint8
        assert all(r["class"] == stats["classes"][int(r["label"])] for r in rows)
        subjects[split] = {r["subject"] for r in rows}
    assert not subjects["train"] & subjects["test"] and not subjects["train"] & subjects["val"]
    assert not subjects["val"] & subjects["test"]
    report = json.loads((repo / "reports/assemble/synthetic.json").read_text())
    assert report["subject_independent"] is True and report["dataset"] == stats["dataset"] == "synthetic"
    second = run(["dvc", "repro", "assemble@synthetic"], repo)
    assert "Running stage" not in second.stdout
    assert "up to date" in run(["dvc", "status", "assemble@synthetic"], repo).stdout


def declared_params(body: dict, key: str | None) -> set[str]:
    train_on = yaml.safe_load((REPO / "params.yaml").read_text())["train_on"]
    return {str(p).replace("${key}", key or "").replace("${train_on}", train_on) for p in body.get("params", [])}


def covered(key: str, others: set[str]) -> bool:
    """`key` is one of `others`, inside one of them, or a container of one (a dict read as a whole)."""
    return any(key == o or key.startswith(o + ".") or o.startswith(key + ".") for o in others)


def stage_of(stages: dict, script: str) -> dict:
    """The dvc.yaml stage that runs `script`: its name, and `foreach` when it has one."""
    name = next(n for n, b in stages.items() if f"python {script} " in b.get("do", b)["cmd"] + " ")
    return {"name": name, **({"foreach": stages[name]["foreach"]} if "foreach" in stages[name] else {})}


def foreach_key(stage: dict, args: list[str]) -> str | None:
    """Which instance of a `foreach` stage ran: the key its arguments name (a fold, a dataset)."""
    if "foreach" not in stage:
        return None
    source = stage["foreach"].strip("${}")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    keys = TINY["kfold_test"]["folds"] if source == "kfold_test.folds" else params[source]
    return next((k for k in keys if any(a == k or a.endswith(f"/{k}") or f"/{k}/" in a or a.endswith(f"/{k}.json")
                                        for a in args)), None)


def check_params_trace(trace_file: Path) -> dict[str, dict]:
    """Every stage read exactly the params it declares in dvc.yaml: no key read that DVC does not
    track, and no declared (or accepted) key left unread."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    runs = [json.loads(line) for line in trace_file.read_text().splitlines()]
    checked = {}
    for entry in runs:
        script, args = entry["argv"][0], entry["argv"][1:]
        key = foreach_key(stage_of(stages, script), args)
        name = stage_of(stages, script)["name"]
        body = stages[name].get("do", stages[name])
        declared = declared_params(body, key)
        leaves = {leaf for leaf in entry["loaded"] if covered(leaf, declared)}
        read = set(entry["read"])
        assert not {r for r in read if not covered(r, declared)}, f"{name}: reads params dvc.yaml does not list"
        unread = {leaf for leaf in leaves if not any(leaf == r or leaf.startswith(r + ".") for r in read)}
        assert not unread, f"{name}: declares params it never reads: {sorted(unread)}"
        checked[name if key is None else f"{name}@{key}"] = entry
    return checked


def test_whole_graph_then_noop(repo, trace):
    run(["dvc", "repro"], repo, env={"MRFER_PARAMS_TRACE": str(trace)})
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    checked = check_params_trace(trace)
    datasets = yaml.safe_load((REPO / "params.yaml").read_text())["datasets"]
    expected = ({n for n, b in stages.items() if "foreach" not in b} | {f"kfold-test@{k}" for k in TINY["kfold_test"]["folds"]}
                | {f"{n}@{d}" for n in ("extract", "downsample", "assemble") for d in datasets})
    assert set(checked) == expected  # every stage ran and was checked
    classify = json.loads((repo / "reports/classify.json").read_text())
    assert set(classify) == {"base", "multires", "distill", "base+fsr"}
    assert set(classify["base"]) == {"hr", "x2", "x4"}
    kfold = json.loads((repo / "reports/kfold.json").read_text())
    assert kfold["folds"] == 3 and set(kfold["base"]["x4"]) >= {"accuracy_mean", "accuracy_std"}
    assert {"base", "multires", "distill"} <= set(kfold)
    fold = json.loads((repo / "reports/kfold/fold0.json").read_text())
    assert fold["starts"]["base"].startswith("identities") and fold["starts"]["multires"].startswith("identities")
    # MAFER's chain: base from the face model, multires from the cross-resolution model
    assert checkpoint_meta(repo / "models/base.pt")["start"].startswith("models/face.pt")
    assert checkpoint_meta(repo / "models/multires.pt")["start"].startswith("models/cr.pt")
    assert checkpoint_meta(repo / "models/face.pt")["task"] == "identity"
    for png in ("tsne.png", "confusion.png", "accuracy_vs_resolution.png", "training_curves.png",
                "kfold_confusion.png", "contact_sheet.png"):
        assert (repo / "reports/plots" / png).is_file(), png
    video = json.loads((repo / "reports/video_train.json").read_text())
    assert set(video) >= {"gru", "frame_mean", "frame_majority"}
    for model in ("face", "cr", "base", "multires", "distill", "fsr", "video"):
        assert (repo / f"models/{model}.pt").is_file()
    second = run(["dvc", "repro"], repo)
    assert "Running stage" not in second.stdout, second.stdout
    assert "up to date" in run(["dvc", "status"], repo).stdout
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert shown  # classify metrics are declared and readable by DVC


def checkpoint_meta(path: Path) -> dict:
    from mrfer.nets import checkpoint
    return checkpoint.load(path)["meta"]


def test_predict_cli_agrees_with_classify_on_known_labels(repo, tmp_path):
    """`mrfer predict` on the test faces (as PNGs, known labels) gives the classify stage's figure."""
    if not (repo / "models/base.pt").is_file():
        run(["dvc", "repro", "classify"], repo)
    faces = np.load(repo / "data/assembled/synthetic/test/hr.npy")
    rows = manifest(repo / "data/assembled/synthetic/test/manifest.csv")
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
    params["datasets"] = {name: {"reader": name, "root": f"data/raw/{name}", "options": {}}}
    params["train_on"] = name
    repo = make_repo(tmp_path / "repo", params)
    if name == "fer2013":
        made = make_fer2013(repo / "data/raw/fer2013", n_per_class=10)
    else:
        made = make_rafdb(repo / "data/raw/rafdb", n_per_class=10)
    run(["dvc", "repro", f"assemble@{name}"], repo)
    report = json.loads((repo / f"reports/extract/{name}.json").read_text())
    assert report["reader"] == name and report["faces"] == len(made["records"])
    assert report["skipped"] >= len(made["skips"]) > 0  # the fixture's bad rows are reported
    sources = {}
    for split in ("train", "val", "test"):
        rows = manifest(repo / f"data/assembled/{name}/{split}/manifest.csv")
        images = lowres.load_split(repo / f"data/assembled/{name}", split, "x4")[0]   # train: made from hr.npy
        assert images.shape == (len(rows), 32, 32, 1)
        sources[split] = {r["source_split"] for r in rows}
    assert sources["test"] == {"test"}  # the dataset's own test split is kept
    assert "test" not in sources["train"] | sources["val"]


def test_params_trace_check_catches_unread_and_undeclared_keys(tmp_path):
    """The check above can fail: a declared key left unread, or a key read that dvc.yaml does not list."""
    trace = tmp_path / "t.jsonl"
    loaded = ["downsample.chunk", "downsample.kernel", "downsample.scales"]
    trace.write_text(json.dumps({"argv": ["stages/downsample.py"], "loaded": loaded, "read": loaded}) + "\n")
    assert set(check_params_trace(trace)) == {"downsample"}
    trace.write_text(json.dumps({"argv": ["stages/downsample.py"], "loaded": loaded,
                                 "read": ["downsample.scales"]}) + "\n")
    with pytest.raises(AssertionError, match="never reads.*downsample.chunk"):
        check_params_trace(trace)
    trace.write_text(json.dumps({"argv": ["stages/downsample.py"], "loaded": loaded + ["seed"],
                                 "read": loaded + ["seed"]}) + "\n")
    with pytest.raises(AssertionError, match="reads params dvc.yaml does not list"):
        check_params_trace(trace)
