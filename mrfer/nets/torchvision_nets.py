"""torchvision's VGG16 and ResNets as FER nets (weights=None; weight import fills them).

Their own ImageNet classifier is removed (kept as a parameter-free Identity) and the FER head is
a separate module; weight import (`mrfer.nets.weights`) relies on this layout.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
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

    def __init__(self, num_classes: int, in_chans: int, arch: str = "vgg16"):
        super().__init__()
        from torchvision import models
        net = getattr(models, arch)(weights=None)
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



class TorchvisionVGG16BN(TorchvisionVGG16):
    """torchvision VGG16 with batch norm (weights=None), and the options the VGG16 FER demo
    (Leonard-Niu/Facial-Expression-Recognition, model/VGG16.py:17-49) differs by:

        input_dropout   dropout on the flattened pool5 before fc6 (the demo: 0.5, training only)
        test_dropout    the dropouts after fc6 and fc7 stay on in eval mode (the demo's
                        F.dropout without `training=`, whose default is True)
        init            torchvision (its VGG init: Kaiming conv, N(0, 0.01) fc) | pytorch (each
                        layer's own reset_parameters, as a model built from nn.Conv2d / nn.Linear /
                        nn.BatchNorm2d is initialised: the demo's Net)

    torchvision's adaptive 7x7 average pool is an identity at 224 px, where the demo has none."""

    def __init__(self, num_classes: int, in_chans: int, input_dropout: float, test_dropout: bool, init: str):
        super().__init__(num_classes, in_chans, arch="vgg16_bn")
        if not 0 <= input_dropout < 1:
            raise ValueError(f"vgg16_bn input_dropout must be in [0, 1), got {input_dropout}")
        self.input_dropout, self.test_dropout = input_dropout, test_dropout
        if init == "pytorch":
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    module.reset_parameters()

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        x = torch.flatten(net.avgpool(net.features[-1](fmap)), 1)
        x = F.dropout(x, self.input_dropout, training=self.training) if self.input_dropout else x
        fc6, relu6, drop6, fc7, relu7, drop7 = list(net.classifier)[:6]
        if not self.test_dropout:
            return drop7(relu7(fc7(drop6(relu6(fc6(x))))))
        x = F.dropout(relu6(fc6(x)), drop6.p, training=True)
        return F.dropout(relu7(fc7(x)), drop7.p, training=True)


@register("vgg16")
def _vgg16(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionVGG16(num_classes, in_chans)


@register("vgg16_bn")
def _vgg16_bn(num_classes: int, in_chans: int, image_size: int, *, input_dropout: float = 0.0,
              test_dropout: bool = False, init: Literal["torchvision", "pytorch"] = "torchvision") -> FERNet:
    return TorchvisionVGG16BN(num_classes, in_chans, input_dropout, test_dropout, init)


@register("resnet18")
def _resnet18(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionResNet("resnet18", num_classes, in_chans)


@register("resnet50")
def _resnet50(num_classes: int, in_chans: int, image_size: int) -> FERNet:
    return TorchvisionResNet("resnet50", num_classes, in_chans)
