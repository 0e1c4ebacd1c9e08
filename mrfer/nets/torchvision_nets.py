"""torchvision's VGG16 and ResNets as FER nets (weights=None; weight import fills them).

Their own ImageNet classifier is removed (kept as a parameter-free Identity) and the FER head is
a separate module; weight import (`mrfer.nets.weights`) relies on this layout.
"""
from __future__ import annotations

import torch
from torch import nn

from mrfer.nets.fernet import FERNet, first_conv_like
from mrfer.nets.registry import register


class TorchvisionResNet(FERNet):
    """torchvision ResNet (weights=None); `backbone.fc` is an Identity, the FER head is `head`."""

    replaced_head = ("fc.",)  # keys of an ImageNet checkpoint the FER head replaces

    def __init__(self, arch: str, num_classes: int, in_chans: int):
        super().__init__()
        from torchvision import models
        net = getattr(models, arch)(weights=None)
        if in_chans != 3:
            net.conv1 = first_conv_like(net.conv1, in_chans)
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
            net.features[0] = first_conv_like(net.features[0], in_chans)
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



@register("vgg16")
def _vgg16(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionVGG16(num_classes, in_chans)


@register("resnet18")
def _resnet18(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionResNet("resnet18", num_classes, in_chans)


@register("resnet50")
def _resnet50(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionResNet("resnet50", num_classes, in_chans)
