"""VGG-Face's published input (XiaoYee/emotion_classification VGG_Finetune/train.py:40, 45):
Normalize((0.5074,), (0.2551,)) of torchvision 0.2.0 on a 3-channel ImageFolder face normalises
channel 0 only (transforms/functional.py:160-161 zips the tensor's channels with 1-tuples).
`vggface`'s `gray_channels` option must compute exactly that network on mrfer's gray face."""
from __future__ import annotations

import torch

from mrfer import nets
from mrfer.nets import weights

MEAN, STD = 0.507395516207, 0.255128989415


def file_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A VGG_FACE.pth-shaped state at width 1/8 (the converted file's keys), random values."""
    widths = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    gen = torch.Generator().manual_seed(seed)
    state, chans = {}, 3
    for index, width in zip(indices, widths):
        state[f"{index}.weight"] = torch.randn(width, chans, 3, 3, generator=gen) * (2 / (9 * chans)) ** 0.5
        state[f"{index}.bias"] = torch.randn(width, generator=gen) * 0.1
        chans = width
    state.update({"32.1.weight": torch.randn(512, chans * 49, generator=gen) * (2 / (chans * 49)) ** 0.5,
                  "32.1.bias": torch.zeros(512),
                  "35.1.weight": torch.randn(512, 512, generator=gen) * (2 / 512) ** 0.5, "35.1.bias": torch.zeros(512),
                  "38.1.weight": torch.randn(2622, 512, generator=gen), "38.1.bias": torch.zeros(2622)})
    return state


def torchvision_020_normalize(face: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """F.normalize of torchvision 0.2.0 on one CHW tensor: `for t, m, s in zip(tensor, mean, std):
    t.sub_(m).div_(s)`; zip stops at the shortest, here the 1-tuples."""
    face = face.clone()
    for t, m, s in zip(face, mean, std):
        t.sub_(m).div_(s)
    return face


def test_gray_channels_is_the_channel0_only_normalisation():
    state = file_state()
    ours = nets.build("vggface", 7, in_chans=1, image_size=32, width=0.125, gray_channels=[MEAN, STD])
    weights.import_state(ours, "vggface", state, source="VGG_FACE.pth")
    assert ours.body[0].weight.shape[1] == 3 and torch.equal(ours.body[0].weight, state["0.weight"])  # nothing summed
    reference = nets.build("vggface", 7, in_chans=3, image_size=32, width=0.125)
    weights.import_state(reference, "vggface", state, source="VGG_FACE.pth")
    reference.head.load_state_dict(ours.head.state_dict())
    ours.eval(), reference.eval()

    gray = torch.randint(0, 256, (4, 1, 32, 32), generator=torch.Generator().manual_seed(1)).float()
    # the code: ImageFolder's RGB copy of the gray PNG, ToTensor (/255), Normalize of torchvision 0.2.0
    published = torch.stack([torchvision_020_normalize(g.repeat(3, 1, 1) / 255, (MEAN,), (STD,)) for g in gray])
    assert torch.equal(published[:, 1], gray[:, 0] / 255)                  # channels 1-2 left in 0..1
    # mrfer: one gray channel normalised by the same mean and std in 0..255 units
    z = (gray - MEAN * 255) / (STD * 255)
    with torch.no_grad():
        expected, got = reference(published), ours(z)
        assert torch.allclose(ours.conv_input(z), published, atol=1e-5)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
        assert torch.allclose(ours.features(z), reference.features(published), rtol=1e-4, atol=1e-4)
    # the summed conv1 of the plain gray model is another function on this input
    summed = nets.build("vggface", 7, in_chans=1, image_size=32, width=0.125)
    weights.import_state(summed, "vggface", state, source="VGG_FACE.pth")
    summed.head.load_state_dict(ours.head.state_dict())
    with torch.no_grad():
        assert not torch.allclose(summed.eval()(z), expected, rtol=1e-2, atol=1e-2)
