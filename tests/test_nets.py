"""Model registry, the FERNet interface of every model, and covariance pooling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mrfer import nets
from mrfer.nets import checkpoint
from mrfer.train.losses import CenterLoss
from mrfer.nets.covpool import (EIG_CEILING, BiMap, covariance_pool, per_image_standardization,
                                rectified_log, retract_after_step)

NUM_CLASSES = 7
# The models whose outputs depend on the input size beyond their pooling (baseline_cnn's dense
# layer, covpool's covariance over the map's positions), at the sizes the pipelines use; every
# model also runs at its smallest size below. Slim options keep the CPU cost low;
# "covpool_small" is covpool's variant mrfer_small.
SLIM = {"baseline_cnn": {"width": 0.25}, "covpool": {"width": 0.25, "cov_channels": 32},
        "covpool_small": {"variant": "mrfer_small", "width": 0.25, "cov_channels": 32}}
SIZE_CASES = [  # (name, in_chans, image_size)
    ("baseline_cnn", 1, 48), ("baseline_cnn", 1, 64), ("baseline_cnn", 3, 112),
    ("baseline_cnn", 3, 224),
    ("covpool", 1, 48), ("covpool", 1, 64), ("covpool", 3, 64), ("covpool", 3, 112),
    ("covpool_small", 1, 48), ("covpool_small", 3, 64),
]


def model_for(name: str, in_chans: int, image_size: int) -> nets.FERNet:
    torch.manual_seed(0)
    arch = name.removesuffix("_small")  # covpool_small: variant mrfer_small
    return nets.build(arch, NUM_CLASSES, in_chans=in_chans, image_size=image_size, **SLIM.get(name, {}))


def at_smallest_size(name: str, in_chans: int) -> tuple[nets.FERNet, int]:
    """Model `name` built for the smallest square input `nets.build` accepts (in steps of 8)."""
    for size in range(8, 257, 8):
        try:
            torch.manual_seed(0)
            return nets.build(name, NUM_CLASSES, in_chans=in_chans, image_size=size), size
        except ValueError as e:
            error = e
    raise error


def check_forward(model: nets.FERNet, x: torch.Tensor) -> torch.Tensor:
    """feature_map -> features_from_map -> head is forward, with the FERNet shapes; the logits."""
    model.eval()
    with torch.no_grad():
        fmap = model.feature_map(x)
        features = model.features(x)
        logits = model(x)
        from_map = model.features_from_map(fmap)
    n = x.shape[0]
    assert fmap.ndim == 4 and fmap.shape[0] == n
    assert features.shape == (n, model.embedding_dim)
    assert logits.shape == (n, NUM_CLASSES)
    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.embedding_dim
    torch.testing.assert_close(logits, model.head(features))
    torch.testing.assert_close(from_map, features)
    assert torch.isfinite(fmap).all() and torch.isfinite(features).all() and torch.isfinite(logits).all()
    return logits


def check_gradients(model: nets.FERNet, in_chans: int, image_size: int) -> None:
    """One training step's gradients are finite and reach every parameter."""
    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(1)
    x = torch.randn(4, in_chans, image_size, image_size)
    nn.functional.cross_entropy(model(x), torch.arange(4) % NUM_CLASSES).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"non-finite gradient in {param_name}"
    first_weight = next(p for n, p in model.named_parameters() if n.endswith("weight"))
    assert first_weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0


def test_registry_holds_the_published_models():
    assert {"baseline_cnn", "covpool", "vgg16", "vggface", "resnet18", "resnet50", "seresnet50"} <= set(nets.available())


# ---------------------------------------------------------------- every registered model
# Each model is built once per channel count at its smallest size with its default options; the
# module-scoped fixture groups the tests model by model, so one model's copies are held at a time.

@pytest.fixture(scope="module", params=nets.available())
def smallest(request) -> dict[int, tuple[nets.FERNet, int]]:
    """in_chans (1, 3) -> (model at its smallest size, that size), for each registered model."""
    return {in_chans: at_smallest_size(request.param, in_chans) for in_chans in (1, 3)}


