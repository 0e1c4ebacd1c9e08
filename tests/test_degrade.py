import cv2
import numpy as np
import pytest
import torch

from mrfer.data.degrade import degrade, degrade_mixed, degrade_torch, resample_matrix
from mrfer.data.scales import low_size, parse_scale


def smooth_faces(n=3, size=64, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return np.stack([cv2.GaussianBlur(im, (5, 5), 1.2).reshape(size, size, channels) for im in raw])


def test_parse_scale_and_low_size():
    assert parse_scale("x4") == ("factor", 4.0)
    assert parse_scale("16px") == ("side", 16.0)
    assert low_size(64, 64, "x8", "bicubic_aa") == (8, 8)
    assert low_size(100, 50, "16px", "bicubic_aa") == (32, 16)
    for bad in ("4", "x0.5", "16", "hr", "x"):
        with pytest.raises(ValueError, match="bad scale"):
            parse_scale(bad)


def test_resample_rows_sum_to_one_and_identity_at_scale_one():
    m = resample_matrix(64, 8, "bicubic_aa")
    assert np.allclose(m.sum(axis=1), 1)
    assert np.allclose(resample_matrix(16, 16, "bilinear"), np.eye(16))


@pytest.mark.parametrize("kernel", ["bicubic_aa", "bilinear", "matlab"])
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
    errors = [np.abs(degrade(faces, s, "bicubic_aa").astype(float) - faces).mean() for s in ("x2", "x4", "x8")]
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] > 0


@pytest.mark.parametrize("kernel", ["bicubic_aa", "bilinear", "matlab"])
def test_a_face_degrades_to_the_same_bytes_whatever_faces_are_beside_it(kernel):
    """Readers that degrade a split's HR faces on the fly must get the downsample stage's bytes,
    though that stage degraded all the faces, in other chunks (one big BLAS product did not)."""
    faces = np.random.default_rng(1).integers(0, 256, (100, 32, 32, 1), dtype=np.uint8)
    for scale in ("x2", "x4", "x6", "16px"):
        whole = degrade(faces, scale, kernel)
        subset = np.arange(1, 100, 3)
        for chunk in (1, 2, 5, 13):
            parts = [degrade(faces[subset[i:i + chunk]], scale, kernel) for i in range(0, len(subset), chunk)]
            assert np.array_equal(np.concatenate(parts), whole[subset]), (scale, chunk)


def test_mixed_batch_degrades_each_sample_to_its_own_scale():
    faces = torch.from_numpy(smooth_faces(n=3)).permute(0, 3, 1, 2).float()
    out = degrade_mixed(faces, [None, "x4", "x8"], "bicubic_aa")
    assert torch.equal(out[0], faces[0])
    assert torch.allclose(out[1], degrade_torch(faces[1:2], "x4", "bicubic_aa")[0])
    assert torch.allclose(out[2], degrade_torch(faces[2:3], "x8", "bicubic_aa")[0])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="NHWC uint8"):
        degrade(np.zeros((4, 4), np.uint8), "x2", "bicubic_aa")
    with pytest.raises(ValueError, match="unknown kernel"):
        degrade(smooth_faces(n=1), "x2", "lanczos")


def test_degrade_stays_float32_under_bf16_autocast():
    # training runs the preset inside autocast; a bf16 matmul would move faces by a grey level
    faces = torch.from_numpy(smooth_faces(n=2, channels=3)).permute(0, 3, 1, 2).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = degrade_torch(faces, "x4", "bicubic_aa")
    assert inside.dtype == torch.float32
    assert torch.equal(inside, degrade_torch(faces, "x4", "bicubic_aa"))


# ---------------------------------------------------------------- MATLAB imresize (kernel matlab)


def test_matlab_sizes_round_up_and_the_pil_rule_rounds():
    factors = range(2, 9)
    assert [low_size(100, 100, f"x{k}", "matlab")[0] for k in factors] == [50, 34, 25, 20, 17, 15, 13]
    assert [low_size(100, 100, f"x{k}", "bicubic_aa")[0] for k in factors] == [50, 33, 25, 20, 17, 14, 12]
    assert low_size(100, 100, "16px", "matlab") == (16, 16)  # a size in px is exact
    assert low_size(100, 50, "16px", "matlab") == (32, 16)
    faces = smooth_faces(n=1, size=100)
    assert degrade(faces, "x3", "matlab").shape == faces.shape


