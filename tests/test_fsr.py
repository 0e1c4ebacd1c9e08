import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from assembled_fixture import make_assembled
from mrfer import config, nets
from mrfer.data import shards
from mrfer.data.downsample import DownsampleParams
from mrfer.errors import InputError, ParamsError
from mrfer.infer_fsr import encode_targets, fsr_features
from mrfer.nets.fsr import (FSRCritic, FSRGenerator, FSRModel, check_target, embedding_from_target,
                            fer_fingerprint, load_fsr, sample_weights, super_resolve, target_features,
                            wgan_div_penalty)
from mrfer.nets import checkpoint
from mrfer.train import base, fsr
from mrfer.transforms import prepare, stats_tensors

REPO = Path(__file__).resolve().parents[1]
SCALES = ["x2", "x4"]
TINY = {"blocks": 1, "channels": 16, "growth": 8, "dense_layers": 3, "critic_channels": 8, "critic_hidden": 32,
        "pretrain_epochs": 3, "epochs": 1, "batch_size": 16, "pretrain_lr": 2e-3, "lr": 1e-4}


def raw_section(name: str) -> dict:
    """The repo's params.yaml section `name`, as a plain dict to override."""
    return yaml.safe_load((REPO / "params.yaml").read_text())[name]


def fsr_config(seed: int, **overrides) -> fsr.FsrTrainParams:
    """The repo's fsr_train params with TINY networks and schedule, plus `overrides`."""
    return fsr.FsrTrainParams.model_validate({**raw_section("fsr_train"), **TINY, **overrides, "seed": seed})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_assembled(tmp_path_factory.mktemp("assembled"), scales=SCALES)


@pytest.fixture(scope="module")
def base_model(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    cfg = base.PretrainBaseParams.model_validate({
        **raw_section("pretrain_base"), "seed": 3, "arch_options": {"width": 0.125}, "epochs": 3, "batch_size": 16,
        "lr": 3e-3, "head_lr": 3e-3})
    base.fit_base(cfg, data, out / "base.pt", out / "base.json", SCALES, live_dir=None, resume=None)
    return out / "base.pt"


@pytest.fixture(scope="module")
def trained(data, base_model, tmp_path_factory):
    """One fit_fsr run; records the FER model instance fit_fsr used."""
    out = tmp_path_factory.mktemp("fsr")
    used = []
    real_load = checkpoint.load_model

    def spy(path, device="cpu"):
        model, meta = real_load(path, device)
        used.append(model)
        return model, meta

    cfg = fsr_config(5)
    fsr.checkpoint.load_model = spy
    try:
        report = fsr.fit_fsr(cfg, data, base_model, out / "fsr.pt", out / "fsr.json", SCALES,
                             live_dir=str(out / "live"))
    finally:
        fsr.checkpoint.load_model = real_load
    return {"report": report, "out": out, "fer_used": used[0], "cfg": cfg}


def slim_covpool():
    return nets.build("covpool", 3, in_chans=1, image_size=32, width=0.125, cov_channels=16, embed_dim=32).eval()


def symmetric(n, d):
    a = torch.randn(n, d, d)
    return (a + a.transpose(1, 2)) / 2


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("target", ["covariance", "feature_map", "embedding"])
def test_generator_and_critic_shapes_for_each_target(target):
    model = slim_covpool() if target == "covariance" else \
        nets.build("baseline_cnn", 3, in_chans=1, image_size=32, width=0.125).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        t = target_features(model, x, target)
    expected = {"covariance": (4, 16, 16), "feature_map": (4, 64, 4, 4), "embedding": (4, 256)}[target]
    assert tuple(t.shape) == expected
    generator = FSRGenerator(target, t.shape[1:], blocks=2, channels=8, growth=4, dense_layers=3)
    critic = FSRCritic(target, t.shape[1:], channels=4, hidden=16)
    assert generator(t).shape == t.shape
    assert critic(t).shape == (4,)
    embedding = embedding_from_target(model, generator(t), target)
    assert embedding.shape == (4, model.embedding_dim)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in critic.modules())


def test_covariance_critic_downsamples_a_128_matrix():
    critic = FSRCritic("covariance", (128, 128), channels=4, hidden=8)
    strided = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 5  # 128 -> 64 -> 32 -> 16 -> 8 -> 4
    assert critic(symmetric(2, 128)).shape == (2,)


