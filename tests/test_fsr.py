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
from mrfer.data import lineage, lowres, shards
from mrfer.data.scales import DownsampleParams
from mrfer.errors import InputError, ParamsError
from mrfer.infer_fsr import encode_targets, fsr_features
from mrfer.nets.fsr import (NETWORK_DEFAULTS, FSRCritic, FSRGenerator, FSRModel, InferenceBatchNorm, SameConv2d,
                            check_target, embedding_from_target, fer_fingerprint, load_fsr, sample_weights,
                            super_resolve, target_features, tf_he_normal_, wgan_div_penalty)
from mrfer.nets import checkpoint
from mrfer.train import base, fsr
from mrfer.transforms import prepare, stats_tensors
from params_fixture import section

REPO = Path(__file__).resolve().parents[1]
SCALES = ["x2", "x4"]
TINY = {"blocks": 1, "channels": 16, "growth": 8, "dense_layers": 3, "critic_channels": 8, "critic_hidden": 32,
        "pretrain_epochs": 3, "epochs": 1, "batch_size": 16, "pretrain_lr": 2e-3, "lr": 1e-4}
PRESET = REPO / "configs" / "fsrfer-rafdb.yaml"
# the preset's published keys that are not sizes or schedules
PUBLISHED_KEYS = ("input_skip", "tail_kernel", "init", "init_scale", "dense_norm", "symmetrize", "critic_layout",
                  "pretrain_reduction", "div_norm", "classifier_target", "reweight_grad", "flip", "pairing")


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
    cfg = section("pretrain_base", base.PretrainBaseParams, seed=3, init="scratch", arch_options={"width": 0.125},
                  epochs=3, batch_size=16, lr=3e-3, head_lr=3e-3)
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


SLIM_COVPOOL = {"variant": "mrfer_small", "width": 0.125, "cov_channels": 16, "bimap_dim": 16, "embed_dim": 32}


def slim_covpool():
    return nets.build("covpool", 3, in_chans=1, image_size=32, **SLIM_COVPOOL).eval()


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
        lr, _ = lowres.load_xy(data, "train", scale)
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
        "arch": "covpool", "options": SLIM_COVPOOL,
        "classes": stats["classes"], "size": 32, "channels": 1, "mean": stats["mean"], "std": stats["std"],
        "params_hash": "covtest", "lineage": lineage.to_meta(lineage.assembled(data, ["train", "val"]))})
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
    classify.classify(cfg, data, models, SCALES, "bicubic_aa", tmp_path / "c.json", tmp_path / "c.md", tmp_path / "curves",
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


# ---------------------------------------------------------------- FSR-FER as published (issue 15)


def published_generator(shape=(16, 16), **overrides) -> FSRGenerator:
    options = {"blocks": 2, "channels": 8, "growth": 4, "dense_layers": 3, "input_skip": False, "tail_kernel": 8,
               "init": "fsrfer", "init_scale": 0.1, "dense_norm": "frozen_bn", "symmetrize": False, **overrides}
    return FSRGenerator("covariance", shape, **options)


def test_published_generator_structure():
    generator = published_generator()
    # tail: two 8x8 convs, to 32 -> here 8 channels, then to the one channel of the covariance image
    assert [m.kernel_size for m in generator.tail if isinstance(m, torch.nn.Conv2d)] == [(8, 8), (8, 8)]
    assert generator.tail[-1].out_channels == 1 and isinstance(generator.tail[0], SameConv2d)
    x = torch.randn(3, 16, 16)
    assert generator(x).shape == x.shape  # TF 'same' padding keeps the size
    # no skip from the input: with the last layer zeroed the output is zero, not x
    with torch.no_grad():
        generator.tail[-1].weight.zero_()
        generator.tail[-1].bias.zero_()
    assert torch.equal(generator(x), torch.zeros_like(x))
    # each dense-block conv is followed by its batch norm as TF ran it
    block = generator.body[0].body[0]
    assert len(block.norms) == len(block.layers) == 3
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in generator.modules())
    # the default layout is unchanged: identity skip, 3x3 tail, no norms
    default = FSRGenerator("covariance", (16, 16), blocks=2, channels=8, growth=4, dense_layers=3)
    assert default.tail[0].kernel_size == (3, 3) and default.body[0].body[0].norms is None
    assert torch.allclose(default(x), (x + x.transpose(1, 2)) / 2)  # the identity, symmetrised


