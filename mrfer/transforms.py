"""On-device batch transforms: augmentation and normalisation (degradation: mrfer.data.degrade).

Batches arrive as uint8 NHWC on the device (GPU when there is one); everything here is a few
tensor ops per batch, never a Python loop over images. Training and inference share `prepare`,
so a face is normalised the same way in both.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from pydantic import Field

from mrfer.config import Section
from mrfer.errors import InputError


class Crop(Section):
    """A random crop of the face seen at another size (albumentations' Resize + RandomCrop)."""

    resize: int = Field(ge=8, description="the face is seen at this side (px) first")
    size: int = Field(ge=8, description="side (px) of the random crop, resized back to the face side")
    draw: Literal["albumentations", "torchvision"] = Field(
        description="the offset per axis: albumentations (0.5's RandomCrop: int((resize - size) u), u in [0, 1): "
                    "0 .. resize - size - 1) | torchvision (RandomCrop: randint(0, resize - size), both ends in)")


class Gray(Section):
    """A random gray copy of an RGB face (albumentations' ToGray)."""

    p: float = Field(ge=0, le=1, description="probability per face")
    weights: list[float] = Field(min_length=3, max_length=3,
                                 description="gray = the weighted sum of the face's channels, in its RGB order")


class Elastic(Section):
    """albumentations 0.5's ElasticTransform (black outside, bilinear): a random affine moving three
    points by up to `alpha_affine` px, then a smooth displacement field, `alpha` x Gaussian-blurred
    (`sigma` px, scipy's gaussian_filter) uniform noise in [-1, 1]."""

    p: float = Field(ge=0, le=1, description="probability per face (albumentations' default: 0.5)")
    alpha: float = Field(ge=0, description="displacement scale, px (its default: 1)")
    sigma: float = Field(gt=0, description="the displacement's Gaussian blur, px (its default: 50)")
    alpha_affine: float = Field(ge=0, description="the affine's largest point shift, px (its default: 50)")


class Cutout(Section):
    """Square holes filled with black (albumentations 0.5's Cutout, drawn as it draws them)."""

    holes: int = Field(ge=1, description="holes per face")
    size: int = Field(ge=1, description="hole side (px, of the face at its training size)")


class EvalView(Section):
    """How a face is tested: a centre crop, or torchvision's TenCrop with the logits averaged, of the
    face seen at another size, each crop resized to the face side (`infer` applies it)."""

    resize: int = Field(ge=8, description="the face is seen at this side (px) first")
    size: int = Field(ge=8, description="side (px) of each crop, resized back to the face side")
    crops: Literal[1, 10] = Field(
        description="1: the centre crop (albumentations' CenterCrop: offset (resize - size) // 2) | 10: the four "
                    "corners and the centre, and the same of the mirrored face (torchvision's TenCrop), averaged")


class Augment(Section):
    """On-device training augmentation, one batched op per step. Keep it mild: expression cues
    live in a few pixels (lid, lip corner), and every warp is a resample that softens them.

    Order: brightness/contrast, `crop`, `gray`, `elastic`, the warp (rotate/scale/translate, with
    probability `p`), `cutout`, flip. `pipeline` says how the warp and the flip are done (`augment`)."""

    flip: bool = Field(description="random horizontal flip")
    rotate: float = Field(ge=0, le=45, description="max rotation, degrees")
    scale: float = Field(ge=0, lt=1, description="max zoom in or out, a fraction")
    translate: float = Field(ge=0, lt=0.5, description="max shift, a fraction of the side")
    brightness: float = Field(ge=0, le=1, description="max brightness offset, a fraction of 255")
    contrast: float = Field(ge=0, lt=1, description="max contrast change, a fraction")
    p: float = Field(ge=0, le=1, description="probability per face of the rotate/scale/translate warp "
                                             "(albumentations' ShiftScaleRotate: 0.5)")
    fill: Literal["border", "black", "black_outside"] = Field(
        description="what the warp shows outside the face: border (the edge pixels repeated) | black (taps "
                    "outside the face are 0, as cv2's BORDER_CONSTANT) | black_outside (0 where the sampled "
                    "point is outside the face, the edge repeated for the taps inside: PIL's transforms)")
    interpolation: Literal["bilinear", "bicubic", "bicubic_pil"] = Field(
        description="the warp's resampling: bilinear | bicubic (a = -0.75, as cv2's INTER_CUBIC) | "
                    "bicubic_pil (a = -1, as PIL's rotate and transform)")
    pipeline: Literal["mrfer", "albumentations"] = Field(
        description="mrfer: the flip is part of the warp, which turns about the face's centre | "
                    "albumentations: the flip comes last (after cutout) and the warp turns about pixel "
                    "(w/2, h/2), as albumentations 0.5's ShiftScaleRotate builds it with cv2")
    crop: Crop | None = Field(description="{resize, size, draw}: random crop (null: none)")
    gray: Gray | None = Field(description="{p, weights}: random gray copy of an RGB face (null: none)")
    cutout: Cutout | None = Field(description="{holes, size}: black square holes (null: none)")
    elastic: Elastic | None = Field(description="{p, alpha, sigma, alpha_affine}: elastic deformation after "
                                                "gray, before the warp (null: none)")


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> contiguous float NCHW in [0, 255] (the warp and resize kernels are faster on it)."""
    return batch.permute(0, 3, 1, 2).float().contiguous()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std as one fused pass (each full-batch temporary costs a fresh allocation)."""
    return torch.addcmul(-mean / std, x, 1 / std)


def stats_tensors(mean: list[float], std: list[float] | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) mean and std in 0..255 units; std None means centre only (MAFER)."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std if std is not None else [1.0] * len(mean), dtype=torch.float32, device=device)
    return m, s.clamp_min(1e-3).view(1, -1, 1, 1)


def uniform(n: int, span: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) * 2 - 1) * span