@pytest.mark.parametrize("target,shape", [("covariance", (12, 12)), ("feature_map", (6, 5, 3)), ("embedding", (20,))])
def test_generator_is_the_identity_at_start_and_can_learn(target, shape):
    generator = FSRGenerator(target, shape, blocks=2, channels=8, growth=4, dense_layers=3)
    x = symmetric(3, shape[0]) if target == "covariance" else torch.randn(3, *shape)
    out = generator(x)
    assert torch.equal(out, x)
    out.pow(2).sum().backward()
    assert generator.tail[-1].weight.grad.abs().sum() > 0  # the zero-initialised layer still learns
    with torch.no_grad():
        generator.tail[-1].bias.add_(0.5)
    moved = generator(x)
    assert not torch.allclose(moved, x)
    if target == "covariance":
        assert torch.allclose(moved, moved.transpose(1, 2))


def test_bad_target_shapes_and_targets_are_errors():
    with pytest.raises(ValueError, match="square"):
        FSRGenerator("covariance", (4, 5))
    with pytest.raises(ValueError, match="one of"):
        FSRCritic("logits", (7,))
    cnn = nets.build("baseline_cnn", 3, in_chans=1, image_size=32, width=0.125)
    with pytest.raises(InputError, match="covpool"):
        check_target(cnn, "covariance")
    assert check_target(cnn, "auto") == "feature_map"
    assert check_target(slim_covpool(), "auto") == "covariance"


def test_wgan_div_penalty_on_a_linear_critic():
    critic = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))  # grad of D is (3, 4) everywhere: norm 5
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    penalty = wgan_div_penalty(lambda x: critic(x).squeeze(1), real, fake, k=2.0, p=6.0)
    assert penalty.item() == pytest.approx(2 * 5 ** 6)
    assert wgan_div_penalty(lambda x: critic(x).squeeze(1), real, fake, k=1.0, p=2.0).item() == pytest.approx(25)
    penalty.backward()  # differentiable w.r.t. the critic: d/dw 2 * |w|^6 = 12 |w|^4 w
    assert torch.allclose(critic.weight.grad, 12 * 5 ** 4 * torch.tensor([[3.0, 4.0]]))


def test_wgan_div_penalty_at_the_interpolates():
    # D(x) = sum(x^2) / 2 has gradient x: with real = 0 the points are alpha * fake.
    real, fake = torch.zeros(5, 3), torch.ones(5, 3)
    gen = torch.Generator().manual_seed(0)
    alpha = torch.rand(5, generator=torch.Generator().manual_seed(0))
    penalty = wgan_div_penalty(lambda x: x.pow(2).sum(1) / 2, real, fake, k=2.0, p=6.0, generator=gen)
    assert penalty.item() == pytest.approx(float(2 * ((3 * alpha ** 2) ** 3).mean()), rel=1e-5)


def test_sample_weights_formula():
    p = torch.tensor([0.0, 0.5, 1.0, 0.9])
    assert torch.allclose(sample_weights(p), torch.tensor([2.25, 1.0, 0.25, 0.36]))
    assert torch.allclose(sample_weights(p, offset=1.0), torch.tensor([1.0, 0.25, 0.0, 0.01]))


# ---------------------------------------------------------------- params


def test_repo_params_validate_and_fer_model_is_not_a_param():
    cfg = config.load_section(REPO / "params.yaml", "fsr_train", fsr.FsrTrainParams)
    assert cfg.reduction in fsr.REDUCTIONS and cfg.reweight_from in fsr.REWEIGHT_FROM
    assert "fer_model" not in fsr.FsrTrainParams.model_fields


@pytest.mark.parametrize("key,value,match", [
    ("reduction", "max", "reduction"), ("reweight_from", "lr", "reweight_from"), ("batch_size", 1, "batch_size"),
    ("betas", [0.5], "betas"), ("scales", ["x4", "4x"], "scales"), ("scales", [], "scales"),
    ("val_scale", "big", "val_scale"), ("epochs", -1, "epochs"), ("target", "logits", "target"),
    ("fer_model", "models/base.pt", "fer_model")])
def test_bad_params_are_refused_before_any_work(key, value, match):
    params = {"seed": 1, "fsr_train": {**raw_section("fsr_train"), key: value}}
    with pytest.raises(ParamsError, match=match):
        config.load_section("params.yaml", "fsr_train", fsr.FsrTrainParams, data=params)


# ---------------------------------------------------------------- training


def test_fit_reads_every_key(trained):
    cfg = trained["cfg"]
    assert config.reads(cfg, "fsr_train") == config.leaves(cfg, "fsr_train")


def test_fer_model_stays_frozen(trained, base_model):
    fer = trained["fer_used"]
    on_disk = checkpoint.load(base_model)["state_dict"]
    state = fer.state_dict()
    assert set(state) == set(on_disk)
    assert all(torch.equal(state[k], on_disk[k]) for k in on_disk)  # BN running stats included
    assert not fer.training
    assert all(not p.requires_grad and p.grad is None for p in fer.parameters())


