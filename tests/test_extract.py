import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ckplus_fixture import face_landmarks, make_ckplus, zip_ckplus
from photo_dataset_fixtures import make_fer2013_duplicates
from mrfer import config as params_config
from mrfer.data import extract, faces, shards, synthetic
from mrfer.data.datasets import ckplus
from mrfer.data.records import Record
from mrfer.errors import DatasetError, InputError, ParamsError

REPO = Path(__file__).resolve().parents[1]


def repo_section(name: str) -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())[name]


def repo_dataset() -> dict:
    """The repo's `datasets` entry that `train_on` names (reader, root, options)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return params["datasets"][params["train_on"]]


def config(root, **overrides) -> extract.ExtractParams:
    """The repo's dataset entry and `extract` section, on the dataset at `root`, 32 px, plus `overrides`."""
    return extract.ExtractParams.model_validate({**repo_section("extract"), **repo_dataset(), "root": str(root),
                                                 "size": 32, **overrides})


def write_params(tmp_path: Path, **overrides) -> Path:
    """params.yaml with the repo's `extract` section and one dataset `ds` (the repo's entry), updated
    by `overrides` (each in the section that holds it)."""
    crop, entry = repo_section("extract"), repo_dataset()
    for key, value in overrides.items():
        (entry if key in entry or key == "reader" else crop)[key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"extract": crop, "datasets": {"ds": entry}, "train_on": "ds"}))
    return path


def load(path: Path) -> extract.ExtractParams:
    return params_config.load_section(path, "datasets.ds", extract.ExtractParams)


def run(tmp_path, cfg):
    report = extract.extract(cfg, tmp_path / "out", tmp_path / "report.json", tmp_path / "duplicates.csv")
    return report, shards.load_array(tmp_path / "out" / "faces.npy"), shards.read_manifest(tmp_path / "out" / "manifest.csv")


def test_ckplus_extract_writes_faces_manifest_and_skip_report(tmp_path):
    root = make_ckplus(tmp_path / "ck")
    report, images, rows = run(tmp_path, config(root))
    assert images.shape == (len(rows), 32, 32, 1) and images.dtype == np.uint8
    # 23 reader records (6 sequences x 4 frames, less the 67-point frame) - 3 contempt - 1 corrupt
    assert report["faces"] == len(rows) == 19
    assert {r["class"] for r in rows} == {"neutral", "disgust", "happy", "surprise", "angry", "fear"}
    assert all(r["located"] == "landmarks" for r in rows)
    by_reason = report["skipped_by_reason"]
    assert by_reason["contempt dropped"] == 3  # S010/002: its neutral first frame is kept
    assert by_reason["unreadable or corrupt image"] == 1
    assert json.loads((tmp_path / "report.json").read_text())["skips"] == report["skips"]
    # CK+'s reader does not look for duplicates: no summary key, a CSV with its header alone
    assert "duplicates" not in report
    assert (tmp_path / "duplicates.csv").read_text() == "source,first_source,split,first_split,action\n"


def extract_bytes(tmp_path: Path, name: str, cfg: extract.ExtractParams) -> tuple[dict, dict[str, bytes]]:
    """The report (its root left out, each skip as source and reason kind: the texts name the
    root) and the bytes of faces.npy and manifest.csv."""
    out = tmp_path / name
    report = extract.extract(cfg, out, tmp_path / f"{name}.json", tmp_path / f"{name}.csv")
    report = {**report, "root": None, "skips": [(s["source"], s["reason"].split(":")[0]) for s in report["skips"]]}
    return report, {f: (out / f).read_bytes() for f in ("faces.npy", "manifest.csv")}


