"""assemble.train_scales: train stored at hr only by default; readers asking for train at a
low-resolution scale get the bytes assemble would have stored, made from hr.npy on the fly."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mrfer import config
from mrfer.data import lowres, shards
from mrfer.data.assemble import AssembleParams, assemble
from mrfer.data.downsample import downsample
from mrfer.data.scales import DownsampleParams
from mrfer.data.labels import CLASSES
from mrfer.errors import InputError, MissingInputError, ParamsError
from params_fixture import raw_params, section

SCALES = ["x2", "x4", "16px"]


def extracted(root: Path, kernel: str) -> tuple[Path, Path]:
    """data/extracted (60 faces, 15 subjects) and data/downsampled made by the real downsample,
    in chunks of 7 (not the chunks a reader degrades in)."""
    rng = np.random.default_rng(0)
    (root / "extracted").mkdir(parents=True)
    np.save(root / "extracted" / "faces.npy", rng.integers(0, 256, (60, 32, 32, 1), dtype=np.uint8))
    labels = rng.integers(0, 4, 60)
    shards.write_manifest(root / "extracted" / "manifest.csv", [
        {"source": f"{i}.png", "label": int(k), "class": CLASSES[k], "subject": f"S{i // 4:02d}", "located": "aligned"}
        for i, k in enumerate(labels)])
    downsample(DownsampleParams(scales=SCALES, kernel=kernel, chunk=7), root / "extracted" / "faces.npy",
               root / "downsampled")
    return root / "extracted", root / "downsampled"


def assembled(root: Path, train_scales: bool, kernel: str = "bicubic_aa") -> Path:
    """`root/assembled_<train_scales>`, from the inputs under `root/in` (made by the first call)."""
    if not (root / "in").exists():
        extracted(root / "in", kernel)
    cfg = section("assemble", AssembleParams, train_scales=train_scales)
    out = root / f"assembled_{train_scales}"
    assemble(cfg, "fixture", list(CLASSES), SCALES, kernel, root / "in" / "extracted", root / "in" / "downsampled", out,
             root / f"assemble_{train_scales}.json")
    return out


def test_train_scales_is_false_in_params_yaml_and_must_be_a_bool(tmp_path):
    assert raw_params()["assemble"]["train_scales"] is False
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"seed": 1, "assemble": {**raw_params()["assemble"], "train_scales": "maybe"}}))
    with pytest.raises(ParamsError, match=r"assemble\.train_scales = 'maybe'"):
        config.load_section(path, "assemble", AssembleParams)


def test_by_default_train_is_stored_at_hr_only_val_and_test_at_every_scale(tmp_path):
    out = assembled(tmp_path, train_scales=False)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["hr.npy", "manifest.csv"]
    for split in ("val", "test"):
        assert sorted(p.stem for p in (out / split).glob("*.npy")) == sorted(["hr", *SCALES])
    stats = shards.read_stats(out)
    assert stats["kernel"] == "bicubic_aa" and stats["train_scales"] is False
    assert stats["scales"] == ["hr", *SCALES]
    assert json.loads((tmp_path / "assemble_False.json").read_text())["train_scales"] is False
    full = assembled(tmp_path, train_scales=True)
    assert sorted(p.stem for p in (full / "train").glob("*.npy")) == sorted(["hr", *SCALES])


@pytest.mark.parametrize("kernel", ["bicubic_aa", "bilinear", "matlab"])
def test_train_at_a_scale_not_stored_is_byte_identical_to_the_stored_copy(tmp_path, kernel, caplog):
    default, full = assembled(tmp_path, False, kernel), assembled(tmp_path, True, kernel)
    with caplog.at_level(logging.INFO, logger="mrfer.data.lowres"):
        for scale in SCALES:
            made, labels = lowres.load_xy(default, "train", scale)
            stored, stored_labels = lowres.load_xy(full, "train", scale)
            assert made.dtype == stored.dtype and made.shape == stored.shape
            assert made.tobytes() == stored.tobytes() and np.array_equal(labels, stored_labels)
        lowres.load_split(default, "train", "x4")   # again: logged once per folder, split and scale
    with pytest.raises(MissingInputError, match=r"x4\.npy: not stored .*mrfer\.data\.lowres\.load_split"):
        shards.load_split(default, "train", "x4")   # the plain reader never degrades
    messages = [r.getMessage() for r in caplog.records if "on the fly" in r.getMessage()]
    assert len(messages) == len(SCALES) and all(f"kernel {kernel}" in m for m in messages)
    assert isinstance(shards.open_xy(default, "val", "x4")[0], np.memmap)   # stored scales stay mapped


def test_stats_without_a_kernel_is_a_clear_error(tmp_path):
    out = assembled(tmp_path, train_scales=False)
    stats = shards.read_stats(out)
    del stats["kernel"]
    (out / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(InputError, match=rf"^{out / 'stats.json'}: no 'kernel' recorded, so "
                                         rf"{out / 'train' / 'x4.npy'} cannot be made .*; re-run assemble$"):
        lowres.load_xy(out, "train", "x4")
    assert shards.load_xy(out, "val", "x4")[0].shape == (len(shards.load_split(out, "val")[1]), 32, 32, 1)


def test_a_scale_assemble_never_made_is_still_missing(tmp_path):
    out = assembled(tmp_path, train_scales=False)
    with pytest.raises(MissingInputError, match=r"x5\.npy: array not found, and x5 is not among the assembled"):
        lowres.load_xy(out, "train", "x5")
    with pytest.raises(MissingInputError, match=r"x5\.npy: array not found"):
        shards.load_split(out, "test", "x5")


def test_readers_of_low_resolution_train_faces_work_on_the_default_layout(tmp_path):
    """fsr-train's fixed pairs and the k-fold's rows read train at every scale."""
    from mrfer.train.fsr import load_pairs
    from mrfer.train.kfold import fold_rows
    default, full = assembled(tmp_path, False), assembled(tmp_path, True)
    (hr, lr, y), (hr_full, lr_full, y_full) = load_pairs(default, "train", SCALES), load_pairs(full, "train", SCALES)
    assert np.array_equal(hr, hr_full) and np.array_equal(y, y_full)
    assert all(np.array_equal(a, b) for a, b in zip(lr, lr_full))
    made, stored = fold_rows(default, 0, "subject", 0.15, 0, "x4"), fold_rows(full, 0, "subject", 0.15, 0, "x4")
    assert all(np.array_equal(a, b) for a, b in zip(made, stored))
