"""CovPoolFER (Acharya et al., CVPRW 2018): covariance pooling on the SPD manifold; FSR-FER's FER net.

`variant: published` (the default) is d-acharya/CovPoolFER's network, conv_feature_pooling/src/
models/covpoolnet.py with train.sh's --embedding_size 7 (FSR-FER's lib/covpoolnet.py is the same):

    per-image standardisation (tf.image.per_image_standardization; option `standardize`)
    conv 64 -> pool -> 96 -> pool -> 128, 128 -> pool -> 256, 256   3x3 convs, 2x2 max-pools:
        each conv without bias -> BN (offset only, no scale: slim's default) -> ReLU; stride 8
    -> covariance over the h*w positions (1/(n-1)) + eps * trace * I     (256 x 256, SPD)
    -> BiMap W^T S W, W (256 x 128) with orthonormal columns             (128 x 128)
    -> ReEig (eigenvalues clipped to [eps, 1e4]) and LogEig               (the log-covariance)
    -> the whole matrix flattened -> fc 2000 -> BN -> ReLU -> fc 128 -> BN (FSR-FER's `net_f`,
       `hidden_from_covariance`) -> ReLU -> bottleneck fc 7 -> BN (the embedding) -> head

The fully connected layers have no bias either (BN's offset is the bias), the head (`Logits`) has
one; conv and fc weights start truncated-normal with std 0.1; BN decay 0.995, epsilon 1e-3.
W stays on the Stiefel manifold as framework.py's `trainspd` keeps it: its gradient is
projected onto the tangent space (`rgrad = egrad - W sym(W^T egrad)`, done in backward here) and
after each optimiser step W is replaced by the Q of its QR decomposition (`retract_after_step`).
Training recipe parts live outside the net: the centre loss (`mrfer.train.losses.CenterLoss`,
`center_loss.weight` 0.01) and the step hook.

`variant: mrfer_small` keeps the CPU-friendly geometry this repo had: stride 4 (more positions
at 48-64 px) and a 1x1 projection (no ReLU) to `cov_channels`, then the same covariance, BiMap
and ReEig/LogEig, the upper triangle (off-diagonals * sqrt 2) -> fc `embed_dim` -> BN -> ReLU ->
dropout as the embedding; PyTorch's BN and initialisation.

The matrix part runs in float64 with autocast off: the covariance of a small map is rank
deficient and its small eigenvalues need the precision. ReEig and LogEig are one autograd
function whose backward uses divided differences (Daleckii-Krein), which stay finite when
eigenvalues coincide -- as clipped ones do -- where autograd through `eigh` divides by zero.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Literal

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from mrfer.nets.fernet import FERNet, scaled_channels
from mrfer.nets.registry import register

VARIANTS = ("published", "mrfer_small")
# Conv widths (times `width`); "M" is a 2x2 max-pool. The last conv (published) or the 1x1
# projection (mrfer_small) that follows gives `cov_channels`.
PUBLISHED_TRUNK = (64, "M", 96, "M", 128, 128, "M", 256)
SMALL_TRUNK = (64, 96, "M", 128, 128, "M", 256, 256)
EIG_CEILING = 1e4  # covpoolnet.py's `tf.clip_by_value(s_f, 0.0001, 10000)`


@contextlib.contextmanager
def _one_lapack_thread(device: torch.device):
    """Run CPU LAPACK (eigh, QR) single-threaded: on small matrices MKL's threads only add
    barriers; measured on a busy 2-core CPU, eigh of 64 x 128x128 took 9 s with 2 threads and
    0.13 s with 1."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """tf.image.per_image_standardization: (x - mean) / max(std, 1/sqrt(N)) over each image's
    N = C*H*W values. Invariant to any a*x + b (a > 0) applied alike to every channel."""
    flat = x.float().flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, correction=0).clamp(min=1.0 / math.sqrt(flat.shape[1]))
    return (x.float() - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)


def covariance_pool(fmap: torch.Tensor, eps: float) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, C) float64 covariance over the h*w positions (1/(n-1)), plus
    eps * trace * I (covpoolnet.py's `_cal_cov_pooling`: a regulariser relative to the scale)."""
    n, c, h, w = fmap.shape
    x = fmap.reshape(n, c, h * w).double()
    x = x - x.mean(dim=2, keepdim=True)
    cov = x @ x.transpose(1, 2) / max(h * w - 1, 1)
    trace = torch.diagonal(cov, dim1=1, dim2=2).sum(dim=1)
    return cov + eps * trace.view(n, 1, 1) * torch.eye(c, dtype=cov.dtype, device=cov.device)


