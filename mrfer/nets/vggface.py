"""VGG-Face (Parkhi et al. 2015), laid out so the common converted `VGG_FACE.pth` loads 1:1."""
from __future__ import annotations

import torch
from torch import nn

from mrfer.nets.fernet import FERNet, scaled_channels
from mrfer.nets.registry import register

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

    `gray_channels: [mean, std]` (0..1 units) rebuilds, from a gray face normalised by them, the
    3-channel input XiaoYee's VGG_Finetune fed conv1: torchvision 0.2.0's Normalize with 1-tuples
    normalised channel 0 only (zip over the 1-tuple), so conv1 saw [z, x, x], z the normalised
    face and x the 0..1 face = z std + mean. conv1 then keeps the file's three input channels
    (nothing summed) and pads all three with zeros, as the code did.
    """

    def __init__(self, num_classes: int, in_chans: int, width: float = 1.0,
                 gray_channels: list[float] | None = None):
        super().__init__()
        if gray_channels is not None and (in_chans != 1 or len(gray_channels) != 2):
            raise ValueError(f"vggface gray_channels [mean, std] needs a gray (1-channel) face, got "
                             f"{in_chans} channels and {gray_channels}")
        self.gray_channels = None if gray_channels is None else (float(gray_channels[0]), float(gray_channels[1]))
        layers: list[nn.Module] = []
        channels = in_chans if gray_channels is None else 3
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

    def conv_input(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor conv1 sees: `x` itself, or [z, x, x] under `gray_channels` (class docstring)."""
        if self.gray_channels is None:
            return x
        mean, std = self.gray_channels
        raw = x * std + mean
        return torch.cat([x, raw, raw], 1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.body[:30](self.conv_input(x))  # conv5_3 + ReLU, before pool5

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.body[30:](fmap)

    def fc6_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1_1 .. pool5, fc6, ReLU: the frame features of the published VGG+GRU (`VGG_gru.py`)."""
        return self.body[:34](self.conv_input(x))



@register("vggface")
def _vggface(num_classes: int, in_chans: int, image_size: int, *, width: float = 1.0,
             gray_channels: list[float] | None = None) -> FERNet:
    return VGGFace(num_classes, in_chans, width=width, gray_channels=gray_channels)
