"""The training-loop mechanisms that reproduce the published loops: gradient accumulation (MAFER:
32 x 8 in step 1, 16 x 4 in step 2), the validation cadence and the plateau stepped at each
validation (MAFER: every half epoch on the first third of the val batches in step 2, every
optimiser step with a 1e-7 floor in step 1), TensorFlow's Adam epsilon (CovPoolFER, FSR-FER) and
batch norm with momentum 0 (MAFER's Caffe-converted SE-ResNet-50). Each is checked on numbers
worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from mrfer.errors import ParamsError
from mrfer.nets.fernet import FERNet
from mrfer.train import base, loop
from mrfer.train.loader import ArrayLoader
from params_fixture import section


def loop_cfg(**overrides) -> base.PretrainBaseParams:
    return section("pretrain_base", base.PretrainBaseParams, init="scratch", **overrides)


class Batches:
    """A loader over given (x, y) batches, in order."""

    def __init__(self, batches):
        self.batches, self.device = batches, torch.device("cpu")

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class NoScale:
    """GradScaler's interface, doing nothing (what a disabled scaler does)."""

    def scale(self, loss):
        return loss

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        pass


# --- gradient accumulation ----------------------------------------------------------------------

def squared_loss(net, xb, yb, epoch):
    """mean((w x)^2) over the batch, with two dummy logits for the loop's accuracy count."""
    out = net(xb)
    return (out ** 2).mean(), torch.zeros(len(xb), 2)


def test_accumulated_sgd_step_by_hand():
    """w = 1, batches x = [1], [2], [3], [4], accumulate 3, SGD lr 0.01 without momentum. The
    gradients of mean((w x)^2), 2 w x^2, add up over the first three batches: 2 + 8 + 18 = 28, so
    the one step gives w = 1 - 0.01 * 28 = 0.72; the fourth batch (an incomplete group) is dropped,
    as MAFER's trainers drop it (they zero the gradients at the next epoch's start)."""
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    batches = [(torch.tensor([[v]]), torch.tensor([0])) for v in (1.0, 2.0, 3.0, 4.0)]
    loop.train_one_epoch(net, Batches(batches), optimizer, NoScale(), squared_loss, 0, False, None, accumulate=3)
    assert net.weight.item() == pytest.approx(0.72, abs=1e-6)
    assert net.weight.grad is None


