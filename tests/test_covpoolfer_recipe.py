"""CovPoolFER's training recipe as loop params: Adam's epsilon, L2 on conv/fc weights only, the
piecewise-constant lr of data/learning_rate.txt and the centre loss on the embedding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from assembled_fixture import make_assembled
from mrfer.nets import build
from mrfer.nets.covpool import BiMap
from mrfer.train import base, loop, losses
from mrfer.transforms import Augment
from params_fixture import section

NEW_KEYS = {"p": 1.0, "fill": "border", "interpolation": "bilinear", "pipeline": "mrfer", "crop": None,
            "gray": None, "cutout": None, "elastic": None}   # the augment keys that default to no change
OFF = {"flip": False, "rotate": 0.0, "scale": 0.0, "translate": 0.0, "brightness": 0.0, "contrast": 0.0, **NEW_KEYS}
# CovPoolFER's learning_rate.txt as factors of 0.005
PUBLISHED_LR = {"epochs": [80, 150, 250, 350, 1000], "factors": [0.4, 0.2, 0.1, 0.02, 0.002]}


def loop_cfg(**overrides) -> base.PretrainBaseParams:
    return section("pretrain_base", base.PretrainBaseParams, init="scratch", **overrides)


def covpool():
    return build("covpool", 3, in_chans=1, image_size=32, width=0.125, cov_channels=16, hidden_dim=32)


def test_piecewise_lr_follows_train_py():
    """framework.get_learning_rate_from_file: the rate of the last line whose epoch <= the epoch."""
    cfg = loop_cfg(scheduler="piecewise", piecewise=PUBLISHED_LR, lr=0.005, head_lr=0.005, epochs=400)
    model = covpool()
    optimizer = loop.make_optimizer(model, cfg, cfg.lr, cfg.head_lr)
    scheduler = loop.make_scheduler(optimizer, cfg, cfg.epochs)
    seen = {}
    for epoch in range(400):
        seen[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    expected = {0: 0.005, 79: 0.005, 80: 0.002, 149: 0.002, 150: 0.001, 249: 0.001, 250: 0.0005, 350: 0.0001,
                399: 0.0001}
    for epoch, lr in expected.items():
        assert seen[epoch] == pytest.approx(lr), epoch


@pytest.mark.parametrize("piecewise, message", [
    ({"epochs": [80, 150], "factors": [0.4]}, "one factor per epoch"),
    ({"epochs": [150, 80], "factors": [0.4, 0.2]}, "increasing"),
    ({"epochs": [0, 80], "factors": [0.4, 0.2]}, "increasing and >= 1"),
    ({"epochs": [80], "factors": [0.0]}, "factors must be > 0"),
])
def test_piecewise_refuses_bad_values(piecewise, message):
    with pytest.raises(ValidationError, match=message):
        loop_cfg(piecewise=piecewise)


def test_decay_on_weights_regularises_conv_and_fc_weights_only():
    """slim's weights_regularizer: conv and fc weights; not BiMap's W (tf.get_variable without a
    regulariser), not BN offsets, not biases. Adam's epsilon is CovPoolFER's 0.1."""
    model = covpool()
    cfg = loop_cfg(optimizer="adam", adam_eps=0.1, weight_decay=0.05, decay_on="weights")
    optimizer = loop.make_optimizer(model, cfg, 0.005, 0.005)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert decayed == {id(m.weight) for m in layers}
    bimap = next(m for m in model.modules() if isinstance(m, BiMap))
    assert id(bimap.weight) not in decayed and bimap.weight.ndim == 2
    assert all(g["eps"] == 0.1 for g in optimizer.param_groups)
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter once


def test_decay_on_all_is_plain_adam():
    """decay_on: all keeps the coupled L2 on every parameter: one step equals torch's Adam."""
    torch.manual_seed(0)
    ours = build("baseline_cnn", 3, in_chans=1, image_size=32, width=0.125, dropout=0.0)
    theirs = build("baseline_cnn", 3, in_chans=1, image_size=32, width=0.125, dropout=0.0)
    theirs.load_state_dict(ours.state_dict())
    cfg = loop_cfg(optimizer="adam", adam_eps=1e-8, weight_decay=0.01, decay_on="all")
    optimizers = [loop.make_optimizer(ours, cfg, 1e-3, 1e-3),
                  torch.optim.Adam(theirs.parameters(), lr=1e-3, weight_decay=0.01, eps=1e-8)]
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    for model, optimizer in zip((ours, theirs), optimizers):
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


class Fixed(torch.nn.Module):
    """A `net` returning given logits and features (what WithFeatures returns)."""

    def __init__(self, logits, features):
        super().__init__()
        self.logits, self.features = logits, features

    def forward(self, x):
        return self.logits, self.features


def test_center_loss_is_added_to_the_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    features = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    labels = torch.tensor([0, 2])
    center = losses.CenterLoss(3, 2, update="optimizer")
    with torch.no_grad():
        center.centers.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 2.0]]))
    mean, std = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    loss_fn = losses.ce_loss(mean, std, Augment(**OFF), torch.Generator(), center=center, center_weight=0.01)
    loss, _ = loss_fn(Fixed(logits, features), torch.zeros(2, 4, 4, 1, dtype=torch.uint8), labels, 0)
    by_hand = F.cross_entropy(logits, labels) + 0.01 * ((0 + 4 + 1 + 2.25) / 4)
    assert loss.item() == pytest.approx(by_hand.item())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_assembled(tmp_path_factory.mktemp("assembled"))


@pytest.mark.parametrize("weight", [0.0, 0.01])
def test_finetune_trains_the_centres_beside_the_model(data, tmp_path, monkeypatch, weight):
    made = []
    real = base.center_loss
    monkeypatch.setattr(base, "center_loss", lambda *a: made.append(real(*a)) or made[-1])
    cfg = loop_cfg(seed=3, arch_options={"width": 0.125}, epochs=2, batch_size=16, lr=3e-3, head_lr=3e-3,
                   center_loss={"weight": weight, "update": "optimizer", "alpha": 0.9})
    base.fit_base(cfg, data, tmp_path / "base.pt", tmp_path / "base.json", ["x2"], live_dir=None,
                  resume=tmp_path / "resume.pt")
    if weight == 0:
        assert made == [None]  # off: no centres, no extra parameters
    else:
        centres = made[0].centers.detach()
        assert centres.shape[0] == 3  # one centre per class
        assert float(centres.abs().sum()) > 0  # they start at zero and Adam moved them
        assert np.isfinite(centres.numpy()).all()