def test_fit_reduces_feature_mse_on_train_pairs(trained, data, base_model):
    fer, meta = checkpoint.load_model(base_model)
    model = load_fsr(trained["out"] / "fsr.pt", fer_meta=meta)
    hr, _ = shards.load_xy(data, "train")
    hr_t, _ = encode_targets(fer, model.target, hr, meta["mean"], meta["std"])
    for scale in SCALES:
        lr, _ = shards.load_xy(data, "train", scale)
        lr_t, _ = encode_targets(fer, model.target, lr, meta["mean"], meta["std"])
        _, _, sr_mse = super_resolve(fer, model.generator, model.target, lr_t, hr_targets=hr_t)
        lr_mse = float(torch.nn.functional.mse_loss(lr_t, hr_t))
        assert sr_mse < 0.8 * lr_mse, (scale, sr_mse, lr_mse)


def test_model_file_report_and_live_curves(trained, base_model):
    report, out = trained["report"], trained["out"]
    _, base_meta = checkpoint.load_model(base_model)
    meta = checkpoint.load(out / "fsr.pt")["meta"]
    assert meta["target"] == "feature_map" and meta["shape"] == [64, 4, 4]
    assert meta["blocks"] == 1 and meta["channels"] == 16 and meta["seed"] == 5
    assert meta["fer_params_hash"] == base_meta["params_hash"] and meta["fer_model"] == str(base_model)
    assert meta["versions"]["torch"] == str(torch.__version__)
    assert json.loads((out / "fsr.json").read_text()) == json.loads(json.dumps(report))
    assert set(report["test"]) == {"hr", *SCALES}
    for scale in SCALES:
        row = report["test"][scale]
        assert row["feature_mse_sr"] < row["feature_mse_lr"]
        assert 0 <= row["sr"]["accuracy"] <= 1 and row["lr"]["n"] == 24
    assert report["val_scale"] == "x4" and report["val"]["phase"] == 2
    curves = out / "live" / "plots" / "metrics"
    assert len((curves / "val_accuracy.tsv").read_text().splitlines()) == 1 + TINY["pretrain_epochs"] + TINY["epochs"]
    assert (curves / "gradient_penalty.tsv").is_file()


def test_same_seed_same_generator(data, base_model, tmp_path):
    cfg = fsr_config(1, target="embedding", pretrain_epochs=1, epochs=1)
    for name in ("a", "b"):
        fsr.fit_fsr(cfg, data, base_model, tmp_path / f"{name}.pt", tmp_path / f"{name}.json", SCALES, live_dir=None)
    a, b = (checkpoint.load(tmp_path / f"{n}.pt") for n in ("a", "b"))
    assert a["meta"]["target"] == "embedding"
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    assert all(torch.equal(a["critic"][k], b["critic"][k]) for k in a["critic"])
    assert any(not torch.equal(a["generator"][k], FSRGenerator("embedding", [256], **{
        k2: TINY[k2] for k2 in ("blocks", "channels", "growth", "dense_layers")}).state_dict()[k])
        for k in a["generator"])  # it did train


def test_covariance_target_trains_on_a_covpool_model(data, tmp_path):
    model = slim_covpool()
    stats = shards.read_stats(data)
    checkpoint.save_model(tmp_path / "cov.pt", model, {
        "arch": "covpool", "options": {"width": 0.125, "cov_channels": 16, "embed_dim": 32},
        "classes": stats["classes"], "size": 32, "channels": 1, "mean": stats["mean"], "std": stats["std"],
        "params_hash": "covtest"})
    cfg = fsr_config(2, pretrain_epochs=1, epochs=1)
    report = fsr.fit_fsr(cfg, data, tmp_path / "cov.pt", tmp_path / "fsr.pt", tmp_path / "fsr.json", SCALES,
                         live_dir=None)
    assert report["target"] == "covariance"
    fer, meta = checkpoint.load_model(tmp_path / "cov.pt")
    trained_fsr = load_fsr(tmp_path / "fsr.pt", fer_meta=meta)
    assert trained_fsr.meta["shape"] == [16, 16]
    images, _ = shards.load_xy(data, "test", "x4")
    features, logits = fsr_features(fer, trained_fsr, images, meta["mean"], meta["std"])
    assert features.shape == (len(images), 32) and torch.isfinite(features).all()
    assert torch.allclose(logits, fer.head(features), atol=1e-5)


# ---------------------------------------------------------------- applying