def linear_ce(net, xb, yb, epoch, weight=None):
    logits = net(xb)
    return F.cross_entropy(logits, yb, weight=weight), logits


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
], ids=["sgd", "adam"])
def test_accumulating_k_batches_is_one_step_on_the_k_times_larger_batch(make):
    """Two optimiser steps of 3 accumulated batches of 4 equal two steps on batches of 12 whose loss
    is 3 x the batch mean: the code adds k batch-mean losses, so its gradient is k times the big
    batch's mean gradient (weight decay is added once per step, in both). Tolerance: float32
    rounding of sums of 12 terms, about 1e-6 relative; 1e-5 leaves room."""
    torch.manual_seed(0)
    x, y = torch.randn(24, 5), torch.randint(0, 3, (24,))
    small, big = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    big.load_state_dict(small.state_dict())
    opt_small, opt_big = make(small.parameters()), make(big.parameters())
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 24, 4)]
    loop.train_one_epoch(small, Batches(batches), opt_small, NoScale(), linear_ce, 0, False, None, accumulate=3)
    for start in (0, 12):
        opt_big.zero_grad()
        (3 * F.cross_entropy(big(x[start:start + 12]), y[start:start + 12])).backward()
        opt_big.step()
    for a, b in zip(small.parameters(), big.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(small.weight, torch.nn.Linear(5, 3).weight)


def test_class_weighted_accumulation_normalises_each_batch():
    """Class-weighted cross-entropy divides each batch by its own sum of weights (PyTorch's
    reduction='mean', which MAFER's criterion uses too: step 2 trainer.py:59, 90-91), so the
    accumulated gradient is the sum of the batches' weighted means, not k x the big batch's
    weighted mean; the loop follows the code and does not renormalise."""
    torch.manual_seed(1)
    x, y = torch.randn(6, 4), torch.tensor([0, 0, 1, 2, 2, 2])
    weight = torch.tensor([0.2, 0.5, 0.9])
    net = torch.nn.Linear(4, 3)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    loss_fn = lambda n, xb, yb, e: linear_ce(n, xb, yb, e, weight)   # noqa: E731
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    loop.train_one_epoch(net, Batches(batches), optimizer, NoScale(), loss_fn, 0, False, None, accumulate=2)
    step = start["weight"] - net.weight.detach()                 # lr 1: the accumulated gradient
    ref = torch.nn.Linear(4, 3)
    ref.load_state_dict(start)
    per_batch = sum(torch.autograd.grad(F.cross_entropy(ref(xb), yb, weight=weight), ref.weight)[0]
                    for xb, yb in batches)
    big = torch.autograd.grad(2 * F.cross_entropy(ref(x), y, weight=weight), ref.weight)[0]
    torch.testing.assert_close(step, per_batch)
    assert not torch.allclose(step, big, atol=1e-3)


# --- validation cadence -------------------------------------------------------------------------

@pytest.mark.parametrize("n, unit, every, accumulate, expected", [
    (8, "epoch", 1.0, 1, [8]),            # today's default: once, at the epoch's end
    (8, "epoch", 0.5, 4, [4, 8]),         # MAFER step 2: idx % (len // 2) == 0
    (7, "epoch", 0.5, 4, [3, 6]),         # ... with an odd count the second falls a batch early
    (20, "steps", 1, 8, [8, 16]),         # MAFER step 1: after every step another batch follows
    (16, "steps", 1, 8, [8]),             # the step on the epoch's last batch is not validated
    (24, "steps", 2, 4, [8, 16]),
])
def test_validation_points(n, unit, every, accumulate, expected):
    cfg = loop_cfg(val_unit=unit, val_every=every, accumulate=accumulate)
    assert loop.validation_points(n, cfg) == expected


def test_validation_points_refuse_an_epoch_without_one():
    with pytest.raises(ValueError, match="no validation"):
        loop.validation_points(8, loop_cfg(val_unit="steps", val_every=1, accumulate=8))


@pytest.mark.parametrize("overrides, message", [
    ({"val_unit": "epoch", "val_every": 2.0}, "0 < val_every <= 1"),
    ({"val_unit": "steps", "val_every": 1.5}, "whole number"),
    ({"optimizer": "adamw", "adam_eps_style": "tf"}, "optimizer adam only"),
    ({"val_batches": 0.0}, "greater than 0"),
])
def test_bad_cadence_values_are_refused(overrides, message):
    with pytest.raises(ValidationError, match=message):
        loop_cfg(**overrides)


class Scalar(FERNet):
    """One weight w; features(x) = w * x.mean(); its 'head' is a frozen 2-way layer."""

    embedding_dim = 1

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.head = torch.nn.Linear(1, 2)
        self.head.requires_grad_(False)

    def feature_map(self, x):
        return self.w * x.float().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)

    def features_from_map(self, fmap):
        return fmap.flatten(1)


def test_plateau_steps_at_each_half_epoch_validation(monkeypatch):
    """4 batches an epoch, validation every half epoch (after batches 2 and 4), SGD without
    momentum on loss = w (gradient 1, so each step moves w by -lr), plateau on accuracy with
    factor 0.1, patience 0, min_lr 0.005. Scripted val accuracies 0.5, 0.4, 0.4, 0.4, 0.4, 0.4:
    the first sets the best, each later one is a bad validation and drops the lr at once, to
    0.1, 0.01, then the floor 0.005. By hand, the lr of each of the 12 steps:
    epoch 1: 1 1 | 1 1 (drop to 0.1) ; epoch 2: 0.1 0.1 (0.01) | 0.01 0.01 (0.005) ;
    epoch 3: 0.005 x 4 (the floor holds). w = -(4 + 0.2 + 0.02 + 0.02) = -4.24."""
    script = iter([0.5, 0.4, 0.4, 0.4, 0.4, 0.4])
    calls = []

    def fake_evaluate(model, data, device, batch_size, share=1.0, *args, **kwargs):
        calls.append(float(model.w.detach()))
        return {"loss": 1.0, "accuracy": next(script), "average_accuracy": 0.0}

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    ws = []

    def loss_fn(net, xb, yb, epoch):
        ws.append(float(net.module.w.detach()))
        return net.module.w * 1.0, torch.zeros(len(yb), 2)

    cfg = loop_cfg(optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0, scheduler="plateau",
                   plateau={"monitor": "accuracy", "factor": 0.1, "patience": 0, "threshold": 0.001,
                            "min_lr": 0.005},
                   val_unit="epoch", val_every=0.5, val_batches=1.0, accumulate=1, restore_best=False, patience=0)
    images, labels = np.zeros((8, 2, 2, 1), np.uint8), np.zeros(8, np.int64)
    loader = ArrayLoader(images, labels, 2, torch.device("cpu"), seed=0)
    data = loop.Data((images, labels), (images, labels), ([0.0], [1.0]), 2)
    history = loop.fit(Scalar(), loader, data, cfg, loop.Run(0, "plateau"), epochs=3, loss_fn=loss_fn,
                       lr=1.0, head_lr=1.0)
    steps = np.diff(ws + [calls[-1]])   # each step's change of w
    lrs = [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005]
    np.testing.assert_allclose(-steps, lrs, rtol=0, atol=1e-6)   # w in float32, |w| < 5
    assert len(calls) == 6
    assert [row["lr"] for row in history] == pytest.approx([1.0, 0.1, 0.005])
    assert [row["val_accuracy"] for row in history] == [0.4, 0.4, 0.4]   # each epoch's last validation


