"""`vgg16_bn` with the VGG16 FER demo's options (Leonard-Niu/Facial-Expression-Recognition,
model/VGG16.py:17-49): batch norm after every conv, a dropout before fc6 in training only, and
the dropouts after fc6 and fc7 left on at test (F.dropout's default training=True)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mrfer import nets

DEMO = {"input_dropout": 0.5, "test_dropout": True, "init": "pytorch"}


def demo_forward(model: nets.FERNet, x: torch.Tensor) -> torch.Tensor:
    """The demo's Net.forward (VGG16.py:42-49) over mrfer's modules: features, flatten, dropout
    (training only), fc1 + ReLU + dropout (always), fc2 + ReLU + dropout (always), the head.
    (torchvision's adaptive 7x7 pool, an identity at the demo's 224 px, lets the test run at 32.)"""
    net = model.backbone
    out = net.avgpool(net.features(x)).flatten(1)
    out = F.dropout(out, p=0.5, training=model.training)
    out = F.dropout(F.relu(net.classifier[0](out)))
    out = F.dropout(F.relu(net.classifier[3](out)))
    return model.head(out)


def test_layout_is_vgg16_with_batch_norm():
    model = nets.build("vgg16_bn", 7, in_chans=3, image_size=224, **DEMO)
    layers = list(model.backbone.features)
    convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(isinstance(layers[layers.index(c) + 1], torch.nn.BatchNorm2d) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in layers) == 5
    assert model.backbone.classifier[0].in_features == 7 * 7 * 512 and model.embedding_dim == 4096


def test_demo_forward_on_a_seeded_example():
    torch.manual_seed(0)
    model = nets.build("vgg16_bn", 7, in_chans=3, image_size=32, **DEMO)
    x = torch.randn(2, 3, 32, 32)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        torch.manual_seed(5)
        ours = model(x)
        torch.manual_seed(5)
        assert torch.allclose(ours, demo_forward(model, x), atol=1e-5), mode
    model.eval()
    assert not torch.allclose(model(x), model(x))            # dropout on at test: every call a new draw
    plain = nets.build("vgg16_bn", 7, in_chans=3, image_size=32).eval()
    assert torch.equal(plain(x), plain(x))                    # the default: deterministic at test


def test_pytorch_init_is_each_layers_own():
    torch.manual_seed(0)
    demo = nets.build("vgg16_bn", 7, in_chans=3, image_size=32, init="pytorch")
    fc6 = demo.backbone.classifier[0].weight
    assert fc6.abs().max() <= 1 / 25088 ** 0.5 + 1e-7         # nn.Linear's kaiming_uniform(a=sqrt(5)) bound
    torchvision_init = nets.build("vgg16_bn", 7, in_chans=3, image_size=32).backbone.classifier[0].weight
    assert abs(torchvision_init.std().item() - 0.01) < 1e-3    # torchvision's VGG: N(0, 0.01)