def test_identity_fsr_gives_the_plain_features(base_model, data):
    fer, meta = checkpoint.load_model(base_model)
    images, _ = shards.load_xy(data, "test", "x2")
    identity = FSRModel(FSRGenerator("feature_map", [64, 4, 4], blocks=1, channels=8, growth=4, dense_layers=2),
                        None, {"target": "feature_map", "fer_fingerprint": fer_fingerprint(fer),
                               "fer_params_hash": meta["params_hash"], "fer_model": str(base_model),
                               "mean": meta["mean"], "std": meta["std"]})
    features, logits = fsr_features(fer, identity, images, meta["mean"], meta["std"], batch_size=10)
    m, s = stats_tensors(meta["mean"], meta["std"], "cpu")
    with torch.no_grad():
        x = prepare(torch.from_numpy(np.ascontiguousarray(images)), m, s)
        assert torch.allclose(features, fer.features(x), atol=1e-5)
        assert torch.allclose(logits, fer(x), atol=1e-5)
    with pytest.raises(InputError, match="normalisation"):
        fsr_features(fer, identity, images, [0.0], meta["std"])


def test_fsr_refuses_another_fer_model(trained, base_model, data):
    path = trained["out"] / "fsr.pt"
    fer, meta = checkpoint.load_model(base_model)
    model = load_fsr(path)
    images, _ = shards.load_xy(data, "test", "x4")
    features, logits = fsr_features(fer, model, images, meta["mean"], meta["std"])
    assert features.shape == (24, fer.embedding_dim) and logits.shape == (24, 3)
    other, _ = checkpoint.load_model(base_model)
    with torch.no_grad():
        other.head.weight[0, 0] += 1e-3
    with pytest.raises(InputError, match=f"{path}.*other weights"):
        fsr_features(other, model, images, meta["mean"], meta["std"])
    with pytest.raises(InputError, match=f"{path}.*params_hash"):
        load_fsr(path, fer_meta={**meta, "params_hash": "0123456789abcdef"})


def test_stage_script_runs_with_params(data, base_model, tmp_path, monkeypatch):
    params = {"seed": 4, "downsample": {**raw_section("downsample"), "scales": SCALES},
              "fsr_train": {**raw_section("fsr_train"), **TINY, "pretrain_epochs": 1, "epochs": 1,
                            "target": "embedding"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    script = runpy.run_path(str(REPO / "stages" / "fsr_train.py"))  # as a module: main() not run yet
    monkeypatch.chdir(tmp_path)  # relative outputs land here
    monkeypatch.setattr(sys, "argv", ["fsr_train.py", "--params", "params.yaml", "--data", str(data),
                                      "--fer-model", str(base_model), "--out", "fsr.pt", "--report", "r.json",
                                      "--live", "dvclive/fsr_train"])
    assert config.load_section("params.yaml", "downsample", DownsampleParams).scales == SCALES
    script["main"]()
    assert json.loads((tmp_path / "r.json").read_text())["seed"] == 4
    meta = checkpoint.load(tmp_path / "fsr.pt")["meta"]
    assert meta["target"] == "embedding" and meta["fer_model"] == str(base_model)
    assert (tmp_path / "dvclive" / "fsr_train" / "metrics.json").is_file()
    params["fsr_train"]["blocs"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="blocs"):
        script["main"]()


def test_classify_applies_fsr_to_low_resolution_faces_only(trained, base_model, data, tmp_path):
    from mrfer.eval import classify
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(base_model, models / "base.pt")
    shutil.copy(trained["out"] / "fsr.pt", models / "fsr.pt")
    cfg = classify.ClassifyParams.model_validate({**raw_section("classify"), "models": ["base", "base+fsr"],
                                                  "classifiers": ["head", "svc"], "seed": 0})
    classify.classify(cfg, data, models, SCALES, tmp_path / "c.json", tmp_path / "c.md", tmp_path / "curves",
                      tmp_path / "p.npz")
    saved = np.load(tmp_path / "p.npz")
    # at full resolution +fsr is the FER model itself, and the SVC is fitted on the same plain HR
    # features (FSR-FER's protocol), so every HR prediction is the base model's
    for clf in ("head", "svc"):
        assert np.array_equal(saved[f"base+fsr/hr/{clf}"], saved[f"base/hr/{clf}"])
    assert np.array_equal(saved["base+fsr/hr/features"], saved["base/hr/features"])
    # at a low resolution the generator changes the features
    images, _ = shards.load_xy(data, "test", "x4")
    plain = classify.Embedder("base", models, torch.device("cpu"), 64)(images, "x4")[0]
    super_resolved = classify.Embedder("base+fsr", models, torch.device("cpu"), 64)(images, "x4")[0]
    assert not np.allclose(plain, super_resolved)