def test_val_batches_reads_the_first_share_of_the_batches(monkeypatch):
    """10 val faces in batches of 2 are 5 batches: a third is floor(5 / 3) = 1 batch, the first 2
    faces (MAFER step 2's `idx % (len(loader) // 3) == 0: break`); 9 batches give 3, 18 faces."""
    seen = []

    def fake_infer(model, images, *args, **kwargs):
        seen.append(len(images))
        return torch.zeros(len(images), 2)

    monkeypatch.setattr(loop, "infer", fake_infer)
    for n, expected in ((10, 2), (18, 6), (17, 6)):
        data = loop.Data((None, None), (np.zeros((n, 2, 2, 1), np.uint8), np.zeros(n, np.int64)), ([0.0], None), 2)
        loop.evaluate(None, data, torch.device("cpu"), 2, 0.333333333333)
        assert seen[-1] == expected, n
    loop.evaluate(None, data, torch.device("cpu"), 2, 1.0)
    assert seen[-1] == 17


def test_step1_val_loss_adds_the_weighted_feature_mse_to_the_teacher():
    """MAFER step 1 monitors CE + lambda x MSE(student features, teacher features of the HR face).
    Scalar with w = 0.5 on constant faces 1, 2, 3 (mean 0, std 1): features 0.5, 1.0, 1.5; head
    logits (f, -f); labels 0, 1, 0, so the CEs are log(1 + e^-1), log(1 + e^2), log(1 + e^-3).
    Teacher features all 1: MSE = (0.25 + 0 + 0.25) / 3; lambda 0.1."""
    model = Scalar()
    model.w.data.fill_(0.5)
    model.head.weight.data = torch.tensor([[1.0], [-1.0]])
    model.head.bias.data.zero_()
    images = np.stack([np.full((2, 2, 1), v, np.uint8) for v in (1, 2, 3)])
    labels = np.array([0, 1, 0])
    ce = np.mean([math.log1p(math.exp(-1)), math.log1p(math.exp(2)), math.log1p(math.exp(-3))])
    plain = loop.Data((None, None), (images, labels), ([0.0], [1.0]), 2)
    assert loop.evaluate(model, plain, torch.device("cpu"), 2)["loss"] == pytest.approx(ce, rel=1e-5)
    step1 = loop.Data((None, None), (images, labels), ([0.0], [1.0]), 2, (torch.ones(3, 1), 0.1))
    assert loop.evaluate(model, step1, torch.device("cpu"), 2)["loss"] == pytest.approx(ce + 0.1 / 6, rel=1e-5)


# --- training without a validation split --------------------------------------------------------

def test_no_validation_split_trains_every_epoch_and_keeps_the_last():
    """CovPoolFER / FSR-FER: the whole training split, no validation, the last epoch kept."""
    images, labels = np.arange(8, dtype=np.uint8).reshape(8, 1, 1, 1), np.zeros(8, np.int64)
    empty = (images[:0], labels[:0])
    cfg = loop_cfg(optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0, scheduler="none",
                   restore_best=False, patience=0)

    def loss_fn(net, xb, yb, epoch):
        return net.module.w * 1.0, torch.zeros(len(yb), 2)

    model = Scalar()
    history = loop.fit(model, ArrayLoader(images, labels, 4, torch.device("cpu"), seed=0),
                       loop.Data((images, labels), empty, ([0.0], [1.0]), 2), cfg, loop.Run(0, "whole"),
                       epochs=3, loss_fn=loss_fn, lr=0.5, head_lr=0.5)
    assert [sorted(row) for row in history] == [["epoch", "lr", "train_accuracy", "train_loss"]] * 3
    assert float(model.w.detach()) == pytest.approx(-3.0)   # 2 steps an epoch of -0.5, all 3 epochs kept