def test_extract_from_zips_is_byte_identical_to_folders(tmp_path):
    section = {**repo_section("synthesize"), "seed": 3, "n_subjects": 2, "image_size": [64, 64],
               "frames": [3, 4], "labelled_fraction": 1.0}
    for layout in ("folders", "zips"):
        synthetic.synthesize(synthetic.SynthesizeParams.model_validate({**section, "layout": layout}),
                             tmp_path / layout)
    assert sorted(p.name for p in (tmp_path / "zips").iterdir()) == sorted(synthetic.ARCHIVES.values())
    # synthesize writes the zips the reader looks for
    assert synthetic.ARCHIVES == dict(part[:2] for part in (ckplus.IMAGES, ckplus.EMOTION, ckplus.LANDMARKS))
    folders = extract_bytes(tmp_path, "from_folders", config(tmp_path / "folders"))
    zips = extract_bytes(tmp_path, "from_zips", config(tmp_path / "zips"))
    assert zips == folders and folders[0]["faces"] > 0
    # the CK+ fixture, faults included (a corrupt frame, bad labels, a 67-point landmark file)
    root = make_ckplus(tmp_path / "ck")
    folders = extract_bytes(tmp_path, "ck_folders", config(root))
    zips = extract_bytes(tmp_path, "ck_zips", config(zip_ckplus(root, tmp_path / "ck_zips")))
    assert zips == folders and folders[0]["skipped_by_reason"]["unreadable or corrupt image"] == 1


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("mode, dropped", [("keep", 0), ("drop_from_eval", 3)])
def test_fer2013_duplicates_counted_in_report_and_listed_in_csv(tmp_path, mode, dropped):
    made = make_fer2013_duplicates(tmp_path / "fer")
    cfg = config(tmp_path / "fer", reader="fer2013", options={"duplicates": mode}, size=48, color="gray")
    report, images, rows = run(tmp_path, cfg)
    assert report["duplicates"] == {"images": 5, "across_splits": 4, "dropped_from_eval": dropped}
    assert json.loads((tmp_path / "report.json").read_text())["duplicates"] == report["duplicates"]
    assert report["notes"] == [] and report["faces"] == len(rows) == len(made["records"]) - dropped
    assert report["skipped_by_reason"] == ({"duplicate of a training image": 3} if dropped else {})
    drop = {source for source, _ in made["dropped"]} if dropped else set()
    assert read_csv(tmp_path / "duplicates.csv") == [
        {"source": source, "first_source": first, "split": split, "first_split": first_split,
         "action": "dropped" if source in drop else "kept"}
        for source, first, split, first_split, _ in made["duplicates"]]
    assert not drop & {r["source"] for r in rows}


def test_contempt_kept_as_eighth_class(tmp_path):
    report, _, rows = run(tmp_path, config(make_ckplus(tmp_path / "ck"), contempt="keep"))
    assert report["per_class"]["contempt"] == 3
    assert {r["label"] for r in rows if r["class"] == "contempt"} == {7}


def test_bad_config_and_empty_dataset_fail_clearly(tmp_path):
    with pytest.raises(ParamsError, match="extract.color"):
        load(write_params(tmp_path, color="cmyk"))
    with pytest.raises(DatasetError, match="cohn-kanade-images"):
        extract.extract(config(tmp_path), tmp_path / "o", tmp_path / "r.json", tmp_path / "d.csv")
    assert not (tmp_path / "o").exists() and not (tmp_path / "d.csv").exists()


def test_all_images_unreadable_leaves_no_output(tmp_path):
    root = tmp_path / "folders"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "a.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="no face could be extracted"):
        extract.extract(config(root, reader="folders", options={}), tmp_path / "o", tmp_path / "r.json",
                        tmp_path / "d.csv")
    assert not (tmp_path / "o").exists()


def test_alignment_levels_the_eyes():
    image = np.full((200, 200, 3), 128, np.uint8)
    points = face_landmarks(100, 100, 50)
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = (points - 100) @ rot.T + 100
    for p in tilted[36:48]:  # paint the eyes black so we can find them in the crop
        cv2.circle(image, (int(p[0]), int(p[1])), 3, (0, 0, 0), -1)
    face = faces.align_by_landmarks(image, tilted, 64, 0.1)
    dark = np.argwhere(face[:, :, 0] < 60)
    left, right = dark[dark[:, 1] < 32], dark[dark[:, 1] >= 32]
    assert abs(left[:, 0].mean() - right[:, 0].mean()) < 2  # same row: eyes level


def test_box_crop_and_center_fallback(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:60, 120:160] = 255
    crop = faces.crop_box(image, (120, 20, 40, 40), 16, 0.0)
    assert crop.mean() > 250
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.full((50, 80), 77, np.uint8))
    rec = Record(image=path, label=0, source="blank.png")
    for detector in ("haar", "landmarks68", "retinaface"):
        assert faces.extract_face(rec, 16, 0.1, "gray", "skip", detector) == (
            None, f"no face found by the {detector} detector")
    face, how = faces.extract_face(rec, 16, 0.1, "rgb", "center", "landmarks68")
    assert how == "center" and face.shape == (16, 16, 3)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(faces.ImageError, match="missing file: .*nope.png"):
        faces.load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(faces.ImageError, match="corrupt image: .*bad.jpg"):
        faces.load_image(bad)


def test_folders_reader_splits_subjects_and_unknown_class(tmp_path):
    from mrfer.data import datasets
    for split in ("train", "test"):
        for cls in ("Happy", "sad", "bored"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(d / f"S{i:02d}_{cls}.png"), np.full((8, 8), 9, np.uint8))
    (tmp_path / "train" / "Happy" / "nosubject.png").write_bytes(b"x")
    records, skips = datasets.read("folders", tmp_path, {"subject_regex": r"^(S\d+)_"})
    assert {(r.split, r.label, r.subject) for r in records} == {
        (s, lab, f"S{i:02d}") for s in ("train", "test") for lab in (3, 4) for i in range(2)}
    assert len(records) == 8
    reasons = sorted(item["reason"].split(":")[0] for item in skips.items)
    assert reasons == ["no subject", "unknown class folder", "unknown class folder"]
    records, _ = datasets.read("folders", tmp_path, {"class_map": {"bored": "neutral"}})
    assert sum(r.label == 6 for r in records) == 4


