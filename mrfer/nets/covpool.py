"""CovPoolFER: covariance pooling of the last conv map on the SPD manifold (FSR-FER's FER net).

    conv trunk -> 1x1 conv to `cov_channels` (the map FSR super-resolves)
    -> covariance over spatial positions + eps*I          (C x C, SPD)
    -> BiMap  W^T S W, W with orthonormal columns        (d x d, SPD; d = bimap_dim)
    -> ReEig + LogEig: U diag(log(max(lambda, eps))) U^T (the log-covariance, d x d)
    -> upper triangle (off-diagonals * sqrt 2, so the vector keeps the Frobenius norm)
    -> Linear -> BN -> ReLU -> dropout                   (the embedding)
    -> head

The matrix part runs in float64 with autocast off: the covariance of a small map is rank
deficient (eps*I keeps it SPD) and its small eigenvalues need the precision. ReEig and LogEig
are one autograd function whose backward uses divided differences (Daleckii-Krein), which
stay finite when eigenvalues coincide -- as the clamped ones do -- where autograd through
`eigh` divides by their zero gaps.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from mrfer.nets.fernet import FERNet, scaled_channels
from mrfer.nets.registry import register

# Conv trunk widths (times `width`); "M" is a 2x2 max-pool. Total stride 4 keeps enough
# spatial positions for the covariance of a 48-64 px face.
TRUNK_LAYOUT = (64, 96, "M", 128, 128, "M", 256, 256)


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


def covariance_pool(fmap: torch.Tensor, eps: float) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, C) float64 covariance over the h*w positions, plus eps*I."""
    n, c, h, w = fmap.shape
    x = fmap.reshape(n, c, h * w).double()
    x = x - x.mean(dim=2, keepdim=True)
    cov = x @ x.transpose(1, 2) / max(h * w - 1, 1)
    return cov + eps * torch.eye(c, dtype=cov.dtype, device=cov.device)