@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_model_runs_at_its_smallest_size(smallest, in_chans):
    model, size = smallest[in_chans]
    assert model.config == {"name": model.config["name"], "num_classes": NUM_CLASSES, "in_chans": in_chans,
                            "image_size": size, **nets.default_options(model.config["name"])}
    check_forward(model, torch.randn(2, in_chans, size, size))


def test_every_model_survives_a_checkpoint(smallest, tmp_path):
    model, size = smallest[1]
    x = torch.randn(2, 1, size, size)
    logits = check_forward(model, x)
    meta = {"arch": model.config["name"], "options": {}, "classes": [f"class{i}" for i in range(NUM_CLASSES)],
            "size": size, "channels": 1}
    checkpoint.save_model(tmp_path / "model.pt", model, meta)
    again, again_meta = checkpoint.load_model(tmp_path / "model.pt")
    assert {k: again_meta[k] for k in meta} == meta and again.config == model.config
    torch.testing.assert_close(check_forward(again, x), logits, rtol=1e-4, atol=1e-4)


def test_every_models_gradients_reach_every_parameter(smallest):
    model, size = smallest[1]
    check_gradients(model, 1, size)


@pytest.mark.parametrize("name,in_chans,image_size", SIZE_CASES)
def test_forward_shapes_at_the_pipeline_sizes(name, in_chans, image_size):
    check_forward(model_for(name, in_chans, image_size), torch.randn(2, in_chans, image_size, image_size))


def test_covpool_small_variant_gradients_reach_every_parameter():
    check_gradients(model_for("covpool_small", 1, 64), 1, 64)


def test_backbone_and_head_parameters_split_the_model():
    model = model_for("baseline_cnn", 1, 64)
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head.parameters()}
    assert backbone.isdisjoint(head) and head
    assert backbone | head == {id(p) for p in model.parameters()}


