"""classify, kfold and plots cores on tiny data: shapes, metrics, files written."""
import json

import numpy as np
import pytest
import yaml

from assembled_fixture import make_assembled
from mrfer import config, plots
from mrfer.data.scales import DownsampleParams
from mrfer.errors import ParamsError
from mrfer.eval import aggregate, classify
from mrfer.infer import infer
from mrfer.metrics import summarize
from mrfer.nets import checkpoint
from mrfer.train import base, cr, distill, face, kfold, multires
from params_fixture import raw_params, section

SCALES = ["x2", "x4"]
DOWNSAMPLE = DownsampleParams(scales=SCALES, kernel="bicubic_aa", chunk=512)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    data = make_assembled(root / "assembled")
    models = root / "models"
    identities = make_assembled(root / "identities", seed=1)   # three other "people"
    fcfg = section("face_pretrain", face.FacePretrainParams, seed=1, arch_options={"width": 0.125}, epochs=2,
                   batch_size=16)
    face.fit_face(fcfg, identities, models / "face.pt", root / "face.json", live_dir=None, resume=None)
    cr.fit_cr(section("cr_pretrain", cr.CrPretrainParams, seed=1, epochs=1, batch_size=16), identities,
              models / "face.pt", models / "cr.pt", root / "cr.json", live_dir=None, resume=None)
    cfg = section("pretrain_base", base.PretrainBaseParams, seed=1, arch_options={"width": 0.125}, epochs=4,
                  batch_size=16, lr=3e-3, head_lr=3e-3)
    base.fit_base(cfg, data, models / "base.pt", root / "base.json", SCALES, live_dir=None, resume=None,
                  init_file=models / "face.pt")
    mcfg = section("multires_finetune", multires.MultiresFinetuneParams, seed=1, epochs=2, batch_size=16)
    multires.fit_multires(mcfg, data, models / "cr.pt", models / "multires.pt", root / "mr.json", SCALES,
                          live_dir=None, resume=None)
    dcfg = section("distill", distill.DistillParams, seed=1, step1_epochs=1, step2_epochs=1, batch_size=16,
                   scales=None)
    distill.fit_distill(dcfg, data, models / "base.pt", models / "distill.pt", root / "d.json", SCALES,
                        "bicubic_aa", live_dir=None, resume_dir=None)
    return root, data, models


def test_classify_reports_every_model_scale_classifier(trained, tmp_path):
    root, data, models = trained
    cfg = section("classify", classify.ClassifyParams, models=["base", "multires"],
                  classifiers=["head", "svc", "logreg"], seed=0)
    results = classify.classify(cfg, data, models, SCALES, "bicubic_aa", tmp_path / "c.json", tmp_path / "c.md",
                                tmp_path / "curves", tmp_path / "pred.npz")
    assert set(results) == {"base", "multires"}
    assert set(results["base"]) == {"hr", "x2", "x4"}
    assert set(results["base"]["x4"]) == {"head", "svc", "logreg"}
    # the head's figures equal a direct evaluation of the saved model
    model, meta = checkpoint.load_model(models / "base.pt")
    x = np.load(data / "test" / "x4.npy")
    y = np.array([int(r.split(",")[1]) for r in (data / "test" / "manifest.csv").read_text().splitlines()[1:]])
    direct = infer(model, x, meta["mean"], meta["std"]).argmax(1).numpy()
    assert results["base"]["x4"]["head"] == summarize(y, direct, 3)
    saved = np.load(tmp_path / "pred.npz")
    assert saved["base/hr/features"].shape == (len(y), model.embedding_dim)
    table = (tmp_path / "c.md").read_text()
    assert "| base | svc |" in table and "x4 (8 px)" in table
    curve = (tmp_path / "curves" / "multires.csv").read_text().splitlines()
    assert curve[0] == "scale,resolution_px,accuracy_head,accuracy_svc,accuracy_logreg"
    assert [line.split(",")[1] for line in curve[1:]] == ["8", "16", "32"]
    assert json.loads((tmp_path / "c.json").read_text()) == results