@pytest.mark.parametrize("overrides, named", [
    ({"restore_best": True, "patience": 0, "scheduler": "cosine"}, "restore_best: true"),
    ({"restore_best": False, "patience": 2, "scheduler": "cosine"}, "patience: 2"),
    ({"restore_best": False, "patience": 0, "scheduler": "plateau"}, "scheduler: plateau"),
])
def test_no_validation_split_is_refused_where_a_setting_needs_one(overrides, named):
    images, labels = np.zeros((4, 1, 1, 1), np.uint8), np.zeros(4, np.int64)
    data = loop.Data((images, labels), (images[:0], labels[:0]), ([0.0], [1.0]), 2)
    with pytest.raises(ParamsError, match=f"validation split is empty.*{named}"):
        loop.fit(Scalar(), ArrayLoader(images, labels, 2, torch.device("cpu"), seed=0), data,
                 loop_cfg(**overrides), loop.Run(0, "refused"), epochs=1, loss_fn=None)


# --- TensorFlow's Adam --------------------------------------------------------------------------

def test_tf_adam_matches_a_step_worked_by_hand():
    """TF's AdamOptimizer, lr 0.1, beta1 0.9, beta2 0.999, epsilon 0.1, on loss = 0.5 theta from
    theta = 1 (gradient 0.5 each step). By hand:
    step 1: m = 0.05, v = 0.001 * 0.25 = 2.5e-4, lr_1 = 0.1 * sqrt(0.001) / 0.1 = 0.0316228,
            update = 0.0316228 * 0.05 / (0.0158114 + 0.1) = 0.0136527, theta = 0.9863473;
    step 2: m = 0.095, v = 0.999 * 2.5e-4 + 2.5e-4 = 4.9975e-4, lr_2 = 0.1 * sqrt(1 - 0.998001) /
            (1 - 0.81) = 0.0235317, update = 0.0235317 * 0.095 / (0.0223551 + 0.1) = 0.0182707,
            theta = 0.9680766.
    PyTorch's Adam with eps 0.1 adds eps after the bias correction, so its first step is
    lr * m_hat / (sqrt(v_hat) + eps) = 0.1 * 0.5 / (0.5 + 0.1) = 0.0833333: six times TF's."""
    cfg = loop_cfg(optimizer="adam", adam_eps=0.1, adam_eps_style="tf", weight_decay=0.0)
    model = Scalar()
    with torch.no_grad():
        model.w.fill_(1.0)
    optimizer = loop.make_optimizer(model, cfg, 0.1, 0.1)
    assert isinstance(optimizer, loop.TFAdam)
    expected = [0.9863473, 0.9680766]
    for want in expected:
        optimizer.zero_grad()
        (0.5 * model.w).backward()
        optimizer.step()
        assert float(model.w.detach()) == pytest.approx(want, abs=3e-7)   # float32 near 1: ulp 6e-8
    torch_style = Scalar()
    with torch.no_grad():
        torch_style.w.fill_(1.0)
    adam = loop.make_optimizer(torch_style, loop_cfg(optimizer="adam", adam_eps=0.1, weight_decay=0.0), 0.1, 0.1)
    assert type(adam) is torch.optim.Adam
    (0.5 * torch_style.w).backward()
    adam.step()
    assert float(torch_style.w.detach()) == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 0.1), abs=1e-7)   # 0.9166667


def test_tf_adam_is_torch_adam_with_eps_over_sqrt_bias_correction():
    """The same update written PyTorch's way: eps_t = eps / sqrt(1 - beta2^t), over 5 steps of a
    random gradient, with L2 decay added to the gradient in both."""
    torch.manual_seed(2)
    a, b = torch.nn.Parameter(torch.randn(6)), torch.nn.Parameter(torch.zeros(6))
    with torch.no_grad():
        b.copy_(a)
    tf_adam = loop.TFAdam([a], lr=0.01, eps=0.1, weight_decay=0.05)
    adam = torch.optim.Adam([b], lr=0.01, eps=0.1, weight_decay=0.05)
    for t in range(1, 6):
        g = torch.randn(6)
        a.grad, b.grad = g.clone(), g.clone()
        adam.param_groups[0]["eps"] = 0.1 / math.sqrt(1 - 0.999 ** t)
        tf_adam.step()
        adam.step()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_tf_adam_resumes_from_its_state_dict():
    torch.manual_seed(3)
    p = torch.nn.Parameter(torch.randn(4))
    opt = loop.TFAdam([p], lr=0.01, eps=0.1)
    p.grad = torch.ones(4)
    opt.step()
    again = loop.TFAdam([torch.nn.Parameter(p.detach().clone())], lr=0.01, eps=0.1)
    again.load_state_dict(opt.state_dict())
    assert float(next(iter(again.state.values()))["step"]) == 1.0