def test_config_rebuilds_the_same_architecture():
    model = nets.build("covpool", 5, in_chans=1, image_size=48, width=0.25, cov_channels=24,
                       bimap_dim=16)
    again = nets.build(**model.config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    assert again.config == model.config


def test_width_option_slims_the_baseline():
    slim = nets.build("baseline_cnn", 7, in_chans=1, image_size=64, width=0.25)
    full = nets.build("baseline_cnn", 7, in_chans=1, image_size=64)
    assert slim.embedding_dim == full.embedding_dim == 256
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(slim) * 3 < count(full)
    assert full.conv[0].out_channels == 64 and slim.conv[0].out_channels == 16


def test_seresnet50_caffe_layout_moves_the_stride():
    with torch.device("meta"):
        timm_layout = nets.build("seresnet50", 7)
        caffe = nets.build("seresnet50", 7, caffe_layout=True)
    for stage in ("layer2", "layer3", "layer4"):
        assert getattr(timm_layout.backbone, stage)[0].conv2.stride == (2, 2)
        block = getattr(caffe.backbone, stage)[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert caffe.backbone.maxpool.ceil_mode and caffe.backbone.maxpool.padding == 0


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet1000'.*baseline_cnn.*covpool"):
        nets.build("resnet1000", 7)


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="takes no option.*widht.*its options: dropout, width"):
        nets.build("baseline_cnn", 7, widht=0.5)
    with pytest.raises(ValueError, match="'resnet18' takes no option.*width.*none"):
        nets.build("resnet18", 7, width=0.5)


@pytest.mark.parametrize("kwargs,message", [
    ({"in_chans": 2}, "in_chans"), ({"image_size": 16}, "image_size"),
    ({"num_classes": 1}, "num_classes")])
def test_bad_build_arguments(kwargs, message):
    args = {"num_classes": 7, **kwargs}
    with pytest.raises(ValueError, match=message):
        nets.build("baseline_cnn", **args)


def test_covpool_option_errors():
    with pytest.raises(ValueError, match="bimap_dim"):
        nets.build("covpool", 7, cov_channels=16, bimap_dim=32)
    with pytest.raises(ValueError, match="variant"):
        nets.build("covpool", 7, variant="large")


# ---------------------------------------------------------------- covariance pooling (CovPoolFER)


def test_covpool_defaults_give_a_128x128_log_covariance():
    assert nets.default_options("covpool")["cov_channels"] == 256
    assert nets.default_options("covpool")["variant"] == "published"
    model = nets.build("covpool", 7, in_chans=1, image_size=48, width=0.25).eval()
    with torch.no_grad():
        log_cov = model.covariance(torch.randn(2, 1, 48, 48))
    assert log_cov.shape == (2, 128, 128)


def test_covpool_default_is_the_published_network_at_100px():
    model = nets.build("covpool", 7, in_chans=3, image_size=100).eval()
    convs = [m for m in model.trunk if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 96, 128, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.trunk) == 3
    assert not any(getattr(m, "affine", False) for m in model.modules())  # BN offsets only, as slim
    assert (model.eps, model.ceiling) == (1e-4, EIG_CEILING)
    assert (model.fc1[0].in_features, model.fc1[0].out_features) == (128 * 128, 2000)
    assert (model.fc2[0].out_features, model.bottleneck[0].out_features) == (128, 7)
    assert model.embedding_dim == 7 and model.head.in_features == 7
    x = torch.rand(2, 3, 100, 100) * 255
    with torch.no_grad():
        fmap = model.feature_map(x)
        log_cov = model.covariance(x)
        hidden = model.hidden_from_covariance(log_cov)
        features = model.features_from_covariance(log_cov)
    assert fmap.shape == (2, 256, 12, 12)  # stride 8: 12 x 12 positions
    assert (fmap >= 0).all()  # the covariance is of ReLU outputs
    assert log_cov.shape == (2, 128, 128) and hidden.shape == (2, 128) and features.shape == (2, 7)


def test_per_image_standardization_is_tensorflows():
    x = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])  # mean 3, population std sqrt(5)
    expected = (x - 3) / 5 ** 0.5
    torch.testing.assert_close(per_image_standardization(x), expected)
    torch.testing.assert_close(per_image_standardization(2 * x + 5), expected)  # any a*x + b, a > 0
    flat = torch.full((1, 3, 4, 4), 7.0)  # std 0 -> divided by 1/sqrt(48), not by zero
    assert torch.equal(per_image_standardization(flat), torch.zeros_like(flat))
    torch.manual_seed(0)
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.125, cov_channels=8).eval()
    image = torch.rand(1, 1, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(model.feature_map(image), model.feature_map(image * 0.5 + 20))


def test_log_covariance_of_a_hand_made_map():
    # 4 channels over 2x2 = 4 positions; BiMap set to keep channels 0 and 1.
    fmap = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]],     # mean 0, variance 4/3
                          [[2.0, 0.0], [0.0, -2.0]],      # mean 0, variance 8/3, covariance with 0: 4/3
                          [[0.0, 0.0], [0.0, 4.0]],       # mean 1, variance 12/3
                          [[1.0, 2.0], [3.0, 4.0]]]])     # mean 2.5, variance 5/3
    trace = 4 / 3 + 8 / 3 + 4 + 5 / 3
    kept = np.array([[4 / 3, 4 / 3], [4 / 3, 8 / 3]]) + 1e-4 * trace * np.eye(2)
    eigvals, eigvecs = np.linalg.eigh(kept)
    expected = eigvecs @ np.diag(np.log(eigvals)) @ eigvecs.T
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.125, cov_channels=4, bimap_dim=2)
    with torch.no_grad():
        model.bimap.weight.copy_(torch.eye(4)[:, :2])
        log_cov = model.log_covariance_from_map(fmap)
    np.testing.assert_allclose(log_cov[0].numpy(), expected, rtol=1e-6, atol=1e-7)
    full = covariance_pool(fmap, 1e-4)[0]
    assert full[2, 2].item() == pytest.approx(4 + 1e-4 * trace) and full[0, 3].item() == pytest.approx(-2 / 3)