def affine_grid(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.affine_grid(theta, ..., align_corners=False)` by broadcasting: its batched matmul over a
    (N, H*W, 3) base grid was the slowest op of the whole preset on CPU."""
    h, w = size
    xs = ((torch.arange(w, device=theta.device) + 0.5) * (2 / w) - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=theta.device) + 0.5) * (2 / h) - 1).view(1, h, 1)
    t = theta.view(-1, 6, 1, 1)
    return torch.stack([t[:, 0] * xs + t[:, 1] * ys + t[:, 2], t[:, 3] * xs + t[:, 4] * ys + t[:, 5]], -1)


def augment(batch: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 255]: brightness and contrast, then `crop`, `gray`,
    `elastic`, the rotate/scale/translate warp, `cutout` and the flip, in that order.

    The photometric step is per-sample affine, so it is applied first, fused with the uint8 ->
    float conversion (one pass over the batch), and the contrast pivot is the mean of the uint8
    face; a bilinear warp with border padding commutes with it. Under `pipeline: mrfer` the flip is
    folded into the warp (one resample); under `albumentations` it is a last mirror, since
    albumentations' Cutout draws its holes asymmetrically (`cutout_mask`). Draws happen only for
    what is switched on, so a setting without crop, gray, elastic, cutout and with p 1 draws what it
    always did."""
    n, device = batch.shape[0], batch.device
    contrast = 1 + uniform(n, cfg.contrast, gen, device).view(n, 1, 1, 1)
    brightness = uniform(n, cfg.brightness * 255, gen, device).view(n, 1, 1, 1)
    face_mean = batch.reshape(n, -1).sum(1, dtype=torch.float32).view(n, 1, 1, 1) / batch[0].numel()
    x = torch.addcmul(face_mean * (1 - contrast) + brightness, batch.permute(0, 3, 1, 2), contrast)
    x.clamp_(0, 255)
    if cfg.crop is not None:
        x = random_crop(x, cfg.crop, gen)
    if cfg.gray is not None and x.shape[1] == 3:
        x = random_gray(x, cfg.gray, gen)
    if cfg.elastic is not None:
        x = random_elastic(x, cfg.elastic, gen)
    angle = uniform(n, math.radians(cfg.rotate), gen, device)
    scale = 1 + uniform(n, cfg.scale, gen, device)
    fused_flip = cfg.flip and cfg.pipeline == "mrfer"
    flip = torch.where(torch.rand(n, generator=gen, device=device) < 0.5, -1.0, 1.0) if fused_flip \
        else torch.ones(n, device=device)
    shift = torch.stack([uniform(n, 2 * cfg.translate, gen, device) for _ in range(2)], 1)
    if cfg.p < 1:  # faces without the warp: angle 0, scale 1, no shift (the flip stays)
        keep = torch.rand(n, generator=gen, device=device) < cfg.p
        angle, scale, shift = angle * keep, torch.where(keep, scale, 1.0), shift * keep.view(n, 1)
    if cfg.pipeline == "mrfer":
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                             torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    else:  # shift: a fraction of the side either way, as ShiftScaleRotate's dx, dy
        theta = cv2_rotation_theta(torch.rad2deg(angle), scale, shift / 2, x.shape[-2:])
    x = warp(x, theta, cfg)
    if cfg.cutout is not None:
        x = x.masked_fill(cutout_mask(n, x.shape[-2:], cfg.cutout, gen, device).unsqueeze(1), 0.0)
    if cfg.flip and not fused_flip:
        mirror = torch.rand(n, generator=gen, device=device) < 0.5
        x = torch.where(mirror.view(n, 1, 1, 1), x.flip(-1), x)
    return x


def warp(x: torch.Tensor, theta: torch.Tensor, cfg: Augment) -> torch.Tensor:
    """The batch resampled through `theta` (output -> input, normalised, align_corners=False) with
    the setting's interpolation and fill; bicubic overshoot is clipped to 0..255, as cv2 and PIL
    saturate uint8."""
    grid = affine_grid(theta, x.shape[-2:])
    if cfg.interpolation == "bicubic_pil":
        out = bicubic_pil(x, grid)
    else:
        out = F.grid_sample(x, grid, mode=cfg.interpolation, padding_mode="zeros" if cfg.fill == "black" else "border",
                            align_corners=False)
    if cfg.fill == "black_outside":
        out = out.masked_fill((grid.abs() > 1).any(-1).unsqueeze(1), 0.0)
    return out.clamp_(0, 255) if cfg.interpolation != "bilinear" else out


def bicubic_pil(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """PIL's bicubic sample (libImaging/Geometry.c, BICUBIC): the cubic convolution with a = -1,
    its four taps a side clamped to the image. Weights for the fraction d of the taps at -1, 0, 1,
    2: -d + 2d^2 - d^3, 1 - 2d^2 + d^3, d + d^2 - d^3, -d^2 + d^3. `grid` as grid_sample's
    (align_corners=False)."""
    n, c, h, w = x.shape
    px = ((grid[..., 0] + 1) * w - 1) / 2
    py = ((grid[..., 1] + 1) * h - 1) / 2
    x0, y0 = torch.floor(px), torch.floor(py)

    def weights(d: torch.Tensor) -> list[torch.Tensor]:
        d2, d3 = d * d, d * d * d
        return [-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, d3 - d2]

    wx, wy = weights(px - x0), weights(py - y0)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros(n, c, *grid.shape[1:3], dtype=x.dtype, device=x.device)
    for j in range(4):
        rows = (y0 + (j - 1)).clamp(0, h - 1).long() * w
        for i in range(4):
            index = (rows + (x0 + (i - 1)).clamp(0, w - 1).long()).view(n, 1, -1).expand(n, c, -1)
            tap = flat.gather(2, index).view_as(out)
            out += (wy[j] * wx[i]).unsqueeze(1) * tap
    return out


def random_crop(x: torch.Tensor, crop: Crop, gen: torch.Generator) -> torch.Tensor:
    """Each face seen at `crop.resize` px (bilinear, as cv2.resize), a `crop.size` crop at a random
    offset, resized back to the face side: one bilinear sample of the face (the resize and the
    crop are one scale and shift). The offsets are drawn as `crop.draw` says: albumentations 0.5's
    int((resize - size) * u), u uniform in [0, 1) (0 .. resize - size - 1), or torchvision's
    randint(0, resize - size) (0 .. resize - size)."""
    return crop_view(x, crop.resize, crop.size, crop_offsets(x.shape[0], crop, gen, x.device))


def crop_offsets(n: int, crop: Crop, gen: torch.Generator, device) -> torch.Tensor:
    """(n, 2) float (x, y) offsets of `random_crop`, drawn as `crop.draw` says."""
    if crop.size > crop.resize:
        raise ValueError(f"augment.crop: size {crop.size} is larger than resize {crop.resize}")
    far = crop.resize - crop.size
    if crop.draw == "albumentations":
        return torch.floor(far * torch.rand(n, 2, generator=gen, device=device))
    return torch.randint(0, far + 1, (n, 2), generator=gen, device=device).float()


def crop_view(x: torch.Tensor, resize: int, size: int, offset: torch.Tensor) -> torch.Tensor:
    """The crop at (x, y) `offset` (n, 2) of each face resized to `resize`, resized back to the face
    side, as one bilinear sample: output pixel u of side S is crop pixel (u + 0.5) size / S - 0.5,
    clamped to the crop (cv2.resize repeats its edge), face pixel ((crop pixel + offset + 0.5) S /
    resize - 0.5); normalised, x_in = x_out size / resize + (size + 2 offset - resize) / resize."""
    n = x.shape[0]
    ratio = torch.full((n,), size / resize, device=x.device)
    shift = (size + 2 * offset - resize) / resize
    zero = torch.zeros(n, device=x.device)
    theta = torch.stack([torch.stack([ratio, zero, shift[:, 0]], 1), torch.stack([zero, ratio, shift[:, 1]], 1)], 1)
    grid = affine_grid(theta, x.shape[-2:])
    low = (2 * (offset + 0.5) / resize - 1).view(n, 1, 1, 2)            # the crop's first pixel centre
    high = (2 * (offset + size - 0.5) / resize - 1).view(n, 1, 1, 2)    # and its last
    grid = torch.minimum(torch.maximum(grid, low), high)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def view_crops(view: EvalView) -> list[tuple[tuple[int, int], bool]]:
    """((x, y) offset, mirrored) of each crop `view` takes: torchvision's five_crop (top-left,
    top-right, bottom-left, bottom-right, centre at int(round((resize - size) / 2))) of the face and
    of its mirror image for 10; albumentations' centre offset (resize - size) // 2 for 1."""
    if view.size > view.resize:
        raise ValueError(f"test_view: size {view.size} is larger than resize {view.resize}")
    far = view.resize - view.size
    if view.crops == 1:
        return [((far // 2, far // 2), False)]
    centre = int(round(far / 2))
    five = [(0, 0), (far, 0), (0, far), (far, far), (centre, centre)]
    return [(o, False) for o in five] + [(o, True) for o in five]


def view_crop(x: torch.Tensor, view: EvalView, offset: tuple[int, int], mirrored: bool) -> torch.Tensor:
    """One of `view_crops` of a float NCHW batch, resized back to the face side."""
    face = x.flip(-1) if mirrored else x
    where = torch.tensor([offset], dtype=x.dtype, device=x.device).expand(x.shape[0], 2)
    return crop_view(face, view.resize, view.size, where)


def random_gray(x: torch.Tensor, gray: Gray, gen: torch.Generator) -> torch.Tensor:
    """With probability `gray.p` per face, every channel replaced by the weighted sum of the three."""
    n = x.shape[0]
    pick = torch.rand(n, generator=gen, device=x.device) < gray.p
    w = torch.tensor(gray.weights, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.where(pick.view(n, 1, 1, 1), (x * w).sum(1, keepdim=True).expand_as(x), x)


def random_elastic(x: torch.Tensor, cfg: Elastic, gen: torch.Generator) -> torch.Tensor:
    """`elastic` on each face with probability `cfg.p`, its draws as the library makes them: the
    three points' shifts uniform in [-alpha_affine, alpha_affine], the two noise fields uniform in
    [-1, 1). Faces it skips come out unchanged."""
    n, (h, w), device = x.shape[0], x.shape[-2:], x.device
    pick = torch.rand(n, generator=gen, device=device) < cfg.p
    jitter = (torch.rand(n, 3, 2, generator=gen, device=device) * 2 - 1) * cfg.alpha_affine
    noise = torch.rand(n, 2, h, w, generator=gen, device=device) * 2 - 1
    return torch.where(pick.view(n, 1, 1, 1), elastic(x, jitter, noise, cfg.alpha, cfg.sigma), x)


def elastic(x: torch.Tensor, jitter: torch.Tensor, noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """albumentations 0.5's elastic_transform (functional.py:1141-1209, approximate=False) with
    black outside, given its draws: `jitter` (n, 3, 2) the point shifts, `noise` (n, 2, h, w) the
    x and y noise fields. 1) cv2.getAffineTransform of the points c + s, (c0 + s, c1 - s), c - s
    (c = (h // 2, w // 2) taken as (x, y), s = min(h, w) // 3) to themselves + jitter, warped as
    cv2.warpAffine does; 2) cv2.remap at (x + dx, y + dy), d = alpha x gaussian_filter(noise,
    sigma) (mode reflect, truncate 4): one blur matrix per axis."""
    n, (h, w) = x.shape[0], x.shape[-2:]
    s = min(h, w) // 3
    c0, c1 = float(h // 2), float(w // 2)
    src = torch.tensor([[c0 + s, c1 + s], [c0 + s, c1 - s], [c0 - s, c1 - s]], dtype=torch.float64, device=x.device)
    dst = src + jitter.to(torch.float64)
    ones = torch.ones(3, 1, dtype=torch.float64, device=x.device)
    forward = torch.linalg.solve(torch.cat([src, ones], 1), dst).transpose(1, 2)   # (n, 2, 3): src -> dst
    x = F.grid_sample(x, affine_grid(cv2_affine_theta(forward.to(x.dtype), (h, w)), (h, w)), mode="bilinear",
                      padding_mode="zeros", align_corners=False)
    blur_h, blur_w = gaussian_blur_matrix(h, sigma, x.device), gaussian_blur_matrix(w, sigma, x.device)
    d = alpha * (blur_h @ noise.to(blur_h.dtype) @ blur_w.T).to(x.dtype)             # (n, 2, h, w): dx, dy
    gx = (2 * (torch.arange(w, device=x.device) + d[:, 0]) + 1) / w - 1
    gy = (2 * (torch.arange(h, device=x.device).view(h, 1) + d[:, 1]) + 1) / h - 1
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_blur_matrix(size: int, sigma: float, device) -> torch.Tensor:
    """(size, size) float64 B with B @ v = scipy.ndimage.gaussian_filter1d(v, sigma) (mode
    'reflect': the edge sample repeated, d c b a | a b c d | d c b a; radius int(4 sigma + 0.5);
    weights exp(-k^2 / 2 sigma^2), summed to 1). A radius past the side reflects again."""
    radius = int(4.0 * sigma + 0.5)
    k = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-0.5 * k * k / sigma ** 2)
    weights /= weights.sum()
    index = torch.arange(size, device=device).view(-1, 1) + k.long().view(1, -1)   # (size, taps)
    period = index.remainder(2 * size)
    index = torch.where(period < size, period, 2 * size - 1 - period)
    out = torch.zeros(size, size, dtype=torch.float64, device=device)
    return out.index_put_((torch.arange(size, device=device).view(-1, 1).expand_as(index), index),
                          weights.expand_as(index), accumulate=True)


def cv2_affine_theta(forward: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`theta` (output -> input, normalised, align_corners=False) of cv2.warpAffine with the forward
    matrices `forward` (n, 2, 3), which map input pixel indices to output ones."""
    h, w = size
    a, b, tx = forward[:, 0, 0], forward[:, 0, 1], forward[:, 0, 2]
    c, d, ty = forward[:, 1, 0], forward[:, 1, 1], forward[:, 1, 2]
    det = a * d - b * c
    l00, l01, l10, l11 = d / det, -b / det, -c / det, a / det
    bx, by = -(l00 * tx + l01 * ty), -(l10 * tx + l11 * ty)
    kx, ky = (w - 1) / 2, (h - 1) / 2
    t0 = (2 / w) * (l00 * kx + l01 * ky + bx) + 1 / w - 1
    t1 = (2 / h) * (l10 * kx + l11 * ky + by) + 1 / h - 1
    return torch.stack([torch.stack([l00, l01 * h / w, t0], 1), torch.stack([l10 * w / h, l11, t1], 1)], 1)


def cv2_rotation_theta(degrees: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                       size: tuple[int, int]) -> torch.Tensor:
    """`theta` for the warp albumentations 0.5's shift_scale_rotate does with cv2: the forward
    matrix cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale) plus (dx w, dy h), which maps
    input pixel indices to output ones (cv2.warpAffine samples its inverse); `shift` is (dx, dy)."""
    h, w = size
    rad = torch.deg2rad(degrees)
    a, b = scale * torch.cos(rad), scale * torch.sin(rad)
    cx, cy = w / 2, h / 2
    tx = (1 - a) * cx - b * cy + shift[:, 0] * w
    ty = b * cx + (1 - a) * cy + shift[:, 1] * h
    forward = torch.stack([torch.stack([a, b, tx], 1), torch.stack([-b, a, ty], 1)], 1)
    return cv2_affine_theta(forward, size)


def cutout_mask(n: int, size: tuple[int, int], cutout: Cutout, gen: torch.Generator, device) -> torch.Tensor:
    """(n, h, w) bool, true in the holes, drawn as albumentations 0.5's Cutout draws them: centre
    y, x uniform over 0..h and 0..w (both ends in), y1 = clip(y - size // 2, 0, h), y2 = clip(y1 +
    size, 0, h), the same for x. A hole near the top or left edge is pushed inside whole, one near
    the bottom or right edge is cut: the holes are not mirror-symmetric, hence the flip after them."""
    h, w = size
    k, s = cutout.holes, cutout.size
    y = torch.randint(0, h + 1, (n, k), generator=gen, device=device)
    x = torch.randint(0, w + 1, (n, k), generator=gen, device=device)
    y1 = (y - s // 2).clamp(0, h)
    x1 = (x - s // 2).clamp(0, w)
    y2, x2 = (y1 + s).clamp(0, h), (x1 + s).clamp(0, w)
    rows = torch.arange(h, device=device).view(1, 1, h)
    cols = torch.arange(w, device=device).view(1, 1, w)
    in_rows = ((rows >= y1.unsqueeze(-1)) & (rows < y2.unsqueeze(-1))).float()
    in_cols = ((cols >= x1.unsqueeze(-1)) & (cols < x2.unsqueeze(-1))).float()
    return torch.einsum("nkh,nkw->nhw", in_rows, in_cols) > 0


def random_scales(n: int, scales: list[str], p: float, gen: torch.Generator) -> list[str | None]:
    """Per sample: None (keep full resolution) or a scale drawn uniformly, with probability p."""
    degrade_it = (torch.rand(n, generator=gen, device=gen.device) < p).tolist()
    pick = torch.randint(len(scales), (n,), generator=gen, device=gen.device).tolist()
    return [scales[k] if d else None for d, k in zip(degrade_it, pick)]


def prepare(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The inference preprocessing path: uint8 NHWC -> normalised float NCHW (training adds its
    augmentation and degradation between the two steps: `mrfer.train.losses`)."""
    return normalize(to_float(batch), mean, std)


def norm_stats(normalize: str, mean: list[float] | None, std: list[float] | None,
               stats: dict) -> tuple[list[float], list[float] | None]:
    """(mean, std) in 0..255 units. A published mean/std (params) overrides the measured one;
    `normalize: mean` centres only, as MAFER did."""
    mean = [float(v) for v in (mean or stats["mean"])]
    std = [float(v) for v in (std or stats["std"])] if normalize == "mean_std" else None
    if len(mean) != stats["channels"]:
        raise InputError(f"mean has {len(mean)} values but the data has {stats['channels']} channels")
    return mean, std
