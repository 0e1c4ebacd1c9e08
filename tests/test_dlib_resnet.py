"""dlib's face-recognition ResNet as a torch model: the descriptor it gives equals dlib's own, on
chips aligned by dlib's 5-point predictor (both files ship with face-recognition-models, so this
runs on every machine); any other file is refused in one line; face-pretrain imports it as is."""
from __future__ import annotations

import subprocess
import sys

from pathlib import Path

import cv2
import dlib   # dlib-bin, pinned in requirements.txt
import numpy as np
import pytest
import torch

from assembled_fixture import make_assembled
from mrfer import nets
from mrfer.data import detect, synthetic
from mrfer.errors import InputError, MissingInputError
from mrfer.nets import checkpoint, weights
from mrfer.nets.dlib_resnet import DLIB_GRAY_MEAN, DLIB_MEAN, DLIB_SCALE, _add_padded, map_sizes, min_size
from mrfer.train import face
from params_fixture import section

RESNET = "dlib_face_recognition_resnet_model_v1.dat"
NOT_THE_NET = "not dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat)"


def colour_face(index: int) -> np.ndarray:
    """A synthetic apex face (256 px), given colour: each RGB channel its own gain and offset."""
    _, ident, codes = synthetic.subject_plan(0, index, expression_rate=0.5, contempt_rate=0.1)
    gray, _ = synthetic.sequence_frames(ident, codes[0], 2, np.random.default_rng([0, index, 1]), (256, 256),
                                        difficulty=0.0, apex_intensity=1.0)[-1]
    ramp = np.linspace(0.8, 1.1, 256)[None, :]
    return np.stack([gray * ramp, gray * 0.95, gray * 0.7 + 30], axis=-1).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dlib_models():
    return (dlib.shape_predictor(detect.model_file("shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(detect.model_file(RESNET)))


@pytest.fixture(scope="module")
def chips(dlib_models):
    """Two faces as dlib aligns them: 150 px chips from the 5 points found in the whole image (the
    rectangle given, not detected), and dlib's descriptor of each, computed from image + shape."""
    predictor, recognizer = dlib_models
    out = []
    for index in (3, 7):
        image = colour_face(index)
        shape = predictor(image, dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1))
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        descriptor = np.array(recognizer.compute_face_descriptor(image, shape))
        assert np.array_equal(descriptor, np.array(recognizer.compute_face_descriptor(chip)))  # the chip variant
        out.append((chip, descriptor))
    return out


def imported(in_chans: int, image_size: int = 150, **options) -> nets.FERNet:
    model = nets.build("dlib_resnet", 7, in_chans=in_chans, image_size=image_size, **options).eval()
    weights.import_weights(model, "dlib_resnet", weights.DLIB_RESNET_FILE)
    return model


def rgb_input(chip: np.ndarray) -> torch.Tensor:
    mean = torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)
    return (torch.from_numpy(chip).permute(2, 0, 1)[None].float() - mean) / DLIB_SCALE


def test_rgb_descriptor_equals_dlibs(chips):
    model = imported(3)
    for chip, descriptor in chips:
        with torch.no_grad():
            ours = model.features(rgb_input(chip))[0].double().numpy()
        assert np.abs(ours - descriptor).max() < 1e-4
        assert np.linalg.norm(descriptor) > 0.5          # a real descriptor, not zeros
    assert np.abs(chips[0][1] - chips[1][1]).max() > 1e-2  # two people: two descriptors


def test_gray_descriptor_equals_dlibs_on_the_gray_face_in_three_channels(chips, dlib_models):
    _, recognizer = dlib_models
    model = imported(1)
    for chip, _ in chips:
        gray = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
        descriptor = np.array(recognizer.compute_face_descriptor(np.ascontiguousarray(np.repeat(gray[..., None], 3, -1))))
        x = (torch.from_numpy(gray)[None, None].float() - DLIB_GRAY_MEAN) / DLIB_SCALE
        with torch.no_grad():
            ours = model.features(x)[0].double().numpy()
        assert np.abs(ours - descriptor).max() < 1e-4


def test_channels_last_and_other_sizes_run_on_the_same_weights(chips):
    model = nets.to_device(imported(3), "cpu")
    chip, descriptor = chips[0]
    with torch.no_grad():
        assert np.abs(model.features(rgb_input(chip))[0].double().numpy() - descriptor).max() < 1e-4
        small = imported(3, image_size=64, stem_pool=False)
        x = torch.nn.functional.interpolate(rgb_input(chip), size=64, mode="bilinear", antialias=True)
        assert small.features(x).shape == (1, 128) and torch.isfinite(small(x)).all()


@pytest.mark.parametrize("case", ["truncated", "one byte more", "mmod detector", "5-point predictor"])
def test_a_file_that_is_not_the_network_is_refused_in_one_line(case, tmp_path):
    data = open(detect.model_file(RESNET), "rb").read()
    if case == "truncated":
        path = tmp_path / RESNET
        path.write_bytes(data[:len(data) // 2])
    elif case == "one byte more":
        path = tmp_path / RESNET
        path.write_bytes(data + b"\x00")
    else:
        path = detect.model_file("mmod_human_face_detector.dat" if case == "mmod detector"
                                 else "shape_predictor_5_face_landmarks.dat")
    model = nets.build("dlib_resnet", 7, in_chans=3, image_size=150)
    before = model.conv.weight.detach().clone()
    with pytest.raises(InputError) as error:
        weights.import_weights(model, "dlib_resnet", path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: {NOT_THE_NET}: at byte ")
    assert torch.equal(model.conv.weight, before)   # nothing half-loaded
    if case == "mmod detector":
        assert "found 'loss_mmod_' where the loss layer ('loss_metric_2') should be" in message
    if case == "truncated":
        assert "the file ends inside" in message


def test_a_truncated_file_stops_a_command_with_one_line_and_exit_2(tmp_path):
    path = tmp_path / "cut.dat"
    path.write_bytes(open(detect.model_file(RESNET), "rb").read()[:5000])
    script = ("from mrfer import cli, nets; from mrfer.nets import weights; "
              f"cli.run(lambda: weights.import_weights(nets.build('dlib_resnet', 7, 3, 150), 'dlib_resnet', {str(path)!r}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{path}: {NOT_THE_NET}" in lines[0]


def test_dlib_weights_fit_only_the_dlib_model():
    with pytest.raises(InputError, match="'dlib_resnet' weights fit model.*not BaselineCNN"):
        weights.import_weights(nets.build("baseline_cnn", 7, 1, 64), "dlib_resnet", weights.DLIB_RESNET_FILE)


def test_package_paths_resolve_without_importing_the_package(tmp_path):
    path = weights.resolve(weights.DLIB_RESNET_FILE)
    assert path.is_file() and path.name == RESNET and path.parent.name == "models"
    assert weights.resolve("models/imported/x.pth") == Path("models/imported/x.pth")
    with pytest.raises(MissingInputError, match="package:no_such_package_here/x.dat: the Python package "
                                                "'no_such_package_here' is not installed"):
        weights.resolve("package:no_such_package_here/x.dat")
    with pytest.raises(MissingInputError, match="models/nope.dat is not in the installed package"):
        weights.resolve("package:face_recognition_models/models/nope.dat")
    with pytest.raises(InputError, match="package:<python package>/<file inside it>"):
        weights.resolve("package:face_recognition_models")


def test_map_sizes_and_the_smallest_input():
    assert map_sizes(150, True)[-1] == 2            # dlib's own 150 px chip ends on a 2x2 map
    assert (min_size(True), min_size(False)) == (103, 53)
    map_sizes(103, True)
    with pytest.raises(ValueError, match="image_size 102 is too small .min 103 px with stem_pool=True"):
        nets.build("dlib_resnet", 7, 1, 102)
    nets.build("dlib_resnet", 7, 1, 56, stem_pool=False)


def test_add_prev_pads_the_smaller_tensor_with_zeros_at_the_end():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 2.0)
    out = _add_padded(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert torch.equal(out[0, 0, :3, :3], torch.full((3, 3), 3.0))   # both
    assert torch.equal(out[0, 0, 3], torch.full((4,), 2.0))          # b alone (a's missing row)
    assert torch.equal(out[0, 1, :3, :3], torch.ones(3, 3))          # a alone (b's missing channel)
    assert out[0, 1, 3].abs().sum() == 0


def test_face_pretrain_imports_it_as_the_face_model_with_no_training(tmp_path, chips, dlib_models):
    """face-pretrain with init: imported, epochs: 0 and the package path writes face.pt, whose
    embedding is dlib's descriptor (gray identity data, dlib's normalisation set in the section)."""
    _, recognizer = dlib_models
    identities = make_assembled(tmp_path / "ids", n_per_class=(4, 2, 2), size=150, scales=())
    cfg = section("face_pretrain", face.FacePretrainParams, init="imported", arch="dlib_resnet", arch_options={},
                  weights={"kind": "dlib_resnet", "path": weights.DLIB_RESNET_FILE}, epochs=0,
                  normalize="mean_std", mean=[DLIB_GRAY_MEAN], std=[DLIB_SCALE], device="cpu")
    report = face.fit_face(cfg, identities, tmp_path / "face.pt", tmp_path / "face.json", live_dir=None, resume=None)
    assert report["epochs_run"] == 0
    model, meta = checkpoint.load_model(tmp_path / "face.pt", "cpu")
    assert (meta["arch"], meta["mean"], meta["std"]) == ("dlib_resnet", [DLIB_GRAY_MEAN], [DLIB_SCALE])
    gray = cv2.cvtColor(chips[0][0], cv2.COLOR_RGB2GRAY)
    descriptor = np.array(recognizer.compute_face_descriptor(np.ascontiguousarray(np.repeat(gray[..., None], 3, -1))))
    x = (torch.from_numpy(gray)[None, None].float() - DLIB_GRAY_MEAN) / DLIB_SCALE
    with torch.no_grad():
        assert np.abs(model.eval().features(x)[0].double().numpy() - descriptor).max() < 1e-4