def test_published_init_scales_every_generator_variable_by_a_tenth():
    torch.manual_seed(7)
    scaled = published_generator(init_scale=0.1)
    torch.manual_seed(7)
    unscaled = published_generator(init_scale=1.0)
    for (name, a), (_, b) in zip(scaled.named_parameters(), unscaled.named_parameters()):
        assert torch.allclose(a, 0.1 * b), name
    conv = scaled.body[0].body[0].layers[1]
    fresh = unscaled.body[0].body[0].layers[1].weight
    assert (conv.weight.std() / fresh.std()).item() == pytest.approx(0.1, rel=1e-5)
    assert torch.allclose(scaled.body[0].body[0].norms[0].weight, torch.full((4,), 0.1))  # gains too
    # the unscaled init is TF's he_normal: sd sqrt(2 / fan_in), truncated at 2 sd of its parameter
    big = torch.empty(256, 64, 3, 3)
    tf_he_normal_(big)
    std = (2 / (64 * 9)) ** 0.5
    assert big.std().item() == pytest.approx(std, rel=0.02)
    assert big.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-6


def test_inference_batch_norm_and_tf_same_padding():
    norm = InferenceBatchNorm(2)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 3.0]))
        norm.bias.copy_(torch.tensor([1.0, -1.0]))
    x = torch.randn(4, 2, 5, 5)
    expected = x * torch.tensor([2.0, 3.0]).view(1, 2, 1, 1) / 1.001 ** 0.5 + torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    assert torch.allclose(norm(x), expected)
    conv = SameConv2d(2, 3, 8)
    y = torch.randn(1, 2, 11, 10)
    # TF pads an even kernel's odd pixel after: (3 before, 4 after)
    assert torch.allclose(conv(y), torch.nn.functional.conv2d(torch.nn.functional.pad(y, (3, 4, 3, 4)),
                                                              conv.weight, conv.bias), atol=1e-6)
    strided = SameConv2d(2, 2, 4, stride=2, bias=False)
    assert strided(torch.randn(1, 2, 5, 7)).shape[-2:] == (3, 4)  # ceil(size / 2)


def test_published_critic_layout():
    critic = FSRCritic("covariance", (128, 128), channels=8, hidden=100, layout="fsrfer")
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64, 64, 64]
    assert all(c.bias is None for c in convs)
    assert sum(c.stride == (2, 2) for c in convs) == 5
    assert critic.score[0].in_features == 4 * 4 * 64 and critic.score[0].out_features == 100
    assert critic(symmetric(2, 128)).shape == (2,)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in critic.modules())


def test_penalty_reductions_by_hand():
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # D(x) = sum(W * x): the gradient is W for every sample
    critic = lambda x: (x * weight).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(5, 2, 2), torch.randn(5, 2, 2)
    # paper: ||W||^2 = 1 + 4 + 9 + 16 = 30, so 2 * 30^3
    assert wgan_div_penalty(critic, real, fake, 2.0, 6.0, norm="sample").item() == pytest.approx(2 * 30 ** 3)
    # code: sum over the rows (TF axis 1) per column: 1 + 9 = 10 and 4 + 16 = 20; 2 * mean(10^3, 20^3)
    assert wgan_div_penalty(critic, real, fake, 2.0, 6.0, norm="column").item() == pytest.approx(9000)
    # a feature map (N, C, h, w): the rows are h, one value per channel and column
    fmap_critic = lambda x: (x * weight).flatten(1).sum(1)  # noqa: E731
    fmap = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    assert wgan_div_penalty(fmap_critic, *fmap, 2.0, 6.0, norm="column").item() == pytest.approx(9000)
    # a vector: one column, the two norms agree
    linear = lambda x: x @ torch.tensor([3.0, 4.0])  # noqa: E731
    vectors = torch.randn(4, 2), torch.randn(4, 2)
    assert wgan_div_penalty(linear, *vectors, norm="column").item() == pytest.approx(2 * 25 ** 3)


