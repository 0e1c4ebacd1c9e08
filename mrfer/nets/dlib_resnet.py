"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`) as a torch FERNet.

The network of dlib's `examples/dnn_face_recognition_ex.cpp` (davisking/dlib), the one the
`face-recognition-models` package ships trained (`dlib_resnet` weights, `mrfer.nets.weights`):

    conv 7x7/2 (32, no padding) -> affine -> relu -> max-pool 3x3/2
    level4: 3 residual blocks of 32 filters
    level3: a down block + 3 blocks of 64     level2: a down block + 2 blocks of 128
    level1: a down block + 2 blocks of 256    level0: a down block of 256
    average pool over the whole map -> fc 128, no bias (the face descriptor)

A block is conv 3x3 -> affine -> relu -> conv 3x3 -> affine, added to its input, then a relu.
`affine` is a per-channel scale and shift (dlib's batch norm frozen into its inference form); here
each is folded into the conv before it (exact: a conv with bias, then a scale and shift, is a conv
with bias). That matters for fine-tuning: dlib's own conv weights are about 1e-3 with gains near 10
in the affine layers, so Adam's fixed-size steps (1e-4) would rewrite them in a few steps; folded,
they have the scale of any trained conv net.

A down block's first conv has stride 2 and no padding, and its shortcut is a 2x2/2 average pool of
the input; dlib adds the two with `add_prev`, which zero-pads the smaller tensor (channels and the
bottom/right edge) to the larger one's shape, so `_add_padded` does the same.

Input. dlib's `input_rgb_image_sized<150>` feeds (pixel - mean) / 256 with the per-channel means
`DLIB_MEAN`; the model takes its input already normalised that way: set the stages'
`normalize: mean_std`, `mean: DLIB_MEAN` (gray: `DLIB_GRAY_MEAN`), `std: 256` (docs/training.md).
A gray model's first conv is the RGB one summed over its input channels, and its bias takes the
difference between the three channel means and `DLIB_GRAY_MEAN`, so a gray face gives exactly the
descriptor dlib gives that face replicated into three channels.

Sizes. dlib locked the input to 150 px, but the net pools globally, so any size from `min_size` up
runs (103 px: below it a down block's 3x3 conv has no room). `stem_pool: false` drops the stem's
max-pool, so faces from 53 px run with every map twice as large as with the pool; the weights are
the same ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrfer.nets.fernet import FERNet
from mrfer.nets.registry import register

DLIB_MEAN = (122.782, 117.001, 104.298)   # input_rgb_image_sized's avg_red, avg_green, avg_blue
DLIB_GRAY_MEAN = 114.694                   # the gray model's input mean (their average, rounded)
DLIB_SCALE = 256.0                         # dlib divides the centred pixel by 256
EMBEDDING = 128

# (filters, blocks, the first one a down block) per level, from the input: level4 ... level0.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def block_downs() -> list[bool]:
    """Whether each block, from the input, is a down block."""
    return [first_down and index == 0 for _, count, first_down in LEVELS for index in range(count)]


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: a + b, each zero-padded (extra channels, bottom rows, right columns) to the
    larger of the two shapes."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))
    return pad(a) + pad(b)


class Block(nn.Module):
    """dlib's `ares` (down=False) or `ares_down` (down=True) residual block."""

    def __init__(self, in_channels: int, channels: int, down: bool):
        super().__init__()
        self.down = down
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding)   # dlib's con + affine, folded
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, shortcut))


def _sides(image_size: int, stem_pool: bool) -> list[int] | None:
    """The side of the map entering each block, then of the last map; None where a conv or pool
    has no room."""
    def out(side: int | None, kernel: int, stride: int, padding: int) -> int | None:
        if side is None or side + 2 * padding < kernel:
            return None
        return (side + 2 * padding - kernel) // stride + 1

    side = out(image_size, 7, 2, 0)
    if stem_pool:
        side = out(side, 3, 2, 0)
    sizes = []
    for down in block_downs():
        if side is None:
            return None
        sizes.append(side)
        if down:
            conv, pool = out(side, 3, 2, 0), out(side, 2, 2, 0)
            side = None if conv is None or pool is None else max(conv, pool)
    return None if side is None else sizes + [side]


def min_size(stem_pool: bool) -> int:
    """The smallest square input the net runs at: 103 px as dlib built it, 53 px without the pool."""
    return next(side for side in range(1, 1024) if _sides(side, stem_pool) is not None)


def map_sizes(image_size: int, stem_pool: bool) -> list[int]:
    """The side of the map entering each block, then of the last map (ValueError if too small)."""
    sides = _sides(image_size, stem_pool)
    if sides is None:
        raise ValueError(f"model 'dlib_resnet': image_size {image_size} is too small "
                         f"(min {min_size(stem_pool)} px with stem_pool={stem_pool})")
    return sides


class DlibResNet(FERNet):
    """dlib's face-recognition ResNet; `features` is its 128-d descriptor (see the module doc)."""

    def __init__(self, num_classes: int, in_chans: int, image_size: int, stem_pool: bool = True):
        super().__init__()
        map_sizes(image_size, stem_pool)  # refuse a size the net cannot run at, before building
        self.in_chans = in_chans
        self.stem_pool = stem_pool
        self.conv = nn.Conv2d(in_chans, 32, 7, 2, 0)   # dlib's con + affine, folded
        blocks, channels = [], 32
        widths = [filters for filters, count, _ in LEVELS for _ in range(count)]
        for filters, down in zip(widths, block_downs()):
            blocks.append(Block(channels, filters, down=down))
            channels = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, EMBEDDING, bias=False)
        self.embedding_dim = EMBEDDING
        self.head = nn.Linear(EMBEDDING, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        if self.stem_pool:
            x = F.max_pool2d(x, 3, 2)
        return self.blocks(x)

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(fmap.mean(dim=(2, 3)))


def dlib_layers() -> list[tuple[str, str | None]]:
    """The layers of dlib's serialised `anet_type`, from the output to the input as dlib nests (and
    writes) them: (kind, the model module holding its weights, or None). Kinds: fc, avg_pool (the
    global one: `pool_all`), relu, add_prev, affine, con, tag, skip, max_pool; the last entry is the
    conv that sits on dlib's input layer. An affine names the conv under it, which absorbs it."""
    layers: list[tuple[str, str | None]] = [("fc", "fc"), ("avg_pool", "pool_all")]
    downs = block_downs()
    for index in reversed(range(len(downs))):
        name = f"blocks.{index}"
        inner = [("affine", f"{name}.conv2"), ("con", f"{name}.conv2"), ("relu", None),
                 ("affine", f"{name}.conv1"), ("con", f"{name}.conv1"), ("tag", "1")]
        if downs[index]:               # relu<add_prev2<avg_pool<skip1<tag2<block<tag1<...>>>>>>>
            layers += [("relu", None), ("add_prev", None), ("avg_pool", "pool_2x2"), ("skip", "1"), ("tag", "2"),
                       *inner]
        else:                          # relu<add_prev1<block<tag1<...>>>>
            layers += [("relu", None), ("add_prev", None), *inner]
    layers += [("max_pool", None), ("relu", None), ("affine", "conv"), ("con", "conv")]
    return layers


@register("dlib_resnet")
def _dlib_resnet(num_classes: int, in_chans: int, image_size: int, *, stem_pool: bool = True) -> FERNet:
    return DlibResNet(num_classes, in_chans, image_size, stem_pool=stem_pool)
