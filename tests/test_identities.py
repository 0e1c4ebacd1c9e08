"""The face-recognition data of MAFER's identity steps: the synthetic VGGFace2-layout set, the
vggface2 and casia_webface readers (same bad-input rules as the FER readers), extract-identities."""
import csv

import cv2
import numpy as np
import pytest

from mrfer.data import datasets, synthetic, synthetic_identities
from mrfer.data.identities import ExtractIdentitiesParams, extract_identities, val_mask
from mrfer.data.shards import load_split, read_stats
from mrfer.errors import DatasetError, ParamsError
from mrfer import config

IDS = synthetic.IdentitiesParams(subjects=4, images_per_subject=5, image_size=[64, 64])


@pytest.fixture(scope="module")
def vgg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vgg") / "vggface2"
    synthetic_identities.write_identities(root, IDS, seed=7, difficulty=0.3, workers=1)
    return root


def identity_cfg(root, **overrides):
    return ExtractIdentitiesParams.model_validate({"seed": 1, "dataset": "vggface2", "root": str(root),
                                                   "options": {}, "margin": 0.0, "val_fraction": 0.25, **overrides})


def test_synthetic_set_has_vggface2_layout(vgg_root):
    images = sorted(p.relative_to(vgg_root).as_posix() for p in (vgg_root / "train").rglob("*.jpg"))
    assert len(images) == 20 and images[0] == "train/n000001/0001_01.jpg" and images[-1] == "train/n000004/0005_01.jpg"
    with open(vgg_root / "bb_landmark/loose_bb_train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["NAME_ID", "X", "Y", "W", "H"] and rows[0]["NAME_ID"] == "n000001/0001_01"
    with open(vgg_root / "bb_landmark/loose_landmark_train.csv", newline="") as f:
        marks = list(csv.DictReader(f))
    assert list(marks[0]) == ["NAME_ID"] + [f"P{k}{a}" for k in range(1, 6) for a in "XY"] and len(marks) == 20
    # every box holds its face's five landmarks
    for box, mark in zip(rows, marks):
        x, y, w, h = (int(box[k]) for k in "XYWH")
        pts = np.array([float(mark[f"P{k}{a}"]) for k in range(1, 6) for a in "XY"]).reshape(5, 2)
        assert (pts[:, 0] > x).all() and (pts[:, 0] < x + w).all() and (pts[:, 1] > y).all() and (pts[:, 1] < y + h).all()


def test_identities_are_not_fer_subjects():
    """The identity stream never draws a FER subject's face: same seed, disjoint people."""
    seed = 42
    fer = {synthetic.subject_plan(seed, i, 0.85, 0.4)[1] for i in range(200)}
    ids = {synthetic.make_identity(np.random.default_rng([seed, synthetic_identities.IDENTITY_STREAM, i]))
           for i in range(200)}
    assert not fer & ids and len(ids) == 200


def test_vggface2_reader_labels_and_boxes(vgg_root):
    records, skips = datasets.read("vggface2", vgg_root)
    assert len(records) == 20 and not skips.items
    assert [r.label for r in records[:6]] == [0, 0, 0, 0, 0, 1]
    assert records[0].subject == "n000001" and records[0].box is not None and records[0].split == "train"
    assert "vggface2" in datasets.available("identity") and "vggface2" not in datasets.available()


def test_vggface2_reader_refuses_bad_rows(vgg_root, tmp_path):
    root = tmp_path / "v"
    synthetic_identities.write_identities(root, IDS, seed=7, difficulty=0.3, workers=1)
    (root / "train/n000002/0003_01.jpg").unlink()                         # listed, missing
    with open(root / "bb_landmark/loose_bb_train.csv", "a") as f:
        f.write("../../etc/0001_01,1,1,5,5\n")                             # escapes the root
        f.write("n000001/0002_01,a,b,c,d\n")                               # unparsable box
    records, skips = datasets.read("vggface2", root)
    reasons = {s["source"]: s["reason"] for s in skips.items}
    assert any(r.startswith("path escapes the dataset root: ../../etc") for r in reasons.values())
    assert any(r.startswith("bad box") for r in reasons.values())
    assert reasons["train/n000002/0003_01.jpg"].startswith("missing file")
    assert len(records) == 19


def test_extract_identities_skips_corrupt_and_outside_boxes(tmp_path):
    root = tmp_path / "v"
    synthetic_identities.write_identities(root, IDS, seed=7, difficulty=0.3, workers=1)
    (root / "train/n000001/0001_01.jpg").write_bytes(b"not a jpeg")
    text = (root / "bb_landmark/loose_bb_train.csv").read_text().replace(
        "\nn000003/0002_01,", "\nn000003/0002_01,500,500,")
    (root / "bb_landmark/loose_bb_train.csv").write_text(text)
    out = tmp_path / "out"
    report = extract_identities(identity_cfg(root), 32, "gray", "haar", out, tmp_path / "r.json")
    reasons = {s["source"]: s["reason"] for s in report["skips"]}
    assert "train/n000001/0001_01.jpg" in reasons
    assert reasons["train/n000003/0002_01.jpg"].startswith("box outside image")
    assert report["faces"] == 18 and report["train"] + report["val"] == 18
    stats = read_stats(out)
    assert stats["classes"] == ["n000001", "n000002", "n000003", "n000004"] and stats["size"] == [32, 32]
    train_x, train_rows = load_split(out, "train")
    val_x, val_rows = load_split(out, "val")
    assert train_x.shape[1:] == (32, 32, 1) and len(train_rows) == len(train_x)
    assert not {r["source"] for r in train_rows} & {r["source"] for r in val_rows}
    assert {r["class"] for r in val_rows} == set(stats["classes"])   # every identity validates


def test_val_mask_holds_out_each_identity():
    labels = np.repeat([0, 1, 2], [8, 4, 2])
    mask = val_mask(labels, 0.25, seed=3)
    assert [int(mask[labels == k].sum()) for k in range(3)] == [2, 1, 1]
    assert (mask == val_mask(labels, 0.25, seed=3)).all()


def test_casia_webface_reader(tmp_path):
    base = tmp_path / "CASIA-WebFace"
    for identity in ("0000045", "0000099"):
        (base / identity).mkdir(parents=True)
        for k in range(1, 4):
            cv2.imwrite(str(base / identity / f"{k:03d}.jpg"), np.full((250, 250, 3), 90 + k, np.uint8))
    (base / "0000045" / "notes.txt").write_text("x")
    records, skips = datasets.read("casia_webface", tmp_path, {"faces": "whole"})
    assert [(r.subject, r.label) for r in records] == [("0000045", 0)] * 3 + [("0000099", 1)] * 3
    assert records[0].source == "CASIA-WebFace/0000045/001.jpg" and records[0].aligned
    assert skips.items == [{"source": "CASIA-WebFace/0000045/notes.txt", "reason": "not an image file"}]
    with pytest.raises(DatasetError, match="option faces must be one of detect, whole"):
        datasets.read("casia_webface", tmp_path, {"faces": "crop"})


def test_extract_identities_refuses_an_expression_reader(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nextract_identities: {dataset: ckplus, root: x, options: {}, margin: 0.0, "
                      "val_fraction: 0.2}\n")
    with pytest.raises(ParamsError, match="extract_identities.dataset = 'ckplus': .*not an identity reader"):
        config.load_section(params, "extract_identities", ExtractIdentitiesParams)


def test_too_few_faces_is_refused(tmp_path):
    root = tmp_path / "v"
    synthetic_identities.write_identities(root, synthetic.IdentitiesParams(subjects=2, images_per_subject=2,
                                                                           image_size=[64, 64]), 7, 0.3, workers=1)
    for path in (root / "train/n000002").glob("*.jpg"):
        path.write_bytes(b"broken")
    with pytest.raises(DatasetError, match="2\\+ identities with 2\\+ faces"):
        extract_identities(identity_cfg(root), 32, "gray", "haar", tmp_path / "o", tmp_path / "r.json")
