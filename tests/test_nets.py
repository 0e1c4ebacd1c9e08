"""Model registry, the FERNet interface of every model, and covariance pooling."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mrfer import nets
from mrfer.nets.covpool import BiMap, covariance_pool, rectified_log

NUM_CLASSES = 7
# Slim options keep the CPU cost of the small nets low; the big nets run at one small size.
# "vggface_slim" is vggface at width 0.125.
SLIM = {"baseline_cnn": {"width": 0.25}, "covpool": {"width": 0.25, "cov_channels": 32},
        "vggface_slim": {"width": 0.125}}
CASES = [  # (name, in_chans, image_size)
    ("baseline_cnn", 1, 48), ("baseline_cnn", 1, 64), ("baseline_cnn", 3, 112),
    ("baseline_cnn", 3, 224),
    ("covpool", 1, 48), ("covpool", 1, 64), ("covpool", 3, 64), ("covpool", 3, 112),
    ("resnet18", 1, 48), ("resnet18", 3, 112), ("resnet50", 3, 64), ("seresnet50", 1, 48),
    ("vgg16", 1, 48), ("vggface", 3, 48),
]
# Backward at one size per model except resnet50 (resnet18's wrapper) and vgg16 (torchvision's
# layers, 134M parameters: slow on this CPU); vggface runs backward slim.
GRADIENT_CASES = [("baseline_cnn", 1, 64), ("covpool", 1, 64), ("resnet18", 1, 48),
                  ("seresnet50", 1, 48), ("vggface_slim", 3, 64)]


def model_for(name: str, in_chans: int, image_size: int) -> nets.FERNet:
    torch.manual_seed(0)
    return nets.build(name.removesuffix("_slim"), NUM_CLASSES, in_chans=in_chans,
                      image_size=image_size, **SLIM.get(name, {}))


def test_registry_lists_every_model():
    assert set(nets.available()) == {"baseline_cnn", "covpool", "vgg16", "vggface", "resnet18",
                                     "resnet50", "seresnet50"}


@pytest.mark.parametrize("name,in_chans,image_size", CASES)
def test_forward_shapes_and_head_is_last_layer(name, in_chans, image_size):
    model = model_for(name, in_chans, image_size).eval()
    x = torch.randn(2, in_chans, image_size, image_size)
    with torch.no_grad():
        fmap = model.feature_map(x)
        features = model.features(x)
        logits = model(x)
        from_map = model.features_from_map(fmap)
    assert fmap.ndim == 4 and fmap.shape[0] == 2
    assert features.shape == (2, model.embedding_dim)
    assert logits.shape == (2, NUM_CLASSES)
    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.embedding_dim
    torch.testing.assert_close(logits, model.head(features))
    torch.testing.assert_close(from_map, features)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name,in_chans,image_size", GRADIENT_CASES)
def test_gradients_reach_every_parameter(name, in_chans, image_size):
    model = model_for(name, in_chans, image_size).train()
    torch.manual_seed(1)
    x = torch.randn(4, in_chans, image_size, image_size)
    loss = nn.functional.cross_entropy(model(x), torch.arange(4) % NUM_CLASSES)
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {param_name}"
    first_weight = next(p for n, p in model.named_parameters() if n.endswith("weight"))
    assert first_weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0


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


# ---------------------------------------------------------------- covariance pooling


def test_covpool_defaults_give_a_128x128_log_covariance():
    assert nets.default_options("covpool")["cov_channels"] == 128
    model = nets.build("covpool", 7, in_chans=1, image_size=48, width=0.25).eval()
    with torch.no_grad():
        log_cov = model.covariance(torch.randn(2, 1, 48, 48))
    assert log_cov.shape == (2, 128, 128)


def test_log_covariance_is_symmetric_finite_and_the_matrix_log():
    torch.manual_seed(0)
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.25, cov_channels=24,
                       bimap_dim=12).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        fmap = model.feature_map(x)
        log_cov = model.covariance(x)
        spd = model.bimap(covariance_pool(fmap, model.eps))
    assert log_cov.shape == (3, 12, 12) and log_cov.dtype == torch.float32
    assert torch.isfinite(log_cov).all()
    assert torch.equal(log_cov, log_cov.transpose(1, 2))
    # exp(log(S)) = S: no eigenvalue of S is below eps, so the rectification changes nothing.
    torch.testing.assert_close(torch.linalg.matrix_exp(log_cov.double()), spd, rtol=1e-4,
                               atol=1e-6)


def test_covpool_backward_is_finite_on_rank_deficient_covariance():
    # 32 px -> an 8x8 map: 64 positions for 128 channels, so most eigenvalues sit at eps
    # (equal eigenvalues, where autograd through eigh would divide by zero).
    torch.manual_seed(0)
    model = nets.build("covpool", 7, in_chans=1, image_size=32, width=0.25).train()
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    log_cov = model.covariance(x)
    eigvals = torch.linalg.eigvalsh(model.bimap(covariance_pool(model.feature_map(x), model.eps)))
    assert (eigvals < 2 * model.eps).sum() > 64  # really degenerate
    (log_cov ** 2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(model.bimap.weight.grad).all()


def test_rectified_log_gradient_is_exact():
    torch.manual_seed(0)
    a = torch.randn(2, 5, 5, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.3 * torch.eye(5, dtype=torch.float64)
    low_rank = torch.randn(2, 5, 2, dtype=torch.float64)
    clamped = low_rank @ low_rank.transpose(1, 2) + 1e-6 * torch.eye(5, dtype=torch.float64)
    symmetric = lambda m, eps: rectified_log((m + m.transpose(1, 2)) / 2, eps)  # noqa: E731
    assert torch.autograd.gradcheck(lambda m: symmetric(m, 1e-4), (spd.requires_grad_(),))
    assert torch.autograd.gradcheck(lambda m: symmetric(m, 1e-2), (clamped.requires_grad_(),))

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


def test_bimap_weight_has_orthonormal_columns_after_training_steps():
    torch.manual_seed(0)
    bimap = BiMap(10, 4)
    optimizer = torch.optim.SGD(bimap.parameters(), lr=0.5)
    spd = covariance_pool(torch.randn(2, 10, 6, 6), 1e-4)
    for _ in range(3):
        optimizer.zero_grad()
        bimap(spd).pow(2).sum().backward()
        optimizer.step()
    w = torch.linalg.qr(bimap.weight.double()).Q
    torch.testing.assert_close(w.T @ w, torch.eye(4, dtype=torch.float64))
    out = bimap(spd)
    assert out.shape == (2, 4, 4)
    assert torch.linalg.eigvalsh(out).min() > 0


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
