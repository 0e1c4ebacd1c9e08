import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from assembled_fixture import make_assembled
from mrfer.nets import build, checkpoint
from mrfer.train import base, distill, losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import Augment, affine_grid, augment, prepare, random_scales, stats_tensors
from params_fixture import section

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_assembled(tmp_path_factory.mktemp("assembled"))


TINY_BASE = {"seed": 3, "init": "scratch", "arch_options": {"width": 0.125}, "epochs": 3, "batch_size": 16, "lr": 3e-3, "head_lr": 3e-3}
NEW_KEYS = {"p": 1.0, "fill": "border", "interpolation": "bilinear", "pipeline": "mrfer", "crop": None,
            "gray": None, "cutout": None, "elastic": None}   # the augment keys that default to no change
MILD = {"flip": True, "rotate": 4.0, "scale": 0.04, "translate": 0.04, "brightness": 0.1, "contrast": 0.1, **NEW_KEYS}
OFF = {"flip": False, "rotate": 0.0, "scale": 0.0, "translate": 0.0, "brightness": 0.0, "contrast": 0.0, **NEW_KEYS}


def tiny_cfg(**overrides):
    return section("pretrain_base", base.PretrainBaseParams, **{**TINY_BASE, **overrides})


def run_base(data, out_dir, cfg=None, live_dir=None, **kw):
    out_dir = Path(out_dir)
    return base.fit_base(cfg or tiny_cfg(), data, out_dir / "base.pt", out_dir / "base.json", ["x2", "x4"],
                         live_dir=live_dir, resume=out_dir / "resume.pt", **kw)


def curve(live_dir, metric="val_accuracy"):
    """(step, value) rows of a dvclive curve (its timestamps differ between runs)."""
    rows = (Path(live_dir) / "plots" / "metrics" / f"{metric}.tsv").read_text().splitlines()[1:]
    return [tuple(row.split("\t")[1:]) for row in rows]


def weights(path):
    return checkpoint.load(path)["state_dict"]


def test_base_learns_and_writes_model_with_metadata(data, tmp_path):
    report = run_base(data, tmp_path, tiny_cfg(epochs=6))
    assert report["test"]["hr"]["accuracy"] > 0.6  # 3 classes: chance is 0.33
    assert set(report["test"]) == {"hr", "x2", "x4"}
    model, meta = checkpoint.load_model(tmp_path / "base.pt")
    assert meta["arch"] == "baseline_cnn" and meta["classes"] == ["angry", "happy", "neutral"]
    assert meta["size"] == 32 and meta["channels"] == 1 and meta["versions"]["torch"] == str(torch.__version__)
    assert not (tmp_path / "resume.pt").exists()  # removed once finished
    assert json.loads((tmp_path / "base.json").read_text())["params_hash"] == meta["params_hash"]