class _TangentGrad(torch.autograd.Function):
    """Identity on W; backward turns the Euclidean gradient into the Riemannian one on the
    Stiefel manifold, framework.py's `rgrad = egrad - W sym(W^T egrad)`."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return weight.view_as(weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (weight,) = ctx.saved_tensors
        inner = weight.transpose(0, 1) @ grad
        return grad - weight @ ((inner + inner.transpose(0, 1)) / 2)


class BiMap(nn.Module):
    """SPD -> smaller SPD: W^T S W with W (in_dim, out_dim) having orthonormal columns.

    W is the parameter itself (as covpoolnet.py's `orth_weight0`, initialised to the Q of a
    Gaussian matrix); its gradient is the Riemannian one, and `retract_` puts it back on the
    manifold after an optimiser step. W^T (S + lambda I) W = W^T S W + lambda I stays SPD."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if not 1 <= out_dim <= in_dim:
            raise ValueError(f"BiMap needs 1 <= out_dim <= in_dim, got {out_dim} > {in_dim}")
        self.weight = nn.Parameter(qr_retraction(torch.randn(in_dim, out_dim)))

    def forward(self, spd: torch.Tensor) -> torch.Tensor:
        w = _TangentGrad.apply(self.weight.to(spd.dtype))
        out = w.transpose(0, 1) @ spd @ w
        return (out + out.transpose(-1, -2)) / 2


def qr_retraction(weight: torch.Tensor) -> torch.Tensor:
    """The Q factor of `weight`, columns signed so that R has a positive diagonal: the QR
    retraction onto the Stiefel manifold, which moves a nearly orthonormal W least."""
    with _one_lapack_thread(weight.device):
        q, r = torch.linalg.qr(weight.double())
    sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
    return (q * sign).to(weight.dtype)


@torch.no_grad()
def retract_(model: nn.Module) -> None:
    """Retract every BiMap weight in `model` onto the Stiefel manifold (framework.py's
    `var.assign(tf.qr(var))` after `apply_gradients`). Call after each optimiser step."""
    for module in model.modules():
        if isinstance(module, BiMap):
            module.weight.copy_(qr_retraction(module.weight))


def _retract_hook(model: nn.Module, optimizer, args, kwargs) -> None:
    retract_(model)


def retract_after_step(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Make `optimizer.step()` retract `model`'s BiMap weights (a no-op for models without
    one). Returns the hook handle (`.remove()` undoes it)."""
    return optimizer.register_step_post_hook(functools.partial(_retract_hook, model))


class _RectifiedLog(torch.autograd.Function):
    """U diag(log(clip(lambda, eps, ceiling))) U^T of a symmetric matrix (ReEig then LogEig)."""

    @staticmethod
    def forward(ctx, spd: torch.Tensor, eps: float, ceiling: float) -> torch.Tensor:
        with _one_lapack_thread(spd.device):
            eigvals, eigvecs = torch.linalg.eigh(spd)
        logs = eigvals.clamp(min=eps, max=ceiling).log()
        ctx.save_for_backward(eigvals, eigvecs, logs)
        ctx.eps, ctx.ceiling = eps, ceiling
        out = eigvecs @ torch.diag_embed(logs) @ eigvecs.transpose(-1, -2)
        return (out + out.transpose(-1, -2)) / 2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        eigvals, eigvecs, logs = ctx.saved_tensors
        eps, ceiling = ctx.eps, ctx.ceiling
        lam_i, lam_j = eigvals.unsqueeze(-1), eigvals.unsqueeze(-2)
        gap = lam_i - lam_j
        scale = torch.maximum(lam_i.abs(), lam_j.abs()).clamp(min=eps)
        close = gap.abs() <= 1e-10 * scale
        # Distinct eigenvalues: divided difference of f = log(clip(., eps, ceiling)).
        divided = (logs.unsqueeze(-1) - logs.unsqueeze(-2)) / torch.where(close, 1.0, gap)
        # (Nearly) equal ones: f' at their midpoint (0 where both are clipped).
        mid = (lam_i + lam_j) / 2
        derivative = torch.where((mid > eps) & (mid < ceiling), 1.0 / mid.clamp(min=eps), 0.0)
        kernel = torch.where(close, derivative, divided)
        sym_grad = (grad + grad.transpose(-1, -2)) / 2
        inner = eigvecs.transpose(-1, -2) @ sym_grad @ eigvecs
        return eigvecs @ (kernel * inner) @ eigvecs.transpose(-1, -2), None, None


def rectified_log(spd: torch.Tensor, eps: float, ceiling: float = math.inf) -> torch.Tensor:
    """Matrix log of a symmetric matrix with its eigenvalues clipped to [eps, ceiling]."""
    return _RectifiedLog.apply(spd, eps, ceiling)


class SlimBatchNorm(nn.Module):
    """tf.contrib.slim's batch_norm as CovPoolFER configures it: a learnt offset (beta) and no
    learnt scale, decay 0.995 (momentum 0.005), epsilon 1e-3."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.norm = norm(channels, eps=1e-3, momentum=0.005, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.bias.view(1, -1, *([1] * (x.ndim - 2)))