def test_log_covariance_is_symmetric_finite_and_the_matrix_log():
    torch.manual_seed(0)
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.25, cov_channels=24,
                       bimap_dim=12).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        fmap = model.feature_map(x)
        log_cov = model.covariance(x)
        spd = model.spd_from_map(fmap)
    assert log_cov.shape == (3, 12, 12) and log_cov.dtype == torch.float32
    assert torch.isfinite(log_cov).all()
    assert torch.equal(log_cov, log_cov.transpose(1, 2))
    # exp(log(S)) = S: the trace term keeps every eigenvalue inside [eps, 1e4], so ReEig changes nothing.
    torch.testing.assert_close(torch.linalg.matrix_exp(log_cov.double()), spd, rtol=1e-4,
                               atol=1e-6)


def test_covpool_backward_is_finite_on_rank_deficient_covariance():
    # 32 px -> a 4x4 map: 16 positions for 256 channels, so most eigenvalues are equal (the
    # eps * trace floor), where autograd through eigh would divide by zero.
    torch.manual_seed(0)
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.25).train()
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    log_cov = model.covariance(x)
    eigvals = torch.linalg.eigvalsh(model.spd_from_map(model.feature_map(x)))
    assert (eigvals < eigvals[:, :1] * (1 + 1e-6)).sum() > 64  # really degenerate
    (log_cov ** 2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(model.bimap.weight.grad).all()


def test_rectified_log_gradient_is_exact():
    torch.manual_seed(0)
    a = torch.randn(2, 5, 5, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.3 * torch.eye(5, dtype=torch.float64)
    low_rank = torch.randn(2, 5, 2, dtype=torch.float64)
    clamped = low_rank @ low_rank.transpose(1, 2) + 1e-6 * torch.eye(5, dtype=torch.float64)
    symmetric = lambda m, eps, top=float("inf"): rectified_log((m + m.transpose(1, 2)) / 2, eps, top)  # noqa: E731
    assert torch.autograd.gradcheck(lambda m: symmetric(m, 1e-4), (spd.requires_grad_(),))
    assert torch.autograd.gradcheck(lambda m: symmetric(m, 1e-2), (clamped.requires_grad_(),))
    ceiling = torch.linalg.eigvalsh(spd)[:, -2:].mean().item()  # clips the largest eigenvalues
    assert torch.autograd.gradcheck(lambda m: symmetric(m, 1e-4, ceiling), (spd,))

    # Distinct eigenvalues: the same value and gradient as autograd through torch's eigh.
    upstream = torch.randn(2, 5, 5, dtype=torch.float64)
    x = spd.detach().clone().requires_grad_()
    eigvals, eigvecs = torch.linalg.eigh(x)
    reference = eigvecs @ torch.diag_embed(eigvals.log()) @ eigvecs.transpose(1, 2)
    (reference * upstream).sum().backward()
    y = spd.detach().clone().requires_grad_()
    ours = rectified_log(y, 1e-4)
    (ours * upstream).sum().backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(y.grad, (x.grad + x.grad.transpose(1, 2)) / 2)


def test_rectified_log_clamps_small_eigenvalues():
    eigvecs = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64)).Q
    spd = eigvecs @ torch.diag(torch.tensor([1e-8, 1e-3, 1.0, 5.0], dtype=torch.float64)) \
        @ eigvecs.T
    eigvals = torch.linalg.eigvalsh(rectified_log(spd, 1e-2))
    expected = torch.tensor([1e-2, 1e-2, 1.0, 5.0], dtype=torch.float64).log()
    torch.testing.assert_close(eigvals, expected)


def test_reeig_clips_at_1e_minus_4_below_and_1e4_above_as_published():
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.125, cov_channels=8)
    eigvecs = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64)).Q
    values = torch.tensor([1e-8, 5e-5, 1e-3, 2.0, 3e4], dtype=torch.float64)
    spd = eigvecs @ torch.diag(values) @ eigvecs.T
    eigvals = torch.linalg.eigvalsh(rectified_log(spd, model.eps, model.ceiling))
    expected = torch.tensor([1e-4, 1e-4, 1e-3, 2.0, 1e4], dtype=torch.float64).log()
    torch.testing.assert_close(eigvals, expected)


