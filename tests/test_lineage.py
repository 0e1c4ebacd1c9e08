"""Lineage by construction: every model records the faces its ancestry saw (by content), every
stage refuses a start that saw a face it tests on, and a start trained on other data is taken."""
import json
import shutil

import numpy as np
import pytest
import torch

from assembled_fixture import make_assembled
from mrfer.data import lineage, shards
from mrfer.data.scales import DownsampleParams
from mrfer.errors import InputError
from mrfer.nets import build, checkpoint
from mrfer.train import base, distill, fsr, kfold, multires
from params_fixture import section

SCALES = ["x2", "x4"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The target set, a copy of it under another name (other splits), and an unrelated set."""
    root = tmp_path_factory.mktemp("lineage")
    target = make_assembled(root / "target", seed=0)
    copy = root / "renamed_copy"
    shutil.copytree(target, copy)
    stats = json.loads((copy / "stats.json").read_text())
    (copy / "stats.json").write_text(json.dumps({**stats, "dataset": "renamed_copy"}))
    # the copy puts the target's test faces into its training split
    for name in ("hr.npy", *(f"{s}.npy" for s in SCALES)):
        test, train = np.load(copy / "test" / name), np.load(copy / "train" / name)
        np.save(copy / "train" / name, np.concatenate([train[: len(train) - len(test)], test]))
    other = make_assembled(root / "other", seed=7)
    return root, target, copy, other


def model_file(path, data, splits) -> str:
    """A small model whose lineage is having trained on `splits` of `data`."""
    stats = shards.read_stats(data)
    torch.manual_seed(0)
    model = build("baseline_cnn", num_classes=3, in_chans=1, image_size=32, width=0.125)
    seen = lineage.assembled(data, splits)
    checkpoint.save_model(path, model, {
        "arch": "baseline_cnn", "options": {"width": 0.125}, "classes": stats["classes"], "size": 32, "channels": 1,
        "mean": stats["mean"], "std": stats["std"], "params_hash": "test", "seed": 0, "stage": "pretrain_base",
        "lineage": lineage.to_meta(seen)})
    return str(path)


def test_a_face_is_named_by_its_bytes_not_by_its_dataset(sets):
    _, target, copy, other = sets
    hashes = lineage.split_hashes(target, "test")
    assert len(np.unique(hashes)) == len(hashes)   # distinct faces, distinct names
    assert lineage.overlap(lineage.assembled(copy, ["train"]), hashes) == len(hashes)
    assert lineage.overlap(lineage.assembled(other, ["train", "val", "test"]), hashes) == 0
    a = lineage.record("a", hashes)
    assert a["datasets"][0]["content"] == lineage.record("b", hashes[::-1])["datasets"][0]["content"]
    merged = lineage.merge(a, lineage.assembled(other, ["train"]))
    assert {d["name"] for d in merged["datasets"]} == {"a", "other"}
    back = lineage.from_meta({"lineage": lineage.to_meta(merged)}, "m.pt")
    assert np.array_equal(back["seen"], merged["seen"]) and back["seen"].dtype == np.uint64
    with pytest.raises(InputError, match=r"^m\.pt: records no lineage"):
        lineage.from_meta({}, "m.pt")


def test_pretrain_base_refuses_a_start_that_saw_a_test_face_even_renamed(sets, tmp_path):
    root, target, copy, other = sets
    start = model_file(tmp_path / "copy.pt", copy, ["train", "val"])
    cfg = section("pretrain_base", base.PretrainBaseParams, seed=1, init=start, arch_options={"width": 0.125},
                  epochs=1, batch_size=16)
    with pytest.raises(InputError, match=r"copy\.pt .*its ancestry \(renamed_copy\) saw 24 of the 24 faces of .*test split"):
        base.fit_base(cfg, target, tmp_path / "base.pt", tmp_path / "base.json", SCALES, None, None)
    assert not (tmp_path / "base.pt").exists()


def test_a_transfer_start_trained_on_other_data_is_taken(sets, tmp_path):
    root, target, copy, other = sets
    start = model_file(tmp_path / "other.pt", other, ["train", "val"])
    cfg = section("pretrain_base", base.PretrainBaseParams, seed=1, init=start, arch_options={"width": 0.125},
                  epochs=1, batch_size=16)
    base.fit_base(cfg, target, tmp_path / "base.pt", tmp_path / "base.json", SCALES, None, None)
    meta = checkpoint.load(tmp_path / "base.pt")["meta"]
    seen = lineage.from_meta(meta, tmp_path / "base.pt")
    assert {d["name"] for d in seen["datasets"]} == {"other", "target"}   # the whole ancestry
    assert lineage.overlap(seen, lineage.split_hashes(target, "train")) == 72
    assert lineage.overlap(seen, lineage.split_hashes(target, "test")) == 0


def test_multires_distill_and_fsr_refuse_a_start_that_saw_a_test_face(sets, tmp_path):
    root, target, copy, other = sets
    start = model_file(tmp_path / "copy.pt", copy, ["train"])
    message = r"its ancestry \(renamed_copy\) saw 24 of the 24 faces"
    mcfg = section("multires_finetune", multires.MultiresFinetuneParams, seed=1, epochs=1, batch_size=16)
    with pytest.raises(InputError, match=message):
        multires.fit_multires(mcfg, target, start, tmp_path / "m.pt", tmp_path / "m.json", SCALES, None, None)
    dcfg = section("distill", distill.DistillParams, seed=1, step1_epochs=1, step2_epochs=0, batch_size=16)
    with pytest.raises(InputError, match=message):
        distill.fit_distill(dcfg, target, start, tmp_path / "d.pt", tmp_path / "d.json", SCALES, "bicubic_aa",
                            None, None)
    fcfg = section("fsr_train", fsr.FsrTrainParams, seed=1, blocks=1, channels=8, growth=8, pretrain_epochs=1,
                   epochs=1, batch_size=16)
    with pytest.raises(InputError, match=message):
        fsr.fit_fsr(fcfg, target, start, tmp_path / "f.pt", tmp_path / "f.json", SCALES, live_dir=None)
    assert not any((tmp_path / n).exists() for n in ("m.pt", "d.pt", "f.pt"))


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_every_fold_refuses_a_start_that_saw_one_of_its_test_rows(sets, tmp_path, fold):
    """Folds test on rows of every split, so a start trained on the (renamed) training split of
    the same faces is refused in every fold, for the base and the multires start alike."""
    root, target, copy, other = sets
    seen_train = model_file(tmp_path / "copy.pt", copy, ["train"])
    clean = model_file(tmp_path / "other.pt", other, ["train", "val", "test"])
    cfg = section("kfold_test", kfold.KfoldTestParams).train.model_copy(
        update={"epochs": 1, "batch_size": 16, "models": ["base", "multires"], "val_fraction": 0.3})
    downsample = DownsampleParams(scales=SCALES, kernel="bicubic_aa", chunk=64)
    for face, cr, culprit in ((seen_train, clean, "copy.pt"), (clean, seen_train, "copy.pt")):
        files = kfold.FoldFiles(target, face, cr, tmp_path / "f.json", tmp_path / "c.json")
        with pytest.raises(InputError, match=rf"{culprit}: .*renamed_copy.* faces of fold {fold}'s test rows"):
            kfold.run_fold(cfg, 0, fold, files, downsample, 3)
    assert not (tmp_path / "f.json").exists()