def test_classify_bad_config_is_refused_before_any_work(tmp_path):
    params = raw_params()
    for key, value, allowed in (("classifiers", ["knn"], "'head', 'svc', 'logreg' or 'svc_fsrfer'"),
                                ("models", ["base+gan"], "'base', 'multires', 'distill', 'base+fsr', 'multires+fsr' or 'distill+fsr'")):
        bad = {**params, "classify": {**params["classify"], key: value}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(ParamsError) as e:
            config.load_section(tmp_path / "params.yaml", "classify", classify.ClassifyParams)
        assert f"params.yaml: classify.{key}.0 = {value[0]!r}: Input should be {allowed}" in str(e.value)
    bad = {**params, "classify": {**params["classify"], "fsrfer_fit": "all"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ParamsError, match="classify.fsrfer_fit = 'all': Input should be 'hr' or 'scales'"):
        config.load_section(tmp_path / "params.yaml", "classify", classify.ClassifyParams)


def test_classify_default_reads_every_key_and_adds_the_published_protocol_rows(trained, tmp_path):
    _, data, models = trained
    cfg = section("classify", classify.ClassifyParams, models=["base", "multires"], seed=0)
    assert "svc_fsrfer" in cfg.classifiers  # the default table holds FSR-FER's protocol rows
    results = classify.classify(cfg, data, models, SCALES, "bicubic_aa", tmp_path / "c.json", tmp_path / "c.md",
                                tmp_path / "curves", tmp_path / "pred.npz")
    assert config.reads(cfg, "classify") == config.leaves(cfg, "classify")
    assert "| multires | svc_fsrfer |" in (tmp_path / "c.md").read_text()
    # a plain model: FSR-FER's SVC on the HR training embeddings, as the svc row with fit_scale hr
    for scale in ("hr", *SCALES):
        assert results["base"][scale]["svc_fsrfer"] == results["base"][scale]["svc"]
    header = (tmp_path / "curves" / "base.csv").read_text().splitlines()[0]
    assert header == "scale,resolution_px," + ",".join(f"accuracy_{c}" for c in cfg.classifiers)


def test_kfold_fold_and_aggregate(trained, tmp_path):
    _, data, models = trained
    cfg = section("kfold_test", kfold.KfoldTestParams).train.model_copy(
        update={"epochs": 1, "batch_size": 16, "models": ["base", "multires"], "val_fraction": 0.3})
    reports = []
    for fold in range(3):
        files = kfold.FoldFiles(data, models / "face.pt", models / "cr.pt", tmp_path / f"f{fold}.json",
                                tmp_path / f"c{fold}.json")
        kfold.run_fold(cfg, 0, fold, files, DOWNSAMPLE, 3)
        reports.append(tmp_path / f"f{fold}.json")
    first = json.loads(reports[0].read_text())
    # subject protocol: fold 0 holds the rows whose fold_subject is 0, from all three splits
    assert first["metrics"]["base"]["hr"]["n"] == sum(1 for s in ("train", "val", "test")
                                                      for line in (data / s / "manifest.csv").read_text().splitlines()[1:]
                                                      if line.split(",")[-2] == "0")
    matrix = np.array(json.loads((tmp_path / "c0.json").read_text())["confusion"]["multires"]["x4"])
    assert matrix.sum() == first["metrics"]["multires"]["x4"]["n"]
    agg = aggregate.aggregate(reports, tmp_path / "kfold.json")
    values = [json.loads(r.read_text())["metrics"]["base"]["x2"]["accuracy"] for r in reports]
    assert agg["base"]["x2"]["accuracy_mean"] == round(float(np.mean(values)), 4)
    assert agg["base"]["x2"]["accuracy_std"] == round(float(np.std(values, ddof=1)), 4)
    with pytest.raises(ValueError, match="out of range"):
        files = kfold.FoldFiles(data, models / "face.pt", models / "cr.pt", tmp_path / "x.json", tmp_path / "y.json")
        kfold.run_fold(cfg, 0, 5, files, DOWNSAMPLE, 3)


def test_render_reports_writes_every_png(trained, tmp_path):
    _, data, models = trained
    cfg = section("classify", classify.ClassifyParams, models=["base", "multires"], classifiers=["head"], seed=0)
    classify.classify(cfg, data, models, SCALES, "bicubic_aa", tmp_path / "c.json", tmp_path / "c.md", tmp_path / "curves",
                      tmp_path / "pred.npz")
    live = tmp_path / "live"
    live.mkdir()
    for key, values in (("train_loss", [1.0, 0.5]), ("val_accuracy", [0.4, 0.6])):
        (live / f"{key}.tsv").write_text(f"step\t{key}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))
    fold = {"classes": ["angry", "happy", "neutral"],
            "confusion": {"base": {"hr": np.eye(3).tolist(), "x4": np.ones((3, 3)).tolist()}}}
    (tmp_path / "fold.json").write_text(json.dumps(fold))
    written = plots.render_reports(tmp_path / "pred.npz", tmp_path / "curves", {"base": str(live)},
                                   [str(tmp_path / "fold.json")] * 2, data, tmp_path / "plots", seed=0)
    assert written == ["accuracy_vs_resolution.png", "confusion.png", "contact_sheet.png", "kfold_confusion.png",
                       "training_curves.png", "tsne.png"]
    for name in written:
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "plots" / "confusion" / "base_hr.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 1 + 24
    assert (tmp_path / "plots" / "confusion" / "base_lowest.csv").is_file()  # named whatever the scales
