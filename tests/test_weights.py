"""Weight import from fixture files in each real format: real key names and shapes, random
values, and every tensor checked at the place it must land."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from mrfer import nets
from mrfer.errors import UnsafeFileError
from mrfer.nets import weights

# ---------------------------------------------------------------- VGG-Face

# The Lua-Torch -> PyTorch conversion (VGG_FACE.pth): one nn.Sequential numbering,
# 13 convs, then fc6/fc7/fc8 each inside a Sequential(Lambda, Linear).
VGGFACE_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_CONV_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def vggface_file_shapes(divisor: int = 1) -> dict[str, tuple[int, ...]]:
    """The converted VGG-Face state dict's shapes (divisor 1), or all widths / divisor."""
    shapes, in_chans = {}, 3
    for index, width in zip(VGGFACE_CONV_INDICES, VGG16_CONV_WIDTHS):
        shapes[f"{index}.weight"] = (width // divisor, in_chans, 3, 3)
        shapes[f"{index}.bias"] = (width // divisor,)
        in_chans = width // divisor
    fc = 4096 // divisor
    shapes.update({"32.1.weight": (fc, in_chans * 7 * 7), "32.1.bias": (fc,),
                   "35.1.weight": (fc, fc), "35.1.bias": (fc,),
                   "38.1.weight": (2622, fc), "38.1.bias": (2622,)})
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.rand(shape, generator=generator) + 0.1 for key, shape in shapes.items()}


def vggface_destination(model: nets.FERNet, key: str) -> torch.Tensor:
    """Where file key `key` must land: body[i] for convs, body[i][1] for fc6/fc7."""
    index, *path = key.split(".")
    module = model.body[int(index)]
    if len(path) == 2:  # "32.1.weight": the Linear inside the converter's Sequential
        module = module[int(path[0])]
    return getattr(module, path[-1])


def test_vggface_real_shapes_fit_the_full_model():
    # Full size is 580 MB of floats: check the real layout on the meta device (no memory).
    for in_chans in (3, 1):
        with torch.device("meta"):
            model = nets.build("vggface", 7, in_chans=in_chans, image_size=224)
            state = {k: torch.empty(s) for k, s in vggface_file_shapes().items()}
        weights.import_state(model, "vggface", state, source="VGG_FACE.pth")


@pytest.mark.parametrize("legacy_format", [False, True])
def test_vggface_values_land_in_place(tmp_path, legacy_format):
    # Width 1/8 model and file: same keys and layout, shapes / 8.
    state = random_state(vggface_file_shapes(divisor=8))
    path = tmp_path / "VGG_FACE.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy_format)
    model = nets.build("vggface", 7, image_size=64, width=0.125)
    head_before = model.head.weight.detach().clone()
    weights.load_vggface(model, path)
    for key, value in state.items():
        if key.startswith("38."):
            continue
        assert torch.equal(vggface_destination(model, key), value), key
    assert torch.equal(model.head.weight, head_before)  # fc8 (2622 identities) not loaded
    assert model.head.out_features == 7


def test_wrapped_checkpoint_with_module_prefix_loads(tmp_path):
    state = random_state(vggface_file_shapes(divisor=8))
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 3}, path)
    model = nets.build("vggface", 7, image_size=64, width=0.125)
    weights.import_weights(model, "vggface", path)
    assert torch.equal(model.body[28].weight, state["28.weight"])


def test_mismatched_file_names_missing_unexpected_and_shapes(tmp_path):
    state = random_state(vggface_file_shapes(divisor=8))
    del state["28.weight"]
    state["99.weight"] = torch.zeros(3)
    state["35.1.bias"] = torch.zeros(5)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    model = nets.build("vggface", 7, image_size=64, width=0.125)
    before = model.body[0].weight.detach().clone()
    with pytest.raises(ValueError) as error:
        weights.load_vggface(model, path)
    message = str(error.value)
    assert str(path) in message
    assert "missing model keys (1): body.28.weight" in message
    assert "unexpected file keys (1): 99.weight" in message
    assert "35.1.bias (5,) -> body.35.1.bias (512,)" in message
    assert torch.equal(model.body[0].weight, before)  # nothing half-loaded


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "VGG_FACE.pth"
    torch.save(random_state(vggface_file_shapes(divisor=8)), path)
    with torch.device("meta"):
        resnet = nets.build("resnet18", 7)
    with pytest.raises(ValueError, match="'vggface' weights fit model.*not TorchvisionResNet"):
        weights.load_vggface(resnet, path)
    with pytest.raises(ValueError, match="unknown weight kind 'imagenet'.*vggface2_senet"):
        weights.import_weights(resnet, "imagenet", path)


# ---------------------------------------------------------------- torchvision ImageNet


