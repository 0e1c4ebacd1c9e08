"""Presets (configs/*.yaml) for the published setups: each merges into a params file that every
stage accepts, states the dataset and weights it needs, and DVC can plan the pipeline with it
in a repo copy holding that dataset's test fixture."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from covpoolfer_tf_fixture import OPTIONS, PREFIX, copy_checkpoint
from mrfer.nets import tf_checkpoint
from photo_dataset_fixtures import make_fer2013, make_rafdb
from video_dataset_fixtures import make_oulu
from pipeline_repo import REPO, make_repo, run

CONFIGS = REPO / "configs"
SCRIPT = REPO / "scripts" / "apply_preset.py"
PRESETS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
FIXTURES = {"fer2013": make_fer2013, "rafdb": make_rafdb, "oulu": make_oulu}

spec = importlib.util.spec_from_file_location("apply_preset", SCRIPT)
apply_preset = importlib.util.module_from_spec(spec)
spec.loader.exec_module(apply_preset)


def merged_params(name: str, tmp_path: Path, params: Path = REPO / "params.yaml") -> Path:
    out = tmp_path / f"{name}.params.yaml"
    out.write_text(params.read_text())
    assert apply_preset.main([str(CONFIGS / f"{name}.yaml"), "--params", str(out)]) == 0
    return out


def header(name: str) -> str:
    lines = (CONFIGS / f"{name}.yaml").read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, l in enumerate(lines) if not l.startswith("#"))])


def test_every_preset_a_record_names_exists():
    """Published setups are the presets the method records name (configs/records/*.yaml); the
    others run this repo's own recipes on real data (cpu-*)."""
    named = {p for path in (CONFIGS / "records").glob("*.yaml") for p in yaml.safe_load(path.read_text())["presets"]}
    assert named and named <= set(PRESETS)
    assert all(p in named or p.startswith("cpu-") or "Every recipe setting is params.yaml's" in header(p)
               for p in PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_gives_params_every_stage_accepts(name, tmp_path):
    from mrfer import sections
    from mrfer.data import datasets

    path = merged_params(name, tmp_path)
    cfg = sections.validate_all(path)  # every section through its schema: types, ranges, choices
    raw = yaml.safe_load(path.read_text())
    assert raw["train_on"] in raw["datasets"]   # a preset names the datasets it runs on and the one it trains on
    extract = cfg[f"datasets.{raw['train_on']}"]
    reader = datasets.get(extract.reader)
    assert extract.root == f"data/raw/{reader.name}"
    base = cfg["pretrain_base"]
    channels = 1 if extract.color == "gray" else 3
    if base.mean is not None:
        assert len(base.mean) == channels
    weights = base.weights or cfg["face_pretrain"].weights if base.init == "face" else base.weights
    if weights is not None:
        assert weights.path.startswith(("models/imported/", "package:"))   # package: a file a pinned package installs
        assert weights.path in header(name)
    else:
        assert "Weights: none" in header(name)
    assert f"reader `{reader.name}`" in header(name) and f"data/raw/{reader.name}/" in header(name)
    folds = sorted(entry.fold for entry in cfg["kfold_test"].folds.values())
    assert folds == list(range(len(folds))) and len(folds) <= cfg["assemble"].folds


def test_vggface_presets_say_where_the_epoch_is_chosen():
    published, clean = header("vggface-fer2013"), header("vggface-fer2013-clean")
    assert "CHOSEN ON THE TEST SET" in published and "inflates the figure" in published
    assert "PublicTest" in clean and "vggface-fer2013.yaml" in clean


def test_fer2013_public_test_can_be_trained_on(tmp_path):
    """The published VGG-Face split: PublicTest joins Training; PrivateTest stays the test split."""
    from mrfer.data import datasets

    make_fer2013(tmp_path, n_per_class=5)
    default, _ = datasets.read("fer2013", tmp_path)
    merged, _ = datasets.read("fer2013", tmp_path, {"public_test": "train"})
    assert [r.source for r in default] == [r.source for r in merged]
    pairs = {(a.split, b.split) for a, b in zip(default, merged)}
    assert pairs == {("train", "train"), ("val", "train"), ("test", "test")}


def test_apply_preset_cli(tmp_path):
    params = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    params.write_text(original)
    cli = [sys.executable, str(SCRIPT)]
    assert "--dry-run" in run([*cli, "--help"], tmp_path).stdout
    dry = run([*cli, str(CONFIGS / "vgg16-imagenet-fer2013.yaml"), "--params", str(params), "--dry-run"], tmp_path)
    assert params.read_text() == original  # a dry run writes nothing
    assert yaml.safe_load(dry.stdout)["pretrain_base"]["arch"] == "vgg16"
    run([*cli, str(CONFIGS / "vgg16-imagenet-fer2013.yaml"), "--params", str(params)], tmp_path)
    written = params.read_text()
    assert written == dry.stdout
    assert "# bicubic_aa (PIL antialiased bicubic)" in written  # params.yaml's comments are kept
    assert "weights: {kind: torchvision, path: models/imported/vgg16-397923af.pth}" in written
    assert yaml.safe_load(written)["datasets"] == {"fer2013": {"reader": "fer2013", "root": "data/raw/fer2013",
                                                               "options": {"public_test": "val"}}}  # replaced whole
    again = run([*cli, str(CONFIGS / "vgg16-imagenet-fer2013.yaml"), "--params", str(params), "--dry-run"], tmp_path)
    assert again.stdout == written  # applying twice changes nothing

    bad = tmp_path / "bad.yaml"
    for text, message in (("downsample: {kernels: bilinear}\n", "unknown key(s) in section 'downsample': kernels"),
                          ("trainer: {epochs: 3}\n", "unknown section 'trainer'"),
                          ("datasets: {f: {reader: fer2013, root: r, options: {usage: all}}}\ntrain_on: f\n",
                           "unknown option(s) usage"),
                          ("datasets: {f: {reader: nosuchset, root: r, options: {}}}\ntrain_on: f\n",
                           "datasets.f.reader = 'nosuchset': not a registered reader"),
                          ("pretrain_base: {epochs: ten}\n", "pretrain_base.epochs = 'ten': Input should be a valid integer")):
        bad.write_text(text)
        result = run([*cli, str(bad), "--params", str(params)], tmp_path, check=False)
        assert result.returncode == 2 and message in result.stderr, (text, result.stderr)
        assert params.read_text() == written


def dataset_fixture(repo: Path, cfg: dict) -> dict:
    """The preset's dataset (the one `train_on` names), written as its reader's test fixture."""
    entry = cfg["datasets"][cfg["train_on"]]
    FIXTURES[entry["reader"]](repo / entry["root"])
    return entry


def weights_placeholder(repo: Path, cfg: dict) -> None:
    for section in ("pretrain_base", "face_pretrain"):
        if cfg[section]["weights"] and not cfg[section]["weights"]["path"].startswith("package:"):
            path = repo / cfg[section]["weights"]["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"placeholder: a dry run never loads it")


def identities_fixture(repo: Path, cfg: dict) -> None:
    """A tiny VGGFace2-layout set where a preset points extract_identities at the real one."""
    from mrfer.data import synthetic, synthetic_identities

    root = repo / cfg["extract_identities"]["root"]
    if not root.exists():
        synthetic_identities.write_identities(root, synthetic.IdentitiesParams(
            subjects=2, images_per_subject=2, image_size=[64, 64]), seed=1, difficulty=0.3, workers=1)


@pytest.mark.parametrize("name", PRESETS)
def test_dvc_plans_the_pipeline_with_the_preset(name, tmp_path):
    repo = make_repo(tmp_path / "mrfer")
    params = merged_params(name, tmp_path, params=repo / "params.yaml")
    (repo / "params.yaml").write_text(params.read_text())
    cfg = yaml.safe_load(params.read_text())
    entry = dataset_fixture(repo, cfg)
    weights_placeholder(repo, cfg)
    identities_fixture(repo, cfg)

    # --force: DVC 3.67's `repro --dry` otherwise stops at the first stage whose deps are a
    # not-yet-built output (treeverse/dvc#9818); forced, it plans every stage.
    dry = run(["dvc", "repro", "--dry", "--force"], repo).stdout
    planned = re.findall(r"^Running stage '([^']+)'", dry, flags=re.M)
    folds = cfg["kfold_test"]["folds"]
    name = cfg["train_on"]
    assert {f"extract@{name}", "extract-identities", "face-pretrain", "cr-pretrain", f"downsample@{name}",
            f"assemble@{name}", "pretrain-base", "cross-eval", "multires-finetune", "distill", "fsr-train", "classify", "kfold-aggregate",
            "plots"} <= set(planned), planned
    assert sorted(s for s in planned if s.startswith("kfold-test@")) == sorted(f"kfold-test@{k}" for k in folds)
    assert "--fer-model models/base.pt" in dry

    status = json.loads(run(["dvc", "status", f"extract@{name}", "--json"], repo).stdout)
    deps = next(e["changed deps"] for e in status[f"extract@{name}"] if "changed deps" in e)
    assert deps[entry["root"]] == "modified"  # the dataset folder is the stage's dep, and it exists


@pytest.mark.parametrize("name", ["mafer-rafdb", "mafer-fer2013", "mafer-oulu"])
def test_extract_runs_on_the_dataset_fixture(name, tmp_path):
    """One real stage per reader: the preset's reader options, size and colour work."""
    import numpy as np

    repo = make_repo(tmp_path / "mrfer")
    params = merged_params(name, tmp_path, params=repo / "params.yaml")
    (repo / "params.yaml").write_text(params.read_text())
    cfg = yaml.safe_load(params.read_text())
    dataset_fixture(repo, cfg)
    stage = f"extract@{cfg['train_on']}"
    out = run(["dvc", "repro", "--single-item", stage], repo).stdout
    assert f"Running stage '{stage}'" in out
    faces = np.load(repo / f"data/extracted/{cfg['train_on']}/faces.npy", mmap_mode="r")
    size, channels = cfg["extract"]["size"], 1 if cfg["extract"]["color"] == "gray" else 3
    assert faces.shape[1:] == (size, size, channels) and len(faces) > 0
    report = json.loads((repo / f"reports/extract/{cfg['train_on']}.json").read_text())
    assert report  # the stage's metrics were written


# What a tiny real run shrinks (time on 2 CPU cores); every other value stays the preset's.
TINY_RUN = {
    "synthesize": {"n_subjects": 4, "identities": {"subjects": 3, "images_per_subject": 6, "image_size": [128, 128]},
                   "fer_csv": {"subjects": 2, "images_per_class": 1, "image_size": [64, 64], "difficulty": 0.6,
                               "apex_intensity": 0.8}},
    "face_pretrain": {"epochs": 1, "batch_size": 8},
    "cr_pretrain": {"epochs": 1, "batch_size": 8},
    "pretrain_base": {"epochs": 2, "batch_size": 8},
    "multires_finetune": {"epochs": 1, "batch_size": 8},
    "distill": {"step1_epochs": 1, "step2_epochs": 1, "batch_size": 8},
    "fsr_train": {"blocks": 1, "channels": 8, "growth": 8, "pretrain_epochs": 1, "epochs": 1, "batch_size": 8},
    "downsample": {"scales": ["x3", "x8"]},     # x3 and x8: MATLAB's 34 and 13 px, where PIL's sizes differ
}


def test_fsrfer_preset_runs_on_the_rafdb_fixture(tmp_path):
    """A tiny real `dvc repro classify` with FSR-FER's preset: CovPoolFER's released net imported
    and used as it is (here the TF-written fixture checkpoint, at its tiny geometry), 100 px RGB,
    MATLAB x2...x8, the whole training split (no val), the published generator and losses, and
    FSR-FER's SVC protocol."""
    repo = make_repo(tmp_path / "mrfer")
    params = merged_params("fsrfer-rafdb", tmp_path, params=repo / "params.yaml")
    cfg = yaml.safe_load(params.read_text())
    for name, values in TINY_RUN.items():
        cfg[name].update(values)
    cfg["pretrain_base"].update(epochs=0, arch_options=OPTIONS)   # the preset's, at the fixture's geometry
    copy_checkpoint(repo / cfg["pretrain_base"]["weights"]["path"])
    (repo / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    make_rafdb(repo / cfg["datasets"]["rafdb"]["root"], n_per_class=6, bad=False)
    run(["dvc", "repro", "classify"], repo)

    stats = json.loads((repo / "data/assembled/rafdb/stats.json").read_text())
    assert stats["size"] == [100, 100] and stats["channels"] == 3
    assert stats["scales"] == ["hr", "x3", "x8"] and stats["kernel"] == "matlab"
    splits = json.loads((repo / "reports/assemble/rafdb.json").read_text())["splits"]
    assert splits["val"]["faces"] == 0 and splits["train"]["faces"] > 0   # the whole training split
    base_report = json.loads((repo / "reports/pretrain_base.json").read_text())
    assert base_report["epochs_run"] == 0 and base_report["start"] == "imported"
    report = json.loads((repo / "reports/classify.json").read_text())
    assert set(report) == {"base", "multires", "base+fsr"}
    for scale in ("x3", "x8"):
        result = report["base+fsr"][scale]["svc_fsrfer"]
        assert result["solver"] == "libsvm" and result["n"] == 7 and 0 <= result["accuracy"] <= 1
    base_model = torch.load(repo / "models/base.pt", weights_only=True)
    assert base_model["meta"]["arch"] == "covpool" and base_model["meta"]["size"] == 100
    bimap = next(v for k, v in base_model["state_dict"].items() if k.endswith("bimap.weight"))
    released = tf_checkpoint.read_checkpoint(PREFIX)
    assert any(np.array_equal(bimap.numpy(), v) or np.array_equal(bimap.numpy().T, v)
               for v in released.values() if v.shape in (bimap.shape, bimap.T.shape))   # as it is, untrained