def test_export_folders(tmp_path):
    run(tmp_path, config(make_ckplus(tmp_path / "ck")))
    n = extract.export_folders(tmp_path / "out", tmp_path / "export")
    written = sorted(p.parent.name for p in (tmp_path / "export").rglob("*.png"))
    assert len(written) == n == 19
    assert set(written) == {"neutral", "disgust", "happy", "surprise", "angry", "fear"}


def test_repo_params_validate():
    names = params_config.load_datasets(REPO / "params.yaml")
    cfgs = [params_config.load_section(REPO / "params.yaml", f"datasets.{n}", extract.ExtractParams) for n in names]
    assert {c.reader for c in cfgs} >= {"ckplus", "fer2013"} and {c.size for c in cfgs} == {repo_section("extract")["size"]}


@pytest.mark.parametrize("overrides, message", [
    ({"size": "big"}, r"extract\.size = 'big'"),
    ({"size": 16}, r"extract\.size = 16: .*greater than or equal to 32"),
    ({"margin": -0.1}, r"extract\.margin = -0\.1"),
    ({"contempt": "merge"}, r"extract\.contempt = 'merge': .*'drop' or 'keep'"),
    ({"no_face": "guess"}, r"extract\.no_face = 'guess'"),
    ({"reader": "nope"}, r"datasets\.ds\.reader = 'nope': not a registered reader \(known: .*ckplus"),
    ({"options": {"apexframes": 3}},
     r"datasets\.ds\.options = \{'apexframes': 3\}: dataset 'ckplus': unknown option\(s\) apexframes "
     r"\(allowed: apex_frames, frames, neutral_frames\)"),
    ({"options": {"class_map": {}}}, r"datasets\.ds\.options = .*unknown option\(s\) class_map"),
    ({"reader": "fer2013", "options": {"duplicates": "drop"}},
     r"datasets\.ds\.options = \{'duplicates': 'drop'\}: dataset 'fer2013': option duplicates must be one of "
     r"keep, drop_from_eval, got 'drop'"),
    ({"sizes": 64}, r"extract\.sizes is not a key of this section \(allowed: .*size"),
])
def test_bad_params_name_file_key_and_value(tmp_path, overrides, message):
    path = write_params(tmp_path, **overrides)
    with pytest.raises(ParamsError, match=rf"^{path}: {message}"):
        load(path)


def test_a_missing_key_is_an_error(tmp_path):
    section = {k: v for k, v in repo_section("extract").items() if k != "no_face"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"extract": section, "datasets": {"ds": repo_dataset()}, "train_on": "ds"}))
    with pytest.raises(ParamsError, match="datasets.ds.no_face is missing .*'extract'"):
        load(path)


def test_options_follow_the_chosen_reader():
    cfg = config("x", reader="folders", options={"subject_regex": "^(S\\d+)_"})
    assert cfg.options == {"subject_regex": "^(S\\d+)_"}
    assert config("x", options={}).options == {}


def test_export_folders_refuses_a_manifest_that_does_not_fit(tmp_path):
    run(tmp_path, config(make_ckplus(tmp_path / "ck")))
    rows = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    (tmp_path / "out" / "manifest.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(InputError, match="19 faces but manifest.csv has 18 rows"):
        extract.export_folders(tmp_path / "out", tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_stage_script_paths_are_required_and_bad_params_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "stages/extract.py", "--params", str(write_params(tmp_path))],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "--out" in result.stderr and "--report" in result.stderr
    result = subprocess.run([sys.executable, "stages/extract.py", "--params", str(write_params(tmp_path)),
                             "--dataset", "ds", "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.json")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "required: --duplicates" in result.stderr
    assert not (tmp_path / "o").exists()
    result = subprocess.run([sys.executable, "stages/extract.py", "--params", str(write_params(tmp_path, size="big")),
                             "--dataset", "ds", "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.json"),
                             "--duplicates", str(tmp_path / "d.csv")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'params.yaml'}: extract.size = 'big'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_one_list_of_image_suffixes():
    from mrfer.data.datasets import folders, jaffe, oulu
    assert folders.IMAGE_SUFFIXES is jaffe.IMAGE_SUFFIXES is oulu.IMAGE_SUFFIXES is faces.IMAGE_SUFFIXES
    assert {".png", ".jpg", ".tiff", ".pgm"} <= faces.IMAGE_SUFFIXES