class BiMap(nn.Module):
    """SPD -> smaller SPD: W^T S W with W (in_dim, out_dim) having orthonormal columns.

    W is the Q factor of an unconstrained parameter, so plain optimisers keep it on the
    Stiefel manifold, and W^T (S + eps*I) W = W^T S W + eps*I stays SPD.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if not 1 <= out_dim <= in_dim:
            raise ValueError(f"BiMap needs 1 <= out_dim <= in_dim, got {out_dim} > {in_dim}")
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        nn.init.orthogonal_(self.weight)

    def forward(self, spd: torch.Tensor) -> torch.Tensor:
        with _one_lapack_thread(spd.device):
            w = torch.linalg.qr(self.weight.to(spd.dtype)).Q
        out = w.transpose(0, 1) @ spd @ w
        return (out + out.transpose(-1, -2)) / 2


class _RectifiedLog(torch.autograd.Function):
    """U diag(log(max(lambda, eps))) U^T of a symmetric matrix (ReEig followed by LogEig)."""

    @staticmethod
    def forward(ctx, spd: torch.Tensor, eps: float) -> torch.Tensor:
        with _one_lapack_thread(spd.device):
            eigvals, eigvecs = torch.linalg.eigh(spd)
        logs = eigvals.clamp(min=eps).log()
        ctx.save_for_backward(eigvals, eigvecs, logs)
        ctx.eps = eps
        out = eigvecs @ torch.diag_embed(logs) @ eigvecs.transpose(-1, -2)
        return (out + out.transpose(-1, -2)) / 2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        eigvals, eigvecs, logs = ctx.saved_tensors
        eps = ctx.eps
        lam_i, lam_j = eigvals.unsqueeze(-1), eigvals.unsqueeze(-2)
        gap = lam_i - lam_j
        scale = torch.maximum(lam_i.abs(), lam_j.abs()).clamp(min=eps)
        close = gap.abs() <= 1e-10 * scale
        # Distinct eigenvalues: divided difference of f = log(max(., eps)).
        divided = (logs.unsqueeze(-1) - logs.unsqueeze(-2)) / torch.where(close, 1.0, gap)
        # (Nearly) equal ones: f' at their midpoint (0 where both are clamped).
        mid = (lam_i + lam_j) / 2
        derivative = torch.where(mid > eps, 1.0 / mid.clamp(min=eps), 0.0)
        kernel = torch.where(close, derivative, divided)
        sym_grad = (grad + grad.transpose(-1, -2)) / 2
        inner = eigvecs.transpose(-1, -2) @ sym_grad @ eigvecs
        return eigvecs @ (kernel * inner) @ eigvecs.transpose(-1, -2), None


def rectified_log(spd: torch.Tensor, eps: float) -> torch.Tensor:
    """Matrix log of a symmetric matrix with its eigenvalues clamped to >= eps (ReEig+LogEig)."""
    return _RectifiedLog.apply(spd, eps)


class CovPoolNet(FERNet):
    def __init__(self, num_classes: int, in_chans: int, width: float = 1.0,
                 cov_channels: int = 128, bimap_dim: int | None = None, embed_dim: int = 256,
                 eps: float = 1e-4, dropout: float = 0.5):
        super().__init__()
        if cov_channels < 2:
            raise ValueError(f"covpool: cov_channels must be >= 2, got {cov_channels}")
        if eps <= 0:
            raise ValueError(f"covpool: eps must be > 0, got {eps}")
        bimap_dim = cov_channels if bimap_dim is None else bimap_dim
        if not 2 <= bimap_dim <= cov_channels:
            raise ValueError(f"covpool: bimap_dim must be in [2, cov_channels={cov_channels}], "
                             f"got {bimap_dim}")
        layers: list[nn.Module] = []
        channels = in_chans
        for item in TRUNK_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = scaled_channels(item, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            channels = out
        # Project to the covariance channels; no ReLU, so no channel is stuck at zero variance.
        layers += [nn.Conv2d(channels, cov_channels, 1, bias=False), nn.BatchNorm2d(cov_channels)]
        self.trunk = nn.Sequential(*layers)
        self.eps = eps
        self.bimap = BiMap(cov_channels, bimap_dim)

        rows, cols = torch.triu_indices(bimap_dim, bimap_dim)
        self.register_buffer("triu_rows", rows, persistent=False)
        self.register_buffer("triu_cols", cols, persistent=False)
        self.register_buffer("triu_weights", torch.where(rows == cols, 1.0, math.sqrt(2.0)),
                             persistent=False)
        self.embed = nn.Sequential(
            nn.Linear(rows.numel(), embed_dim, bias=False), nn.BatchNorm1d(embed_dim),
            nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.embedding_dim = embed_dim
        self.log_cov_dim = bimap_dim
        self.head = nn.Linear(embed_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def log_covariance_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, d, d) log-covariance, in fmap's float precision (>= float32)."""
        out_dtype = torch.promote_types(fmap.dtype, torch.float32)
        with torch.autocast(device_type=fmap.device.type, enabled=False):
            spd = self.bimap(covariance_pool(fmap, self.eps))
            return rectified_log(spd, self.eps).to(out_dtype)

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        """The log-covariance matrix (N, d, d) of input images."""
        return self.log_covariance_from_map(self.feature_map(x))

    def features_from_covariance(self, log_cov: torch.Tensor) -> torch.Tensor:
        """(N, d, d) log-covariance -> (N, D) embedding (what feature super-resolution feeds)."""
        vector = log_cov[:, self.triu_rows, self.triu_cols] * self.triu_weights.to(log_cov.dtype)
        return self.embed(vector)

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.features_from_covariance(self.log_covariance_from_map(fmap))


@register("covpool")
def _covpool(num_classes: int, in_chans: int, image_size: int, *, width: float = 1.0,
             cov_channels: int = 128, bimap_dim: int | None = None, embed_dim: int = 256,
             eps: float = 1e-4, dropout: float = 0.5) -> FERNet:
    return CovPoolNet(num_classes, in_chans, width=width, cov_channels=cov_channels,
                      bimap_dim=bimap_dim, embed_dim=embed_dim, eps=eps, dropout=dropout)
