"""Model registry: every FER network is built by name, with one interface.

Every model is a `FERNet`:

    feature_map(x)          -> (N, C, h, w)   last conv map, before the final pooling
    features_from_map(fmap) -> (N, D)         the embedding computed from that map
    features(x)             -> (N, D)         = features_from_map(feature_map(x))
    forward(x)              -> (N, classes)   = head(features(x))

`head` is the classifier module (its own lr param group in the trainer) and
`embedding_dim` is D. The split through `feature_map` lets feature super-resolution
replace the last feature map and still reach the embedding and the logits.

Backbones from torchvision/timm are wrapped so their own ImageNet/face classifier is
removed (kept as a parameter-free Identity) and the FER head is a separate module;
weight import (`mrfer.nets.weights`) relies on this layout.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["FERNet", "available", "build", "default_options", "register", "to_device"]


class FERNet(nn.Module):
    """Base class: subclasses set `head`, `embedding_dim` and implement the two map methods."""

    head: nn.Module
    embedding_dim: int

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_from_map(self.feature_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """All parameters except the head's (the trainer gives the two different lrs)."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]


_BUILDERS: dict[str, Callable[..., FERNet]] = {}


def register(name: str) -> Callable:
    """Register a builder `fn(num_classes, in_chans, image_size, *, option=default, ...)`.

    Its keyword-only arguments are the model's options; anything else passed to `build`
    is rejected.
    """
    def decorator(fn: Callable[..., FERNet]) -> Callable[..., FERNet]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = fn
        return fn
    return decorator


def available() -> list[str]:
    return sorted(_BUILDERS)


def _builder(name: str) -> Callable[..., FERNet]:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available())}")
    return _BUILDERS[name]


def default_options(name: str) -> dict[str, Any]:
    """The options model `name` accepts, with their defaults."""
    params = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build(name: str, num_classes: int, in_chans: int = 3, image_size: int = 64,
          **options: Any) -> FERNet:
    """Build model `name` for `num_classes` classes on (in_chans, image_size, image_size) input.

    The returned model carries `config`, the exact arguments, so `build(**model.config)`
    rebuilds it (checkpoints store it).
    """
    builder = _builder(name)
    allowed = default_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"allowed options: {', '.join(sorted(allowed)) or 'none'}")
    if in_chans not in (1, 3):
        raise ValueError(f"model {name!r}: in_chans must be 1 (gray) or 3 (RGB), got {in_chans}")
    if image_size < 32:
        raise ValueError(f"model {name!r}: image_size must be >= 32, got {image_size}")
    if num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be >= 2, got {num_classes}")
    model = builder(num_classes, in_chans, image_size, **options)
    model.config = {"name": name, "num_classes": num_classes, "in_chans": in_chans,
                    "image_size": image_size, **allowed, **options}
    return model


def to_device(model: nn.Module, device, channels_last: bool = True) -> nn.Module:
    """Move a model to `device`, conv weights in channels_last (NHWC) by default: cuDNN and, on
    the CPU, oneDNN run these nets' convolutions about a third faster in that layout, and
    inputs follow the weights' layout inside each conv."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


# ---------------------------------------------------------------- wrapped backbones


def _first_conv_like(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A copy of `conv`'s geometry with `in_chans` inputs (gray models), freshly initialised."""
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


class TorchvisionResNet(FERNet):
    """torchvision ResNet (weights=None); `backbone.fc` is an Identity, the FER head is `head`."""

    replaced_head = ("fc.",)  # keys of an ImageNet checkpoint the FER head replaces

    def __init__(self, arch: str, num_classes: int, in_chans: int):
        super().__init__()
        from torchvision import models
        net = getattr(models, arch)(weights=None)
        if in_chans != 3:
            net.conv1 = _first_conv_like(net.conv1, in_chans)
        self.embedding_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        self.head = nn.Linear(self.embedding_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.backbone.avgpool(fmap), 1)


