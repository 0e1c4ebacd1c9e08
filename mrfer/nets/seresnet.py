"""SE-ResNet-50 from timm, MAFER's backbone (VGGFace2 weights import into it)."""
from __future__ import annotations

import torch
from torch import nn

from mrfer.nets.fernet import FERNet
from mrfer.nets.registry import register


class TimmSEResNet50(FERNet):
    """timm `seresnet50` (pretrained=False), MAFER's backbone; `backbone.fc` is an Identity.

    `caffe_layout=True` reproduces the VGGFace2 Caffe SE-ResNet-50 the imported weights were
    trained with: stride 2 on the first 1x1 conv of each downsampling block (timm puts it on
    the 3x3) and a 3x3/2 pool1 without padding, in ceil mode. Parameters are identical.

    `bn_momentum` is every batch norm's momentum: MAFER's Caffe-converted model builds each with
    momentum 0.0 (MainModel.py), so training normalises by the batch but never moves the running
    statistics it was loaded with; PyTorch's default is 0.1.
    """

    def __init__(self, num_classes: int, in_chans: int, caffe_layout: bool = False, bn_momentum: float = 0.1):
        super().__init__()
        import timm
        net = timm.create_model("seresnet50", pretrained=False, num_classes=0, in_chans=in_chans)
        if caffe_layout:
            for stage in (net.layer2, net.layer3, net.layer4):
                stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
            net.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
        self.caffe_layout = caffe_layout
        self.embedding_dim = net.num_features
        self.backbone = net
        self.head = nn.Linear(self.embedding_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(fmap, pre_logits=True)



@register("seresnet50")
def _seresnet50(num_classes: int, in_chans: int, image_size: int, *,
                caffe_layout: bool = False, bn_momentum: float = 0.1) -> FERNet:
    if not 0 <= bn_momentum <= 1:
        raise ValueError(f"bn_momentum {bn_momentum}: must be in [0, 1]")
    return TimmSEResNet50(num_classes, in_chans, caffe_layout=caffe_layout, bn_momentum=bn_momentum)