def test_torchvision_resnet18_checkpoint_values(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()  # the hub file's layout
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    model = nets.build("resnet18", 7)
    head_before = model.head.weight.detach().clone()
    weights.load_torchvision(model, path)
    loaded = model.backbone.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            assert key not in loaded
        else:
            assert torch.equal(loaded[key], value), key
    assert torch.equal(model.head.weight, head_before)

    gray = nets.build("resnet18", 7, in_chans=1)
    weights.import_state(gray, "torchvision", state)
    assert torch.equal(gray.backbone.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))


@pytest.mark.parametrize("arch", ["resnet50", "vgg16"])
def test_torchvision_checkpoint_layouts_fit(arch):
    with torch.device("meta"):
        state = getattr(torchvision.models, arch)(weights=None).state_dict()
        model = nets.build(arch, 7)
    # Older hub files have no BN num_batches_tracked; both forms load.
    without_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    weights.import_state(model, "torchvision", state)
    weights.import_state(model, "torchvision", without_counters)


def test_resnet18_checkpoint_into_resnet50_fails_with_keys():
    with torch.device("meta"):
        state = torchvision.models.resnet18(weights=None).state_dict()
        model = nets.build("resnet50", 7)
    with pytest.raises(ValueError, match="resnet18.pth.*missing model keys.*backbone.layer1.0.conv3"
                                         ".*shape mismatches"):
        weights.import_state(model, "torchvision", state, source="resnet18.pth")
    del state["layer1.0.conv1.weight"]
    state["layer5.0.conv1.weight"] = torch.empty(1, device="meta")
    with torch.device("meta"):
        resnet18 = nets.build("resnet18", 7)
    with pytest.raises(ValueError, match="missing model keys \\(1\\): backbone.layer1.0.conv1"
                                         ".*unexpected file keys \\(1\\): layer5.0.conv1.weight"):
        weights.import_state(resnet18, "torchvision", state)


# ---------------------------------------------------------------- VGGFace2 SE-ResNet-50