def keys_cubic(x):
    """Keys' cubic, a = -0.5, written out as MATLAB's imresize.m writes it."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
    return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2 if x <= 2 else 0.0


def test_matlab_shrinks_a_ramp_with_mirrored_edges():
    # imresize(0:10:50, 1/2): scale 1/2 -> 3 outputs; antialiased kernel h(d) = cubic(d/2)/2 over
    # 8 taps; output x sits at u = x/scale + 0.5*(1 - 1/scale) = 2x - 0.5 (1-based).
    ramp = np.array([0.0, 10, 20, 30, 40, 50])
    value = dict(enumerate(ramp, start=1))  # 1-based pixels
    for i in range(1, 7):  # symmetric padding: pixel 0 is pixel 1, -1 is 2, 7 is 6, ...
        value[1 - i], value[6 + i] = value[i], value[7 - i]
    expected = []
    for x in (1, 2, 3):
        u = 2 * x - 0.5
        taps = [u - 3.5 + k for k in range(8)]  # the 8 pixels whose |u - tap| < 4
        weights = [keys_cubic((u - t) / 2) / 2 for t in taps]
        assert sum(weights) == 1.0  # 2 * (0.8671875 + 0.2265625 - 0.0703125 - 0.0234375) / 2
        expected.append(sum(w * value[int(t)] for w, t in zip(weights, taps)))
    # by hand: w(0.5, 1.5, 2.5, 3.5) = 0.43359375, 0.11328125, -0.03515625, -0.01171875, so
    # out[0] = .43359375*(0+10) + .11328125*(0+20) - .03515625*(10+30) - .01171875*(20+40)
    assert expected == [4.4921875, 25.0, 45.5078125]  # a linear extension would give 5, 25, 45
    m = resample_matrix(6, 3, "matlab", scale=0.5)
    np.testing.assert_allclose(m @ ramp, expected, rtol=0, atol=1e-12)
    assert not np.allclose(resample_matrix(6, 3, "bicubic_aa") @ ramp, expected)  # PIL drops taps


def test_matlab_enlarges_without_antialiasing():
    # imresize([0 10 20], [1 6]): scale 2, plain cubic, u = x/2 + 0.25; the first output (u = 0.75)
    # takes pixels -1, 0, 1, 2 = (mirrored) 2, 1, 1, 2 at distances 1.75, 0.75, -0.25, -1.25.
    first = keys_cubic(1.75) * 10 + keys_cubic(0.75) * 0 + keys_cubic(0.25) * 0 + keys_cubic(1.25) * 10
    assert first == -0.9375
    up = resample_matrix(3, 6, "matlab") @ np.array([0.0, 10, 20])
    assert up[0] == pytest.approx(first, abs=1e-12)
    np.testing.assert_allclose(resample_matrix(7, 7, "matlab"), np.eye(7), atol=1e-12)
    assert np.allclose(resample_matrix(100, 13, "matlab", scale=1 / 8).sum(axis=1), 1)


def test_matlab_rounds_every_pass_half_away_from_zero():
    # a 2x2 image whose columns average to x.5: MATLAB's uint8 rounding gives the larger value
    faces = np.array([[[[1], [2]], [[1], [2]]]], dtype=np.uint8)
    low = degrade(faces, "x2", "matlab", out_size=(1, 1))
    assert low.dtype == np.uint8 and low.item() == 2  # mean 1.5 -> 2 (np.rint would give 2 too)
    faces = np.array([[[[2], [3]], [[2], [3]]]], dtype=np.uint8)
    assert degrade(faces, "x2", "matlab", out_size=(1, 1)).item() == 3  # 2.5 -> 3, not rint's 2
    torch_low = degrade_torch(torch.tensor([[[[2.0, 3.0], [2.0, 3.0]]]]), "x2", "matlab", out_size=(1, 1))
    assert torch_low.item() == 3


def test_matlab_mixed_batch_matches_numpy():
    faces = smooth_faces(n=3, size=100, channels=3)
    ours = degrade_mixed(torch.from_numpy(faces).permute(0, 3, 1, 2), [None, "x3", "x7"], "matlab")
    ours = ours.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ours[0], faces[0])
    for i, scale in ((1, "x3"), (2, "x7")):
        diff = np.abs(ours[i] - degrade(faces[i:i + 1], scale, "matlab")[0].astype(float))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