def test_weights_keep_their_gradient_when_not_detached(base_model):
    fer_model, meta = checkpoint.load_model(base_model)
    fer_model.eval().requires_grad_(False)
    frozen = fsr.FrozenFER(fer_model, "embedding", (meta["mean"], meta["std"]), 3, torch.device("cpu"), False, 64,
                           "logits")
    dim = fer_model.embedding_dim
    critic = FSRCritic("embedding", [dim], channels=4, hidden=8)
    with torch.no_grad():  # a constant critic: the adversarial term's only gradient is through the weights
        for p in critic.parameters():
            p.zero_()
        critic.score[-1].bias.fill_(1.0)
    critic.requires_grad_(False)
    lr_t, hr_t = torch.randn(6, dim), torch.randn(6, dim)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    grads = {}
    for keep in (False, True):
        torch.manual_seed(0)
        generator = FSRGenerator("embedding", [dim], blocks=1, channels=8, growth=4, dense_layers=2)
        with torch.no_grad():
            generator.tail[-1].weight.normal_()  # so the output depends on the generator's weights
        cfg = fsr_config(0, reweight_grad=keep, adversarial_weight=1.0, feature_weight=0.0, classifier_weight=0.0)
        optimizer = torch.optim.SGD(generator.parameters(), lr=0.0)
        hr_out, _ = frozen.outputs(hr_t)
        fsr.generator_step(generator, critic, optimizer, frozen, hr_t, hr_out, lr_t, labels, torch.ones(6), cfg)
        grads[keep] = generator.tail[-1].weight.grad.abs().sum().item()
    assert grads[False] == 0.0
    assert grads[True] > 0.0


def test_classifier_term_compares_logits_embedding_or_covpools_fc128(data, tmp_path):
    model = nets.build("covpool", 3, in_chans=1, image_size=32, width=0.125, cov_channels=16, hidden_dim=40,
                       embed_dim=12).eval()
    t = model.covariance(torch.randn(2, 1, 32, 32))
    outputs = {}
    for compare in ("logits", "embedding", "hidden"):
        frozen = fsr.FrozenFER(model, "covariance", ([0.0], [1.0]), 3, torch.device("cpu"), False, 8, compare)
        outputs[compare], logits = frozen.outputs(t)
        assert torch.allclose(logits, model.head(model.features_from_covariance(t)))
    assert torch.equal(outputs["logits"], logits)  # the CPU default
    assert torch.allclose(outputs["embedding"], model.features_from_covariance(t))
    assert outputs["hidden"].shape == (2, 12)  # fc 128 (here 12) after its BN, before the ReLU: FSR-FER's net_f
    assert torch.allclose(outputs["hidden"], model.hidden_from_covariance(t))
    # the fc-128 layer exists only on a covpool net's covariance target
    stats = shards.read_stats(data)
    cnn = nets.build("baseline_cnn", 3, in_chans=1, image_size=32, width=0.125)
    checkpoint.save_model(tmp_path / "cnn.pt", cnn, {
        "arch": "baseline_cnn", "options": {"width": 0.125}, "classes": stats["classes"], "size": 32, "channels": 1,
        "mean": stats["mean"], "std": stats["std"], "params_hash": "cnn"})
    with pytest.raises(InputError, match="hidden"):
        fsr.load_frozen(tmp_path / "cnn.pt", fsr_config(0, classifier_target="hidden"), torch.device("cpu"))