# --- batch norm with momentum 0 -----------------------------------------------------------------

def test_batch_norm_with_momentum_0_keeps_its_running_statistics():
    """MAFER's Caffe-converted SE-ResNet-50 builds every BatchNorm2d with momentum=0.0: a training
    step normalises with the batch's statistics but leaves the running ones as loaded
    (running = (1 - 0) * running + 0 * batch); momentum 0.1 moves them."""
    torch.manual_seed(4)
    frozen, moving = torch.nn.BatchNorm2d(3, momentum=0.0), torch.nn.BatchNorm2d(3, momentum=0.1)
    for bn in (frozen, moving):
        with torch.no_grad():
            bn.running_mean.fill_(2.0)
            bn.running_var.fill_(4.0)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    for bn in (frozen, moving):
        bn.train()
        out = bn(x)
        out.sum().backward()
    assert torch.equal(frozen.running_mean, torch.full((3,), 2.0))
    assert torch.equal(frozen.running_var, torch.full((3,), 4.0))
    mean = x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(moving.running_mean, 0.9 * 2.0 + 0.1 * mean)
    # train mode still normalises by the batch: the output has (about) zero mean per channel
    torch.testing.assert_close(frozen(x).mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_seresnet50_bn_momentum_reaches_every_batch_norm():
    from mrfer import nets
    model = nets.build("seresnet50", 7, caffe_layout=True, bn_momentum=0.0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 53 and all(m.momentum == 0.0 for m in norms)   # MainModel.py: 53 BNs, all 0.0
    assert all(m.momentum == 0.1 for m in nets.build("seresnet50", 7).modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


# --- the released identity head -----------------------------------------------------------------

@pytest.mark.parametrize("layout", ["pkl", "caffe"])
def test_kept_identity_head_gives_the_released_logits(tmp_path, layout):
    """A file in the release's exact formats (VGGFace2-pytorch's .pkl of numpy arrays, Python 2's
    protocol 2; the Caffe port's .pth, its classifier a 1x1 conv) imported with keep_head: the
    model's logits are the file's classifier on the model's pool5 features, W f + b, computed here
    from the file's own arrays; without keep_head the head stays new."""
    import pickle

    from mrfer import nets
    from mrfer.errors import InputError
    from mrfer.nets import weights
    from test_weights import caffe_key, senet_pkl_shapes

    rng = np.random.default_rng(5)
    arrays = {key: (rng.random(shape, dtype=np.float32) * 0.1 + np.float32(0.5) if "running_var" in key
                    else rng.standard_normal(shape, dtype=np.float32) * np.float32(0.05))
              for key, shape in senet_pkl_shapes().items()}
    if layout == "pkl":
        path = tmp_path / "senet50_ft_weight.pkl"
        with path.open("wb") as f:
            pickle.dump(arrays, f, protocol=2)
    else:
        state = {caffe_key(k): torch.from_numpy(v) for k, v in arrays.items()}
        state["classifier.weight"] = state["classifier.weight"].reshape(8631, 2048, 1, 1)
        path = tmp_path / "senet50_ft.pth"
        torch.save(state, path)
    model = nets.build("seresnet50", 8631, image_size=64, caffe_layout=True, bn_momentum=0.0).eval()
    new_head = model.head.weight.detach().clone()
    weights.import_weights(model, "vggface2_senet", path)
    assert torch.equal(model.head.weight, new_head)
    weights.import_weights(model, "vggface2_senet", path, keep_head=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, logits = model.features(x), model(x)
    by_hand = features.double() @ torch.from_numpy(arrays["fc.weight"]).double().T \
        + torch.from_numpy(arrays["fc.bias"]).double()
    torch.testing.assert_close(logits.double(), by_hand, rtol=1e-4, atol=1e-4)
    with torch.device("meta"):
        seven = nets.build("seresnet50", 7, caffe_layout=True)
    with pytest.raises(InputError, match="shape mismatches"):
        weights.import_weights(seven, "vggface2_senet", path, keep_head=True)