class TorchvisionVGG16(FERNet):
    """torchvision VGG16 (weights=None). Its adaptive 7x7 pooling makes small inputs work;
    the embedding is fc7 (4096) and `backbone.classifier[6]` (ImageNet fc8) is an Identity."""

    replaced_head = ("classifier.6.",)

    def __init__(self, num_classes: int, in_chans: int):
        super().__init__()
        from torchvision import models
        net = models.vgg16(weights=None)
        if in_chans != 3:
            net.features[0] = _first_conv_like(net.features[0], in_chans)
        net.classifier[6] = nn.Identity()
        self.embedding_dim = 4096
        self.backbone = net
        self.head = nn.Linear(self.embedding_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features[:-1](x)  # conv5_3 + ReLU, before pool5

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        x = net.avgpool(net.features[-1](fmap))
        return net.classifier(torch.flatten(x, 1))


# VGG16 conv widths; "M" is a 2x2 max-pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                 512, 512, 512, "M")


class VGGFace(FERNet):
    """VGG-Face (Parkhi et al. 2015) laid out like the common Lua-Torch -> PyTorch conversion
    (`VGG_FACE.pth`), so that file's keys load 1:1 into `body`:

        body[0..30]   13 conv/ReLU pairs and 5 ceil-mode max-pools (convs at 0,2,5,7,10,12,14,
                      17,19,21,24,26,28)
        body[31]      flatten (plus adaptive 7x7 pooling, an identity at 224 px, for small faces)
        body[32]      Sequential(Identity, Linear 25088->4096)   fc6 -> `32.1.weight`
        body[33,34]   ReLU, Dropout
        body[35]      Sequential(Identity, Linear 4096->4096)    fc7 -> `35.1.weight`
        body[36,37]   ReLU, Dropout
        head          Linear 4096->num_classes, replacing fc8 (`38.1.*`, 2622 identities)

    The Identity at index 0 of 32/35 stands where the converter's view-Lambda was.
    `width` < 1 scales every conv and fc width (a cheap version; no weights fit it).
    """

    def __init__(self, num_classes: int, in_chans: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                out = scaled_channels(item, width)
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
                channels = out
        fc = scaled_channels(4096, width)
        layers += [
            nn.Sequential(nn.AdaptiveAvgPool2d(7), nn.Flatten()),
            nn.Sequential(nn.Identity(), nn.Linear(channels * 7 * 7, fc)),
            nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Sequential(nn.Identity(), nn.Linear(fc, fc)),
            nn.ReLU(inplace=True), nn.Dropout(0.5),
        ]
        self.body = nn.Sequential(*layers)
        self.embedding_dim = fc
        self.head = nn.Linear(fc, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.body[:30](x)  # conv5_3 + ReLU, before pool5

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.body[30:](fmap)


class TimmSEResNet50(FERNet):
    """timm `seresnet50` (pretrained=False), MAFER's backbone; `backbone.fc` is an Identity.

    `caffe_layout=True` reproduces the VGGFace2 Caffe SE-ResNet-50 the imported weights were
    trained with: stride 2 on the first 1x1 conv of each downsampling block (timm puts it on
    the 3x3) and a 3x3/2 pool1 without padding, in ceil mode. Parameters are identical.
    """

    def __init__(self, num_classes: int, in_chans: int, caffe_layout: bool = False):
        super().__init__()
        import timm
        net = timm.create_model("seresnet50", pretrained=False, num_classes=0, in_chans=in_chans)
        if caffe_layout:
            for stage in (net.layer2, net.layer3, net.layer4):
                stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
            net.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
        self.caffe_layout = caffe_layout
        self.embedding_dim = net.num_features
        self.backbone = net
        self.head = nn.Linear(self.embedding_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(fmap, pre_logits=True)


def scaled_channels(channels: int, width: float) -> int:
    """Channel count times `width`, at least 8."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(8, int(round(channels * width)))


# ---------------------------------------------------------------- registered builders
# Imports of the model modules are inside the builders: they import FERNet from here.


@register("baseline_cnn")
def _baseline_cnn(num_classes: int, in_chans: int, image_size: int, *, width: float = 1.0,
                  dropout: float = 0.25) -> FERNet:
    from mrfer.nets.baseline_cnn import BaselineCNN
    return BaselineCNN(num_classes, in_chans, image_size, width=width, dropout=dropout)


@register("covpool")
def _covpool(num_classes: int, in_chans: int, image_size: int, *, width: float = 1.0,
             cov_channels: int = 128, bimap_dim: int | None = None, embed_dim: int = 256,
             eps: float = 1e-4, dropout: float = 0.5) -> FERNet:
    from mrfer.nets.covpool import CovPoolNet
    return CovPoolNet(num_classes, in_chans, width=width, cov_channels=cov_channels,
                      bimap_dim=bimap_dim, embed_dim=embed_dim, eps=eps, dropout=dropout)


@register("vgg16")
def _vgg16(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionVGG16(num_classes, in_chans)


@register("vggface")
def _vggface(num_classes: int, in_chans: int, image_size: int, *, width: float = 1.0) -> FERNet:
    return VGGFace(num_classes, in_chans, width=width)


@register("resnet18")
def _resnet18(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionResNet("resnet18", num_classes, in_chans)


@register("resnet50")
def _resnet50(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionResNet("resnet50", num_classes, in_chans)


@register("seresnet50")
def _seresnet50(num_classes: int, in_chans: int, image_size: int, *,
                caffe_layout: bool = False) -> FERNet:
    return TimmSEResNet50(num_classes, in_chans, caffe_layout=caffe_layout)