def test_all_scales_pairing_yields_every_pair_once_per_epoch():
    n, scales = 6, 3
    hr = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 1)).copy()
    lr = [hr + np.uint8(100 + 10 * s) for s in range(scales)]
    labels = np.arange(n) % 3
    sampler = fsr.PairSampler(hr, lr, labels, 4, False, torch.device("cpu"), seed=0, all_scales=True)
    assert len(sampler) == n * scales // 4
    exact = fsr.PairSampler(hr, lr, labels, 6, False, torch.device("cpu"), seed=0, all_scales=True)
    expected = {(row, 100 + 10 * s + row) for row in range(n) for s in range(scales)}
    for _ in range(2):  # each epoch, in a new order
        pairs = []
        for hr_b, lr_b, y_b in exact:
            pairs += list(zip(hr_b[:, 0, 0, 0].tolist(), lr_b[:, 0, 0, 0].tolist()))
            assert torch.equal(y_b, torch.as_tensor(labels)[hr_b[:, 0, 0, 0].long()])
        assert len(pairs) == n * scales and set(pairs) == expected
    one_each = fsr.PairSampler(hr, lr, labels, 3, False, torch.device("cpu"), seed=0, all_scales=False)
    rows = [r for hr_b, _, _ in one_each for r in hr_b[:, 0, 0, 0].tolist()]
    assert len(one_each) == 2 and sorted(rows) == list(range(n))  # today's: each row once, at one scale


def test_learning_rate_schedules_follow_tensorflow():
    cfg = fsr_config(0, pretrain_lr=2e-4, pretrain_lr_halve_every=20000)
    # tf.train.exponential_decay(2e-4, step, 20000, 0.5, staircase=True)
    for step, factor in ((0, 1), (19999, 1), (20000, 0.5), (39999, 0.5), (40000, 0.25)):
        assert fsr.pretrain_rate(cfg, step) == pytest.approx(2e-4 * factor)
    assert fsr.pretrain_rate(fsr_config(0, pretrain_lr=2e-4), 10 ** 6) == 2e-4  # 0: constant (the CPU default)
    # tf.train.piecewise_constant with FSR-FER's boundaries and values
    boundaries, lr = [10000, 20000, 50000, 100000, 200000], 2e-5
    values = [lr, lr, lr * 0.5, lr * 0.5, lr * 0.25, lr * 0.125]
    for step in (0, 9999, 10000, 10001, 20000, 20001, 50001, 100000, 100001, 200000, 200001, 10 ** 6):
        tf_value = values[sum(step > b for b in boundaries)]
        assert fsr.gan_rate(lr, step, [20000, 100000, 200000]) == pytest.approx(tf_value), step
    assert fsr.gan_rate(lr, 10 ** 6, []) == lr