def test_same_seed_same_metrics_and_weights(data, tmp_path):
    a, b = run_base(data, tmp_path / "a"), run_base(data, tmp_path / "b")
    assert a == b
    wa, wb = weights(tmp_path / "a" / "base.pt"), weights(tmp_path / "b" / "base.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = run_base(data, tmp_path / "c", tiny_cfg(seed=4))
    wc = weights(tmp_path / "c" / "base.pt")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


# CovPoolFER's recipe: the centre loss's centres, the per-group decay and the piecewise lr resume too
COVPOOLFER_RECIPE = {"adam_eps": 0.1, "decay_on": "weights", "scheduler": "piecewise",
                     "piecewise": {"epochs": [2], "factors": [0.5]},
                     "center_loss": {"weight": 0.01, "update": "optimizer", "alpha": 0.9}}


@pytest.mark.parametrize("recipe", [{}, COVPOOLFER_RECIPE], ids=["default", "covpoolfer"])
def test_killed_run_resumes_to_identical_weights(data, tmp_path, monkeypatch, recipe):
    cfg = tiny_cfg(**recipe)
    run_base(data, tmp_path / "straight", cfg, live_dir=str(tmp_path / "straight" / "live"))
    real_save, calls = checkpoint.save, []

    def save_then_die(path, payload):
        real_save(path, payload)
        calls.append(path)
        if len(calls) == 2:  # killed after epoch 2's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    live = tmp_path / "killed" / "live"
    with pytest.raises(KeyboardInterrupt):
        run_base(data, tmp_path / "killed", cfg, live_dir=str(live))
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.load(tmp_path / "killed" / "resume.pt")["state"]["epoch"] == 2
    assert not (tmp_path / "killed" / "base.pt").exists()
    shutil.rmtree(live)  # as DVC does with a stage's outputs before running it again
    run_base(data, tmp_path / "killed", cfg, live_dir=str(live))
    ws, wk = weights(tmp_path / "straight" / "base.pt"), weights(tmp_path / "killed" / "base.pt")
    assert all(torch.equal(ws[k], wk[k]) for k in ws)
    # the training curves hold every epoch once, as if the run had never stopped
    straight = curve(tmp_path / "straight" / "live")
    assert len(straight) == 3 and curve(live) == straight
    assert curve(live, "train_loss") == curve(tmp_path / "straight" / "live", "train_loss")


def test_checkpoint_with_other_params_is_not_resumed(data, tmp_path, caplog):
    run_base(data, tmp_path / "ref")
    other = tmp_path / "other"
    other.mkdir()
    checkpoint.save(other / "resume.pt", {"run_hash": "someone-else", "state": {"epoch": 2}})
    with caplog.at_level(logging.WARNING):
        run_base(data, other)
    assert "checkpoint from other params" in caplog.text
    wr, wo = weights(tmp_path / "ref" / "base.pt"), weights(other / "base.pt")
    assert all(torch.equal(wr[k], wo[k]) for k in wr)


def test_cross_resolution_loss_trains_only_the_student(data, tmp_path):
    run_base(data, tmp_path)
    student, _ = checkpoint.load_model(tmp_path / "base.pt")
    teacher, _ = checkpoint.load_model(tmp_path / "base.pt")
    teacher.requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x_hr = torch.randn(4, 1, 32, 32)
    x_lr = torch.randn(4, 1, 32, 32)
    student.train()
    loss, logits = losses.cross_resolution_loss(loop.WithFeatures(student), teacher, x_hr, x_lr,
                                                  torch.tensor([0, 1, 2, 0]), weight=1.0)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # weight 0 leaves plain cross-entropy; a positive weight adds the (non-negative) feature term
    ce, _ = losses.cross_resolution_loss(loop.WithFeatures(student), teacher, x_hr, x_lr,
                                           torch.tensor([0, 1, 2, 0]), weight=0.0)
    assert loss.item() > ce.item()


def test_distill_runs_both_steps(data, tmp_path):
    run_base(data, tmp_path)
    cfg = section("distill", distill.DistillParams, seed=3, step1_epochs=2, step2_epochs=1,
                  batch_size=16, scales=None)
    report = distill.fit_distill(cfg, data, tmp_path / "base.pt", tmp_path / "mr.pt", tmp_path / "mr.json",
                                 ["x2", "x4"], "bicubic_aa", live_dir=str(tmp_path / "live"),
                                 resume_dir=tmp_path / "resume")
    assert set(report["val"]) == {"step1", "step2"}
    _, meta = checkpoint.load_model(tmp_path / "mr.pt")
    assert meta["stage"] == "distill" and meta["train_scales"] == ["x2", "x4"]
    curve = (tmp_path / "live" / "step1" / "plots" / "metrics" / "val_accuracy.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "val_accuracy"] and len(curve) == 3


def test_probability_schedule():
    assert [round(distill.probability(e, 0.2, 0.8, 4), 3) for e in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert distill.probability(3, 0.5, None, 4) == 0.5


def test_loader_covers_every_sample_once_and_shards_disjointly():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    labels = np.arange(10)
    seen = [int(y) for _, yb in ArrayLoader(images, labels, 3, torch.device("cpu"), drop_last=False, seed=1) for y in yb]
    assert sorted(seen) == list(range(10))
    ranks = [[int(y) for _, yb in ArrayLoader(images, labels, 2, torch.device("cpu"), drop_last=False, seed=1,
                                              rank=r, world_size=2) for y in yb] for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == list(range(10))
    assert len(ArrayLoader(images, labels, 3, torch.device("cpu"))) == 3


def test_augment_is_seeded_and_bounded():
    x = torch.randint(0, 256, (8, 32, 32, 1), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    a = augment(x, Augment(**MILD), torch.Generator().manual_seed(0))
    b = augment(x, Augment(**MILD), torch.Generator().manual_seed(0))
    c = augment(x, Augment(**MILD), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (8, 1, 32, 32) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 255
    assert torch.allclose(augment(x, Augment(**OFF), torch.Generator()), x.permute(0, 3, 1, 2).float(), atol=1e-3)


def test_augment_brightness_and_contrast_pivot_on_the_face_mean():
    x = torch.randint(50, 200, (16, 8, 8, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    photometric = OFF | {"contrast": 0.5}
    out = augment(x, Augment(**photometric), torch.Generator().manual_seed(0))
    face_mean = x.float().mean(dim=(1, 2, 3))
    assert torch.allclose(out.mean(dim=(1, 2, 3)), face_mean, atol=1e-3)  # contrast keeps the mean
    spread = out.std(dim=(1, 2, 3)) / x.float().std(dim=(1, 2, 3))
    assert spread.min() >= 0.5 - 1e-4 and spread.max() <= 1.5 + 1e-4 and spread.std() > 0.05
    bright = augment(x, Augment(**photometric | {"contrast": 0.0, "brightness": 0.1}), torch.Generator().manual_seed(0))
    shift = (bright - x.permute(0, 3, 1, 2).float()).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-3)  # one offset per face
    assert shift.abs().max() <= 25.5 + 1e-3 and shift[:, 0].std() > 1


def test_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    for size in [(7, 9), (32, 32)]:
        expected = torch.nn.functional.affine_grid(theta, [5, 1, *size], align_corners=False)
        assert torch.allclose(affine_grid(theta, size), expected, atol=1e-5)


def test_prepare_normalises_and_degrades():
    batch = torch.full((4, 8, 8, 1), 100, dtype=torch.uint8)
    mean, std = stats_tensors([100.0], [20.0], "cpu")
    assert torch.allclose(prepare(batch, mean, std), torch.zeros(4, 1, 8, 8), atol=1e-6)
    picks = random_scales(1000, ["x2", "x4"], 0.3, torch.Generator().manual_seed(0))
    assert 0.25 < sum(p is not None for p in picks) / 1000 < 0.35
    assert {p for p in picks if p} == {"x2", "x4"}


@pytest.mark.parametrize("recipe", [{}, COVPOOLFER_RECIPE], ids=["default", "covpoolfer"])
def test_ddp_two_processes_on_cpu(data, tmp_path, recipe):
    """Two gloo processes train one model; with the centre loss on, its centres are part of the
    DDP module (DDP refuses a step where a registered parameter got no gradient)."""
    params = tmp_path / "params.yaml"
    pretrain_base = {k: v for k, v in tiny_cfg(epochs=2, device="cpu", **recipe).model_dump(by_alias=True).items()
                     if k != "seed"}
    params.write_text(json.dumps({"seed": 3, "downsample": {"scales": ["x2", "x4"], "kernel": "bicubic_aa", "chunk": 64},
                                  "pretrain_base": pretrain_base}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "stages" / "pretrain_base.py"), "--params", str(params), "--data", str(data),
         "--init", str(tmp_path / "unused_face.pt"), "--out", str(tmp_path / "ddp.pt"), "--report", str(tmp_path / "ddp.json"), "--live", str(tmp_path / "live"),
         "--resume", str(tmp_path / "resume.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "ddp.json").read_text())
    assert report["test"]["hr"]["n"] == 24
    _, meta = checkpoint.load_model(tmp_path / "ddp.pt")
    assert meta["arch"] == "baseline_cnn"


def test_centres_are_registered_with_the_module_ddp_wraps():
    model = build("baseline_cnn", num_classes=3, in_chans=1, image_size=32, width=0.125)
    center = losses.CenterLoss(3, model.embedding_dim, update="optimizer")
    net = loop.WithFeatures(model, center)
    assert any(p is center.centers for p in net.parameters())   # DDP all-reduces their gradients
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in model.parameters()) + 3 * model.embedding_dim
    moving = losses.CenterLoss(3, model.embedding_dim, update="moving")
    assert any(b is moving.centers for b in loop.WithFeatures(model, moving).buffers())   # DDP broadcasts buffers


def test_few_optimiser_steps_are_warned_about(data, tmp_path, caplog):
    """3 epochs of a tiny set are far below MIN_STEPS: the log says which params to raise."""
    with caplog.at_level(logging.WARNING, logger="mrfer.train.loop"):
        run_base(data, tmp_path, tiny_cfg(epochs=2))
    warnings = [r.getMessage() for r in caplog.records if "optimiser steps" in r.getMessage()]
    assert len(warnings) == 1
    assert "pretrain-base: only" in warnings[0] and "raise epochs, lower batch_size (now 16)" in warnings[0]
    assert "pretrained model" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mrfer.train.loop"):
        loop.warn_few_steps("x", steps_per_epoch=20, epochs=10, batch_size=64)  # 200: enough
    assert not caplog.records


def test_training_keeps_covpool_bimap_orthonormal(data):
    """The loop calls the model's constraint after every optimiser step: CovPoolFER's BiMap
    weight stays on the Stiefel manifold (W^T W = I) while it learns."""
    from mrfer.nets import build
    from mrfer.nets.covpool import BiMap
    model = build("covpool", 3, in_chans=1, image_size=32, width=0.125, cov_channels=16, hidden_dim=32, embed_dim=16)
    bimap = next(m for m in model.modules() if isinstance(m, BiMap))
    before = bimap.weight.detach().clone()
    x, y = np.load(data / "train" / "hr.npy"), np.array(
        [int(r.split(",")[1]) for r in (data / "train" / "manifest.csv").read_text().splitlines()[1:]])
    loader = ArrayLoader(x, y, 16, torch.device("cpu"), seed=0)
    cfg = tiny_cfg(epochs=1)
    loss_fn = losses.ce_loss(*stats_tensors([128.0], [64.0], "cpu"), Augment(**OFF), torch.Generator())
    data = loop.Data((x, y), (x[:8], y[:8]), ([128.0], [64.0]), 3)
    loop.fit(model, loader, data, cfg, loop.Run(0, "covpool"), epochs=1, lr=1e-2, head_lr=1e-2, loss_fn=loss_fn)
    w = bimap.weight.detach().double()
    assert not torch.allclose(w.float(), before, atol=1e-4)  # it learned
    assert torch.allclose(w.T @ w, torch.eye(w.shape[1], dtype=torch.float64), atol=1e-5)