def senet_pkl_shapes() -> dict[str, tuple[int, ...]]:
    """senet50_*_weight.pkl (VGGFace2-pytorch): its SENet's names; SE convs are conv4/conv5."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, out, inp, k, bias=False):
        shapes[f"{name}.weight"] = (out, inp, k, k)
        if bias:
            shapes[f"{name}.bias"] = (out,)

    def bn(name, channels):
        for param in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{param}"] = (channels,)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for block in range(depth):
            name = f"layer{stage}.{block}"
            conv(f"{name}.conv1", planes, inplanes, 1)
            bn(f"{name}.bn1", planes)
            conv(f"{name}.conv2", planes, planes, 3)
            bn(f"{name}.bn2", planes)
            conv(f"{name}.conv3", planes * 4, planes, 1)
            bn(f"{name}.bn3", planes * 4)
            conv(f"{name}.conv4", planes * 4 // 16, planes * 4, 1, bias=True)
            conv(f"{name}.conv5", planes * 4, planes * 4 // 16, 1, bias=True)
            if block == 0:
                conv(f"{name}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{name}.downsample.1", planes * 4)
            inplanes = planes * 4
    shapes["fc.weight"], shapes["fc.bias"] = (8631, 2048), (8631,)
    return shapes


CAFFE_BLOCK_LAYERS = {"conv1": "1x1_reduce", "bn1": "1x1_reduce_bn", "conv2": "3x3",
                      "bn2": "3x3_bn", "conv3": "1x1_increase", "bn3": "1x1_increase_bn",
                      "conv4": "1x1_down", "conv5": "1x1_up", "downsample.0": "1x1_proj",
                      "downsample.1": "1x1_proj_bn"}


def caffe_key(pkl_key: str) -> str:
    """The Caffe layer name (VGGFace2 authors' PyTorch port) of a .pkl key."""
    module, param = pkl_key.rsplit(".", 1)
    stem = {"conv1": "conv1_7x7_s2", "bn1": "conv1_7x7_s2_bn", "fc": "classifier"}
    if module in stem:
        return f"{stem[module]}.{param}"
    layer, block, layer_in_block = module.split(".", 2)
    return f"conv{int(layer[5:]) + 1}_{int(block) + 1}_{CAFFE_BLOCK_LAYERS[layer_in_block]}.{param}"


def timm_key(pkl_key: str) -> str:
    """Where a .pkl key lands in the seresnet50 FERNet (timm names SE convs se.fc1/se.fc2)."""
    return "backbone." + pkl_key.replace(".conv4.", ".se.fc1.").replace(".conv5.", ".se.fc2.")


@pytest.fixture(scope="module")
def senet_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {key: rng.random(shape, dtype=np.float32) + np.float32(0.1)
            for key, shape in senet_pkl_shapes().items()}


def check_senet_values(model, arrays, conv1):
    loaded = model.state_dict()
    for key, array in arrays.items():
        if key.startswith("fc."):
            continue
        if key == "conv1.weight":  # flipped and/or summed: summation order may differ
            torch.testing.assert_close(loaded["backbone.conv1.weight"], conv1)
        else:
            assert torch.equal(loaded[timm_key(key)], torch.from_numpy(array)), key


def test_vggface2_pkl_values_land_in_timm_names(tmp_path, senet_arrays):
    path = tmp_path / "senet50_ft_weight.pkl"
    with path.open("wb") as f:
        pickle.dump(senet_arrays, f, protocol=4)
    model = nets.build("seresnet50", 7, image_size=224, caffe_layout=True)
    head_before = model.head.weight.detach().clone()
    weights.load_vggface2_senet(model, path)
    bgr_conv1 = torch.from_numpy(senet_arrays["conv1.weight"])
    check_senet_values(model, senet_arrays, conv1=bgr_conv1.flip(1))  # RGB input order
    assert torch.equal(model.head.weight, head_before)

    as_rgb = {k: torch.from_numpy(v) for k, v in senet_arrays.items()}
    weights.import_state(model, "vggface2_senet", as_rgb, file_channel_order="rgb")
    check_senet_values(model, senet_arrays, conv1=bgr_conv1)


def test_vggface2_caffe_named_file_into_gray_model(tmp_path, senet_arrays):
    state = {caffe_key(k): torch.from_numpy(v) for k, v in senet_arrays.items()}
    state["classifier.weight"] = state["classifier.weight"].reshape(8631, 2048, 1, 1)  # a conv
    assert "conv2_1_1x1_down.bias" in state and "conv5_3_1x1_increase_bn.running_var" in state
    path = tmp_path / "senet50_ft.pth"
    torch.save(state, path)
    model = nets.build("seresnet50", 7, in_chans=1, image_size=64, caffe_layout=True)
    weights.import_weights(model, "vggface2_senet", path)
    summed = torch.from_numpy(senet_arrays["conv1.weight"]).sum(1, keepdim=True)
    check_senet_values(model, senet_arrays, conv1=summed)


def test_vggface2_caffe_prototxt_spelling_with_slashes(senet_arrays):
    state = {caffe_key(k).replace("_bn.", "/bn.").replace("conv1_7x7", "conv1/7x7"):
             torch.from_numpy(v) for k, v in senet_arrays.items()}
    assert "conv1/7x7_s2/bn.running_mean" in state
    with torch.device("meta"):
        model = nets.build("seresnet50", 7, caffe_layout=True)
    weights.import_state(model, "vggface2_senet", state)  # every key placed, none left over


def test_vggface2_file_with_foreign_names_is_refused():
    with torch.device("meta"):
        model = nets.build("seresnet50", 7)
    with pytest.raises(ValueError, match="x.pkl: not a VGGFace2 SE-ResNet-50 weight file"):
        weights.import_state(model, "vggface2_senet", {"features.0.weight": torch.zeros(1)},
                             source="x.pkl")


# ---------------------------------------------------------------- safety


class _RunsCommand:
    """Pickles as a call to os.system: what a malicious weight file does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "senet50_ft_weight.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": _RunsCommand(f"touch {marker}")}))
    with pytest.raises(UnsafeFileError, match=r"^refused: .*senet50_ft_weight.pkl contains posix\.system, which a "
                       "weights-only load will not run; get the weights as a plain state dict or numpy arrays$"):
        weights.read_weight_file(path)
    assert not marker.exists()


def test_torch_file_is_loaded_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "VGG_FACE.pth"
    torch.save({"0.weight": _RunsCommand(f"touch {marker}")}, path)
    with pytest.raises(UnsafeFileError, match=r"^refused: .*VGG_FACE.pth contains posix\.system, which a weights-only") as e:
        weights.read_weight_file(path)
    assert "weights_only=False" not in str(e.value)  # torch's advice is the one thing not to do here
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_unsafe_weight_file_is_one_line_and_exit_2(kind, tmp_path):
    """Through a stage's error handling: one line naming the file and the global, no traceback."""
    marker = tmp_path / "pwned"
    path = tmp_path / ("w.pkl" if kind == "pickle" else "w.pth")
    payload = {"conv1.weight": _RunsCommand(f"touch {marker}")}
    path.write_bytes(pickle.dumps(payload)) if kind == "pickle" else torch.save(payload, path)
    script = f"from mrfer import cli; from mrfer.nets import weights; cli.run(lambda: weights.read_weight_file({str(path)!r}))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"refused: {path} contains posix.system" in lines[0]
    assert not marker.exists()


def test_protocol2_pickle_with_numpy1_names_loads(tmp_path):
    # As written by numpy 1.x: numpy.core.multiarray._reconstruct, bytes via _codecs.encode.
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(2.5)}
    data = pickle.dumps(arrays, protocol=2).replace(b"numpy._core.multiarray",
                                                    b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data and b"_codecs" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data)
    state = weights.read_weight_file(path)
    assert torch.equal(state["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert state["b"].item() == 2.5


def test_non_array_entries_are_refused(tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="odd.pkl: entry 'conv1.weight' is a list"):
        weights.read_weight_file(path)