def test_fit_with_the_published_settings(data, tmp_path, monkeypatch):
    """Every published option at once, on a slim CovPoolFER as published (covariance target, fc 128)."""
    published = yaml.safe_load(PRESET.read_text())["fsr_train"]
    stats = shards.read_stats(data)
    options = {"width": 0.125, "cov_channels": 16, "hidden_dim": 40, "embed_dim": 12}
    torch.manual_seed(0)
    covpool = nets.build("covpool", 3, in_chans=1, image_size=32, **options)
    checkpoint.save_model(tmp_path / "cov.pt", covpool, {
        "arch": "covpool", "options": options, "classes": stats["classes"], "size": 32, "channels": 1,
        "mean": stats["mean"], "std": stats["std"], "params_hash": "published",
        "lineage": lineage.to_meta(lineage.assembled(data, ["train", "val"]))})
    cfg = fsr_config(3, **{k: published[k] for k in PUBLISHED_KEYS}, target=published["target"], pretrain_epochs=1,
                     epochs=1, pretrain_lr_halve_every=2, lr_halve_after=[1, 3])
    assert cfg.classifier_target == "hidden" and cfg.target == "covariance"
    rates = []
    real_set_rate = fsr.set_rate
    monkeypatch.setattr(fsr, "set_rate", lambda opt, lr: (rates.append(lr), real_set_rate(opt, lr)))
    report = fsr.fit_fsr(cfg, data, tmp_path / "cov.pt", tmp_path / "fsr.pt", tmp_path / "fsr.json", SCALES,
                         live_dir=None)
    assert all(np.isfinite(report["val"][k]) for k in ("g_loss", "d_loss", "gradient_penalty"))
    steps = 72 * len(SCALES) // 16  # every (row, scale) pair once an epoch
    pretrain = [TINY["pretrain_lr"] * 0.5 ** (i // 2) for i in range(steps)]
    gan = [r for i in range(steps) for r in [TINY["lr"] * 0.5 ** sum(i > b for b in (1, 3))] * 2]  # G, then D
    assert rates == pytest.approx(pretrain + gan)
    meta = checkpoint.load(tmp_path / "fsr.pt")["meta"]
    options = {k: meta["config"].get(k, default) for k, default in NETWORK_DEFAULTS.items()}
    assert options == {k: published[k] for k in NETWORK_DEFAULTS}
    assert set(NETWORK_DEFAULTS) <= set(meta["config"])  # every option named, defaults included
    _, fer_meta = checkpoint.load_model(tmp_path / "cov.pt")
    model = load_fsr(tmp_path / "fsr.pt", fer_meta=fer_meta)  # rebuilt from the options in its meta
    assert not model.generator.input_skip and model.generator.tail[0].kernel_size == (8, 8)
    assert isinstance(model.critic.features[0], SameConv2d)


def test_the_fsr_file_names_every_network_option():
    cfg = config.load_section(REPO / "params.yaml", "fsr_train", fsr.FsrTrainParams)
    assert set(fsr.network_config(cfg)) == {"blocks", "channels", "growth", "dense_layers", "residual_scale",
                                            "critic_channels", "critic_hidden", *NETWORK_DEFAULTS}
    changed = fsr.network_config(fsr_config(cfg.seed, tail_kernel=8))
    assert changed["tail_kernel"] == 8


@pytest.mark.parametrize("overrides,match", [
    ({"pairing": "every"}, "pairing"), ({"div_norm": "rows"}, "div_norm"), ({"lr_halve_after": [200, 100]}, "increasing"),
    ({"lr_halve_after": [0]}, "lr_halve_after"), ({"tail_kernel": 0}, "tail_kernel"), ({"init": "he"}, "init"),
    ({"dense_norm": "bn"}, "dense_norm"), ({"critic_layout": "esrgan"}, "critic_layout"),
    ({"classifier_target": "probs"}, "classifier_target"), ({"pretrain_lr_halve_every": -1}, "pretrain_lr_halve_every"),
    ({"reweight_grad": True, "reweight_from": "hr"}, "reweight_grad")])
def test_bad_published_options_are_refused(overrides, match):
    params = {"seed": 1, "fsr_train": {**raw_section("fsr_train"), **overrides}}
    with pytest.raises(ParamsError, match=match):
        config.load_section("params.yaml", "fsr_train", fsr.FsrTrainParams, data=params)


class FitSpy:
    """Records what an sklearn pipeline is fitted and asked to predict on."""

    def __init__(self, model, log: list):
        self.model, self.log = model, log

    def fit(self, x, y):
        self.log.append(("fit", np.asarray(x), np.asarray(y)))
        self.model.fit(x, y)
        return self

    def predict(self, x):
        self.log.append(("predict", np.asarray(x), None))
        return self.model.predict(x)


@pytest.mark.parametrize("fit", ["hr", "scales"])
def test_published_classifier_protocol_fits_on_super_resolved_train_faces(trained, base_model, data, tmp_path,
                                                                          monkeypatch, fit):
    from mrfer.eval import classify
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(base_model, models / "base.pt")
    shutil.copy(trained["out"] / "fsr.pt", models / "fsr.pt")
    calls = []
    real_make = classify.classifiers.make
    monkeypatch.setattr(classify.classifiers, "make", lambda name, seed: FitSpy(real_make(name, seed), calls))
    cfg = classify.ClassifyParams.model_validate({**raw_section("classify"), "models": ["base+fsr"],
                                                  "classifiers": ["svc_fsrfer"], "fsrfer_fit": fit, "seed": 0})
    classify.classify(cfg, data, models, SCALES, "bicubic_aa", tmp_path / "c.json", tmp_path / "c.md", tmp_path / "curves",
                      tmp_path / "p.npz")
    fer, meta = checkpoint.load_model(base_model)
    model = load_fsr(models / "fsr.pt", fer_meta=meta)
    fit_scales = ["hr"] if fit == "hr" else SCALES
    expected_x, expected_y = [], []
    for scale in fit_scales:  # the embedding (CovPoolFER: 7-d bottleneck) of G(f(train faces)), HR included
        images, labels = lowres.load_xy(data, "train", scale)
        expected_x.append(fsr_features(fer, model, images, meta["mean"], meta["std"])[0].numpy())
        expected_y.append(labels)
    fits = [c for c in calls if c[0] == "fit"]
    assert len(fits) == 1
    assert np.allclose(fits[0][1], np.concatenate(expected_x), atol=1e-5)
    assert np.array_equal(fits[0][2], np.concatenate(expected_y))
    plain = infer_features(fer, meta, shards.load_xy(data, "train")[0])
    assert not np.allclose(fits[0][1][:len(plain)], plain, atol=1e-3)  # not the plain HR features (today's svc)
    # tested on G(f(test faces)) at every scale, full resolution included
    predicts = [c[1] for c in calls if c[0] == "predict"]
    for scale, x in zip(["hr", *SCALES], predicts):
        images, _ = shards.load_xy(data, "test", scale)
        assert np.allclose(x, fsr_features(fer, model, images, meta["mean"], meta["std"])[0].numpy(), atol=1e-5)


def test_published_classifier_protocol_on_a_plain_model_fits_on_hr(base_model, data, tmp_path, monkeypatch):
    from mrfer.eval import classify
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(base_model, models / "base.pt")
    calls = []
    real_make = classify.classifiers.make
    monkeypatch.setattr(classify.classifiers, "make", lambda name, seed: FitSpy(real_make(name, seed), calls))
    cfg = classify.ClassifyParams.model_validate({**raw_section("classify"), "models": ["base"],
                                                  "classifiers": ["svc_fsrfer"], "fsrfer_fit": "scales", "seed": 0})
    results = classify.classify(cfg, data, models, SCALES, "bicubic_aa", tmp_path / "c.json", tmp_path / "c.md",
                                tmp_path / "curves", tmp_path / "p.npz")
    fer, meta = checkpoint.load_model(base_model)
    hr, _ = shards.load_xy(data, "train")
    assert np.allclose(calls[0][1], infer_features(fer, meta, hr), atol=1e-5)  # classify_FER.py's HR SVC
    assert set(results["base"]["x4"]) == {"svc_fsrfer"}
    assert "| base | svc_fsrfer |" in (tmp_path / "c.md").read_text()


def infer_features(fer, meta, images) -> np.ndarray:
    from mrfer.infer import infer
    return infer(fer, images, meta["mean"], meta["std"], what="features").numpy()


def test_no_validation_split_trains_on_the_whole_training_split(tmp_path):
    """FSR-FER (and CovPoolFER) train on the whole training set: with no val rows the FER net
    keeps its last epoch and fsr-train runs its epochs unvalidated."""
    data = make_assembled(tmp_path / "whole", n_per_class=(24, 0, 8), scales=SCALES)
    cfg = section("pretrain_base", base.PretrainBaseParams, seed=3, init="scratch", arch_options={"width": 0.125},
                  epochs=2, batch_size=16, restore_best=False, scheduler="none")
    result = base.fit_base(cfg, data, tmp_path / "base.pt", tmp_path / "base.json", SCALES, live_dir=None,
                           resume=None)
    assert result["epochs_run"] == 2 and "val_accuracy" not in result["val"]
    report = fsr.fit_fsr(fsr_config(5, pretrain_epochs=1, epochs=1), data, tmp_path / "base.pt",
                         tmp_path / "fsr.pt", tmp_path / "fsr.json", SCALES, live_dir=None)
    assert report["val"]["phase"] == 2 and not any(k.startswith("val_") for k in report["val"])
    assert set(report["test"]) == {"hr", *SCALES}