def _published_trunk(in_chans: int, width: float, cov_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_chans
    for item in (*PUBLISHED_TRUNK, "last"):
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = cov_channels if item == "last" else scaled_channels(item, width)
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), SlimBatchNorm(out, 2),
                   nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers)


def _small_trunk(in_chans: int, width: float, cov_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_chans
    for item in SMALL_TRUNK:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = scaled_channels(item, width)
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True)]
        channels = out
    # Project to the covariance channels; no ReLU, so no channel is stuck at zero variance.
    layers += [nn.Conv2d(channels, cov_channels, 1, bias=False), nn.BatchNorm2d(cov_channels)]
    return nn.Sequential(*layers)


def _slim_fc(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), SlimBatchNorm(out_dim, 1))


@torch.no_grad()
def _truncated_normal_(weight: torch.Tensor, std: float) -> None:
    """N(0, std) with values beyond 2 std redrawn, as TF's truncated normal (nn.init.trunc_normal_'s
    erfinv takes seconds on the 33M weights of fc 2000)."""
    flat = weight.view(-1)
    flat.normal_(0.0, std)
    redraw = (flat.abs() > 2 * std).nonzero().squeeze(1)
    while redraw.numel():
        values = torch.randn(redraw.numel(), dtype=flat.dtype, device=flat.device) * std
        flat[redraw] = values
        redraw = redraw[values.abs() > 2 * std]


