"""ONNX export (mrfer.export, `mrfer export`, the export stage): onnxruntime's logits equal
torch's, the preprocessing is in the metadata, the batch axis is free, and `mrfer predict` gives
the same labels from the .onnx as from the .pt."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import yaml

from assembled_fixture import CLASSES, make_assembled
from mrfer import export, predict
from mrfer.__main__ import main
from mrfer.data import shards
from mrfer.errors import InputError, MissingInputError
from mrfer.infer import infer
from mrfer.nets import build, checkpoint

REPO = Path(__file__).resolve().parents[1]


def save_model(path: Path, size: int = 32, channels: int = 1, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build("baseline_cnn", num_classes=len(CLASSES), in_chans=channels, image_size=size, width=0.125)
    checkpoint.save_model(path, model, {"arch": "baseline_cnn", "options": {"width": 0.125}, "classes": CLASSES,
                                        "size": size, "channels": channels, "mean": [110.0] * channels,
                                        "std": [50.0] * channels, "params_hash": f"test{seed}",
                                        "stage": "pretrain_base"})
    return path


def export_params(**overrides) -> export.ExportParams:
    values = yaml.safe_load((REPO / "params.yaml").read_text())["export"]
    return export.ExportParams.model_validate({**values, **overrides})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    pt = save_model(tmp / "tiny.pt")
    main(["export", str(pt), "--onnx", str(tmp / "tiny.onnx")])   # the `mrfer export` command
    return pt, tmp / "tiny.onnx"


def test_onnx_file_holds_the_preprocessing(exported):
    pt, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["mrfer.classes"] == CLASSES and props["mrfer.size"] == 32 and props["mrfer.channels"] == 1
    assert props["mrfer.color"] == "gray" and props["mrfer.mean"] == [110.0] and props["mrfer.std"] == [50.0]
    assert "(pixel - mean) / std" in props["mrfer.input"] and props["mrfer.source"] == "tiny.pt"
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and not batch.HasField("dim_value")


def test_onnxruntime_logits_equal_torch_at_any_batch_size(exported):
    pt, path = exported
    session, meta = export.load_onnx(path)
    model, _ = checkpoint.load_model(pt)
    faces = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 1), dtype=np.uint8)
    expected = infer(model, faces, [110.0], [50.0], what="logits").numpy()
    for batch_size in (1, 3, 7):
        logits = export.onnx_logits(session, faces, meta["mean"], meta["std"], batch_size)
        assert logits.shape == (7, len(CLASSES))
        assert np.abs(logits - expected).max() <= 1e-4


def test_check_on_a_test_split_gives_equal_accuracy(exported, tmp_path):
    pt, path = exported
    data = make_assembled(tmp_path / "assembled", n_per_class=(4, 4, 10))
    images, labels = shards.load_xy(data, "test")
    result = export.compare(pt, path, images, labels, batch_size=8)
    assert result["faces"] == 30 and result["max_abs_diff"] <= 1e-4
    assert result["accuracy_onnx"] == result["accuracy_torch"] and result["labels_differ"] == 0


def test_export_stage_writes_onnx_files_and_report(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    save_model(models / "base.pt", seed=1)
    save_model(models / "multires.pt", seed=2)
    data = make_assembled(tmp_path / "assembled", n_per_class=(4, 4, 6))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"export": {**yaml.safe_load((REPO / "params.yaml").read_text())["export"],
                                                 "models": ["base", "multires"]}}))
    subprocess.run([sys.executable, "stages/export.py", "--params", str(params), "--models", str(models),
                    "--data", str(data), "--out", str(tmp_path / "onnx"), "--report", str(tmp_path / "export.json")],
                   cwd=REPO, check=True, capture_output=True)
    report = json.loads((tmp_path / "export.json").read_text())
    assert set(report) == {"base", "multires"}
    for name, row in report.items():
        assert (tmp_path / "onnx" / f"{name}.onnx").is_file()
        assert row["max_abs_diff"] <= 1e-4 and row["accuracy_onnx"] == row["accuracy_torch"]
        assert row["faces"] == 18


def test_a_copy_that_differs_fails_and_writes_nothing(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    save_model(tmp_path / "models" / "base.pt")
    data = make_assembled(tmp_path / "assembled", n_per_class=(4, 4, 6))
    real = export.onnx_logits
    monkeypatch.setattr(export, "onnx_logits", lambda *a: real(*a) + 1e-3)
    with pytest.raises(export.ExportCheckError, match=r"base: max \|onnx - torch\| 1\.00e-03"):
        export.export_all(export_params(models=["base"]), tmp_path / "models", data, tmp_path / "onnx",
                          tmp_path / "export.json")
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "export.json").exists()


def test_predict_from_onnx_gives_the_labels_of_the_pt(exported, tmp_path):
    pt, path = exported
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for k in range(6):
        cv2.imwrite(str(folder / f"face{k}.png"), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    results = {}
    for model in (pt, path):
        args = predict.build_parser().parse_args([str(folder), "--given-box", "--model", str(model), "--device", "cpu",
                                                  "--out", str(tmp_path / model.suffix[1:])])
        results[model.suffix] = predict.predict_command(args)
    pt_rows, onnx_rows = results[".pt"]["faces"], results[".onnx"]["faces"]
    assert len(pt_rows) == len(onnx_rows) == 6
    assert [r["label"] for r in pt_rows] == [r["label"] for r in onnx_rows]
    assert max(abs(a["probability"] - b["probability"]) for a, b in zip(pt_rows, onnx_rows)) < 1e-5
    assert results[".onnx"]["models"]["main"]["runtime"] == "onnxruntime"


def test_unusable_onnx_files_fail_with_one_line(tmp_path):
    with pytest.raises(MissingInputError, match="nope.onnx: ONNX model not found"):
        export.load_onnx(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.onnx: not a loadable ONNX model"):
        export.load_onnx(tmp_path / "junk.onnx")
    bare = tmp_path / "bare.onnx"   # an ONNX file without mrfer's metadata
    with warnings.catch_warnings():   # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(bare), dynamo=False)
    with pytest.raises(InputError, match="bare.onnx: not an mrfer ONNX export"):
        export.load_onnx(bare)


def test_repo_params_validate():
    cfg = export_params()
    assert cfg.tolerance <= 1e-4 and "base" in cfg.models
    with pytest.raises(ValueError):
        export_params(opset=7)
