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

    def fc6_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1_1 .. pool5, fc6, ReLU: the frame features of the published VGG+GRU (`VGG_gru.py`)."""
        return self.body[:34](x)



@register("vggface")
def _vggface(num_classes: int, in_chans: int, image_size: int, *, width: float = 1.0) -> FERNet:
    return VGGFace(num_classes, in_chans, width=width)
