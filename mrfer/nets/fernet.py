"""The interface every FER network implements, and what all model files share.

Every model is a `FERNet`:

    feature_map(x)          -> (N, C, h, w)   last conv map, before the final pooling
    features_from_map(fmap) -> (N, D)         the embedding computed from that map
    features(x)             -> (N, D)         = features_from_map(feature_map(x))
    forward(x)              -> (N, classes)   = head(features(x))

`head` is the classifier module (its own lr param group in the trainer) and
`embedding_dim` is D. The split through `feature_map` lets feature super-resolution
replace the last feature map and still reach the embedding and the logits.
"""
from __future__ import annotations

import torch
from torch import nn


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

    def constrain_(self) -> None:
        """Put constrained weights back where they must live after an optimiser step (CovPoolFER's
        BiMap: orthonormal columns). The trainer calls it after every step; a no-op here."""

    def backbone_parameters(self) -> list[nn.Parameter]:
        """All parameters except the head's (the trainer gives the two different lrs)."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]


def scaled_channels(channels: int, width: float) -> int:
    """Channel count times `width`, at least 8."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(8, int(round(channels * width)))



def first_conv_like(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A copy of `conv`'s geometry with `in_chans` inputs (gray models), freshly initialised."""
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def to_device(model: nn.Module, device, channels_last: bool = True) -> nn.Module:
    """Move a model to `device`, conv weights in channels_last (NHWC) by default: cuDNN and, on
    the CPU, oneDNN run these nets' convolutions about a third faster in that layout, and
    inputs follow the weights' layout inside each conv."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