def orthonormality_error(w: torch.Tensor) -> float:
    w = w.detach().double()
    return (w.T @ w - torch.eye(w.shape[1], dtype=torch.float64)).abs().max().item()


def test_bimap_weight_stays_orthonormal_after_optimiser_steps():
    torch.manual_seed(0)
    spd = covariance_pool(torch.randn(2, 10, 6, 6), 1e-4)
    bimap = BiMap(10, 4)
    start = bimap.weight.detach().clone()
    optimizer = torch.optim.Adam(bimap.parameters(), lr=0.1)
    retract_after_step(optimizer, bimap)
    for _ in range(5):
        optimizer.zero_grad()
        bimap(spd).pow(2).sum().backward()
        # the gradient is the Riemannian one: W^T G is skew-symmetric (tangent to the manifold)
        inner = bimap.weight.detach().T @ bimap.weight.grad
        torch.testing.assert_close(inner + inner.T, torch.zeros(4, 4), atol=1e-5, rtol=0)
        optimizer.step()
        assert orthonormality_error(bimap.weight) < 1e-5
    assert (bimap.weight.detach() - start).abs().max() > 0.1  # it did move
    out = bimap(spd)
    assert out.shape == (2, 4, 4)
    assert torch.linalg.eigvalsh(out).min() > 0

    # without the retraction the same steps leave the manifold
    drifting = BiMap(10, 4)
    sgd = torch.optim.SGD(drifting.parameters(), lr=0.5)
    sgd.zero_grad()
    drifting(spd).pow(2).sum().backward()
    sgd.step()
    assert orthonormality_error(drifting.weight) > 1e-3


def test_covpool_training_steps_keep_the_bimap_orthonormal():
    torch.manual_seed(0)
    model = nets.build("covpool", NUM_CLASSES, in_chans=1, image_size=32, width=0.125, cov_channels=16).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    retract_after_step(optimizer, model)
    start = model.bimap.weight.detach().clone()
    x, y = torch.randn(8, 1, 32, 32), torch.arange(8) % NUM_CLASSES
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert orthonormality_error(model.bimap.weight) < 1e-5
    assert not torch.equal(model.bimap.weight.detach(), start)


def test_center_loss_as_covpoolfer_trains_it():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    learnt = CenterLoss(2, 2, update="optimizer")
    loss = learnt(features, labels)
    assert loss.item() == pytest.approx((1 + 4 + 9 + 16 + 25 + 36) / 6)  # centres start at 0
    loss.backward()
    assert learnt.centers.grad is not None and learnt.centers.grad.abs().sum() > 0
    moving = CenterLoss(2, 2, update="moving", alpha=0.9)
    moving(features, labels)
    # c_y <- c_y - (1 - alpha)(c_y - f) per sample: class 0 moves twice, class 1 once
    torch.testing.assert_close(moving.centers, torch.tensor([[0.4, 0.6], [0.5, 0.6]]))
    assert list(moving.parameters()) == []
    moving.eval()
    moving(features, labels)
    torch.testing.assert_close(moving.centers, torch.tensor([[0.4, 0.6], [0.5, 0.6]]))


def test_covpool_under_cpu_autocast_keeps_float32_matrices():
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.25, cov_channels=16).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        log_cov = model.covariance(torch.randn(2, 1, 32, 32))
        logits = model(torch.randn(2, 1, 32, 32))
    assert log_cov.dtype == torch.float32 and torch.isfinite(log_cov).all()
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("arch", ["baseline_cnn", "resnet18"])
def test_channels_last_layout_gives_the_same_outputs(arch):
    torch.manual_seed(0)
    plain = nets.build(arch, 7, 1, 64).eval()
    nhwc = nets.build(arch, 7, 1, 64).eval()
    nhwc.load_state_dict(plain.state_dict())
    nets.to_device(nhwc, "cpu")
    conv = next(m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain(x), nhwc(x), atol=1e-4)
        assert torch.allclose(plain.features(x), nhwc.features(x), atol=1e-4)
