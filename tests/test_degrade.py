import cv2
import numpy as np
import pytest
import torch

from mrfer.data.degrade import degrade, degrade_mixed, degrade_torch, low_size, parse_scale, resample_matrix


def smooth_faces(n=3, size=64, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return np.stack([cv2.GaussianBlur(im, (5, 5), 1.2).reshape(size, size, channels) for im in raw])


def test_parse_scale_and_low_size():
    assert parse_scale("x4") == ("factor", 4.0)
    assert parse_scale("16px") == ("side", 16.0)
    assert low_size(64, 64, "x8") == (8, 8)
    assert low_size(100, 50, "16px") == (32, 16)
    for bad in ("4", "x0.5", "16", "hr", "x"):
        with pytest.raises(ValueError, match="bad scale"):
            parse_scale(bad)


def test_resample_rows_sum_to_one_and_identity_at_scale_one():
    m = resample_matrix(64, 8, "bicubic_aa")
    assert np.allclose(m.sum(axis=1), 1)
    assert np.allclose(resample_matrix(16, 16, "bilinear"), np.eye(16))


@pytest.mark.parametrize("kernel", ["bicubic_aa", "bilinear"])
@pytest.mark.parametrize("scale", ["x2", "x3", "x4", "x8", "16px"])
def test_numpy_and_torch_paths_agree(kernel, scale):
    faces = smooth_faces(channels=3)
    a = degrade(faces, scale, kernel)
    b = degrade_torch(torch.from_numpy(faces).permute(0, 3, 1, 2), scale, kernel)
    b = b.round().permute(0, 2, 3, 1).numpy()
    assert a.shape == faces.shape and a.dtype == np.uint8
    diff = np.abs(a.astype(float) - b)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # the same matrices; only summation order differs


def test_matches_pil_antialiased_bicubic():
    from PIL import Image
    face = smooth_faces()[0, :, :, 0]
    pil = np.asarray(Image.fromarray(face).resize((16, 16), Image.BICUBIC), dtype=float)
    m = resample_matrix(64, 16, "bicubic_aa")
    ours = np.clip(np.rint(m @ face.astype(float) @ m.T), 0, 255)
    assert np.abs(pil - ours).max() <= 1


def test_more_downsampling_loses_more_detail():
    faces = smooth_faces(n=4)
    errors = [np.abs(degrade(faces, s).astype(float) - faces).mean() for s in ("x2", "x4", "x8")]
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] > 0


def test_mixed_batch_degrades_each_sample_to_its_own_scale():
    faces = torch.from_numpy(smooth_faces(n=3)).permute(0, 3, 1, 2).float()
    out = degrade_mixed(faces, [None, "x4", "x8"])
    assert torch.equal(out[0], faces[0])
    assert torch.allclose(out[1], degrade_torch(faces[1:2], "x4")[0])
    assert torch.allclose(out[2], degrade_torch(faces[2:3], "x8")[0])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="NHWC uint8"):
        degrade(np.zeros((4, 4), np.uint8), "x2")
    with pytest.raises(ValueError, match="unknown kernel"):
        degrade(smooth_faces(n=1), "x2", "lanczos")


def test_degrade_stays_float32_under_bf16_autocast():
    # training runs the preset inside autocast; a bf16 matmul would move faces by a grey level
    faces = torch.from_numpy(smooth_faces(n=2, channels=3)).permute(0, 3, 1, 2).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = degrade_torch(faces, "x4")
    assert inside.dtype == torch.float32
    assert torch.equal(inside, degrade_torch(faces, "x4"))
