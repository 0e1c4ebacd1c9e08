"""Baseline CNN of the FER development framework (extract -> assemble -> train).

Four blocks of [3x1 conv -> 1x3 conv -> BN -> ReLU -> 2x2 max-pool -> dropout], widths
64/128/256/512 (times `width`), then dense 512 -> 256 -> classes with BN/ReLU/dropout between
the dense layers. The factorised 3x1 + 1x3 convs cost 2/3 of a 3x3 conv. The embedding is
the 256-d dense layer.
"""
from __future__ import annotations

import torch
from torch import nn

from mrfer.nets.fernet import FERNet, scaled_channels
from mrfer.nets.registry import register

CONV_WIDTHS = (64, 128, 256, 512)
DENSE_WIDTHS = (512, 256)


class BaselineCNN(FERNet):
    def __init__(self, num_classes: int, in_chans: int, image_size: int, width: float = 1.0,
                 dropout: float = 0.25):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_chans
        for base in CONV_WIDTHS:
            out = scaled_channels(base, width)
            blocks += [
                nn.Conv2d(channels, out, (3, 1), padding=(1, 0)),
                nn.Conv2d(out, out, (1, 3), padding=(0, 1), bias=False),  # BN follows
                nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                nn.MaxPool2d(2), nn.Dropout(dropout),
            ]
            channels = out
        self.conv = nn.Sequential(*blocks)
        # The dense layer flattens the map of the configured size (image_size // 16 per side).
        # Adaptive pooling to that size is an identity there and lets other sizes still run.
        side = image_size // 16
        hidden, embed = DENSE_WIDTHS
        self.dense = nn.Sequential(
            nn.AdaptiveAvgPool2d(side), nn.Flatten(),
            nn.Linear(channels * side * side, hidden, bias=False), nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, embed, bias=False), nn.BatchNorm1d(embed),
            nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.embedding_dim = embed
        self.head = nn.Linear(embed, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv[:-2](x)  # last block's ReLU output, before its max-pool and dropout

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.dense(self.conv[-2:](fmap))


@register("baseline_cnn")
def _baseline_cnn(num_classes: int, in_chans: int, image_size: int, *, width: float = 1.0,
                  dropout: float = 0.25) -> FERNet:
    return BaselineCNN(num_classes, in_chans, image_size, width=width, dropout=dropout)