def _tf_init(module: nn.Module) -> None:
    """slim's `truncated_normal_initializer(stddev=0.1)` for conv and fc weights, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        _truncated_normal_(module.weight, 0.1)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CovPoolNet(FERNet):
    def __init__(self, num_classes: int, in_chans: int, variant: str = "published", width: float = 1.0,
                 cov_channels: int = 256, bimap_dim: int | None = None, hidden_dim: int = 2000,
                 embed_dim: int = 128, bottleneck_dim: int | None = None, eps: float = 1e-4,
                 dropout: float = 0.0, standardize: bool = True):
        super().__init__()
        bimap_dim = cov_channels // 2 if bimap_dim is None else bimap_dim
        bottleneck_dim = num_classes if bottleneck_dim is None else bottleneck_dim
        _check_options(variant, cov_channels, bimap_dim, hidden_dim, embed_dim, bottleneck_dim, eps, dropout)
        self.variant, self.eps, self.standardize = variant, eps, standardize
        self.ceiling = EIG_CEILING if variant == "published" else math.inf
        self.log_cov_dim = bimap_dim
        self.bimap = BiMap(cov_channels, bimap_dim)
        self.dropout = nn.Dropout(dropout)
        if variant == "published":
            self.trunk = _published_trunk(in_chans, width, cov_channels)
            self.fc1 = _slim_fc(bimap_dim * bimap_dim, hidden_dim)
            self.fc2 = _slim_fc(hidden_dim, embed_dim)
            self.bottleneck = _slim_fc(embed_dim, bottleneck_dim)
            self.embedding_dim = bottleneck_dim
        else:
            self.trunk = _small_trunk(in_chans, width, cov_channels)
            rows, cols = torch.triu_indices(bimap_dim, bimap_dim)
            self.register_buffer("triu_rows", rows, persistent=False)
            self.register_buffer("triu_cols", cols, persistent=False)
            self.register_buffer("triu_weights", torch.where(rows == cols, 1.0, math.sqrt(2.0)),
                                 persistent=False)
            self.embed = nn.Sequential(nn.Linear(rows.numel(), embed_dim, bias=False),
                                       nn.BatchNorm1d(embed_dim))
            self.embedding_dim = embed_dim
        self.head = nn.Linear(self.embedding_dim, num_classes)
        if variant == "published":
            self.trunk.apply(_tf_init)
            for module in (self.fc1, self.fc2, self.bottleneck, self.head):
                module.apply(_tf_init)

    def constrain_(self) -> None:
        retract_(self)  # BiMap weights back onto the Stiefel manifold (framework.py's QR step)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv map, the ReLU output whose covariance is pooled (published)."""
        return self.trunk(per_image_standardization(x) if self.standardize else x)

    def spd_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, d, d) float64: BiMap of the regularised covariance."""
        with torch.autocast(device_type=fmap.device.type, enabled=False):
            return self.bimap(covariance_pool(fmap, self.eps))

    def log_covariance_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, d, d) log-covariance, in fmap's float precision (>= float32)."""
        out_dtype = torch.promote_types(fmap.dtype, torch.float32)
        with torch.autocast(device_type=fmap.device.type, enabled=False):
            return rectified_log(self.spd_from_map(fmap), self.eps, self.ceiling).to(out_dtype)

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        """The log-covariance matrix (N, d, d) of input images (what FSR-FER super-resolves)."""
        return self.log_covariance_from_map(self.feature_map(x))

    def hidden_from_covariance(self, log_cov: torch.Tensor) -> torch.Tensor:
        """(N, d, d) -> (N, embed_dim): fc 128 after its BN, before the ReLU -- FSR-FER's
        `net_f`, the layer its classification loss compares (mrfer_small: the embed fc + BN)."""
        if self.variant == "published":
            return self.fc2(torch.relu(self.fc1(log_cov.flatten(1))))
        vector = log_cov[:, self.triu_rows, self.triu_cols] * self.triu_weights.to(log_cov.dtype)
        return self.embed(vector)

    def features_from_covariance(self, log_cov: torch.Tensor) -> torch.Tensor:
        """(N, d, d) log-covariance -> (N, D) embedding: the published bottleneck (its SVC and
        centre loss use it), or mrfer_small's ReLU'd embed."""
        hidden = self.dropout(torch.relu(self.hidden_from_covariance(log_cov)))
        return self.bottleneck(hidden) if self.variant == "published" else hidden

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.features_from_covariance(self.log_covariance_from_map(fmap))


def _check_options(variant: str, cov_channels: int, bimap_dim: int, hidden_dim: int, embed_dim: int,
                   bottleneck_dim: int, eps: float, dropout: float) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"covpool: variant must be one of {VARIANTS}, got {variant!r}")
    if cov_channels < 2:
        raise ValueError(f"covpool: cov_channels must be >= 2, got {cov_channels}")
    if not 2 <= bimap_dim <= cov_channels:
        raise ValueError(f"covpool: bimap_dim must be in [2, cov_channels={cov_channels}], got {bimap_dim}")
    if min(hidden_dim, embed_dim, bottleneck_dim) < 1:
        raise ValueError("covpool: hidden_dim, embed_dim and bottleneck_dim must be >= 1")
    if eps <= 0:
        raise ValueError(f"covpool: eps must be > 0, got {eps}")
    if not 0 <= dropout < 1:
        raise ValueError(f"covpool: dropout must be in [0, 1), got {dropout}")


@register("covpool")
def _covpool(num_classes: int, in_chans: int, image_size: int, *,
             variant: Literal["published", "mrfer_small"] = "published", width: float = 1.0,
             cov_channels: int = 256, bimap_dim: int | None = None, hidden_dim: int = 2000,
             embed_dim: int = 128, bottleneck_dim: int | None = None, eps: float = 1e-4,
             dropout: float = 0.0, standardize: bool = True) -> FERNet:
    """bimap_dim None: cov_channels // 2 (covpoolnet.py's shape/2); bottleneck_dim None:
    num_classes (train.sh's --embedding_size 7 on RAF-DB's 7 classes). hidden_dim and
    bottleneck_dim are the published variant's; mrfer_small ignores them."""
    return CovPoolNet(num_classes, in_chans, variant=variant, width=width, cov_channels=cov_channels,
                      bimap_dim=bimap_dim, hidden_dim=hidden_dim, embed_dim=embed_dim,
                      bottleneck_dim=bottleneck_dim, eps=eps, dropout=dropout, standardize=standardize)
