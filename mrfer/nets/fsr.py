"""Feature super-resolution (FSR-FER): a generator that maps the features of a low-resolution
face to those of the same face at full resolution, and a WGAN-div critic.

The generator follows ESRGAN (residual-in-residual dense blocks, RRDB): a first layer to
`channels`, `blocks` RRDBs (each three residual dense blocks of `dense_layers` layers growing
by `growth`, residuals scaled by `residual_scale`), a trunk layer with a skip over the RRDBs,
and a two-layer tail back to the target's channels. The whole is a global residual,

    G(x) = x + f(x),   f's last layer zero-initialised, so G is the identity at the start,

so training starts from "the low-resolution features as they are". No batch norm (ESRGAN;
FSR-FER's TensorFlow code kept it). Three targets, i.e. which FER feature is super-resolved:

    covariance   (N, d, d)     CovPoolFER's log-covariance matrix as a 1-channel image (FSR-FER);
                               the output is symmetrised
    feature_map  (N, C, h, w)  the FER net's last conv map; RRDB on C channels
    embedding    (N, D)        the embedding; the same structure with Linear layers (an MLP)

`target_features(model, x, target)` takes the target from images and
`embedding_from_target(model, t, target)` runs the rest of the FER net to its embedding.

The critic has no batch norm (a per-sample gradient penalty needs per-sample outputs):
conv blocks (3x3, then 4x4 stride 2, LeakyReLU 0.2) down to <= 4 px, then two linear layers
for 2-D targets; a three-layer MLP for the embedding.

A trained FSR (`models/fsr.pt`, written by `mrfer.train.fsr`) is rebuilt by `load_fsr` as an
`FSRModel`; it names the FER model it was trained on, which `check_fer_meta` (by params_hash)
and `check_fer_model` (by weights) enforce. `super_resolve` applies a generator to target
features; `mrfer.infer_fsr.fsr_features` does the whole path from uint8 faces.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import weakref

import numpy as np
import torch
from torch import nn

from mrfer.errors import InputError
from mrfer.nets import checkpoint

TARGETS = ("covariance", "feature_map", "embedding")


def _layer(in_features: int, out_features: int, spatial: bool) -> nn.Module:
    return nn.Conv2d(in_features, out_features, 3, padding=1) if spatial else nn.Linear(in_features, out_features)


def _scaled_kaiming(module: nn.Module, scale: float) -> None:
    """ESRGAN's init: Kaiming (LeakyReLU 0.2) times `scale`, biases zero."""
    nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
    module.weight.data.mul_(scale)
    nn.init.zeros_(module.bias)


class ResidualDenseBlock(nn.Module):
    """x + scale * last(cat(x, h1, ..., h_{n-1})), h_i = lrelu(layer_i(cat(x, h1, ..., h_{i-1})))."""

    def __init__(self, channels: int, growth: int, layers: int, scale: float, spatial: bool):
        super().__init__()
        if layers < 2:
            raise ValueError(f"fsr: dense_layers must be >= 2, got {layers}")
        self.layers = nn.ModuleList(
            _layer(channels + i * growth, growth if i < layers - 1 else channels, spatial) for i in range(layers))
        for layer in self.layers:
            _scaled_kaiming(layer, 0.1)
        self.act = nn.LeakyReLU(0.2)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers[:-1]:
            features.append(self.act(layer(torch.cat(features, 1))))
        return x + self.scale * self.layers[-1](torch.cat(features, 1))


class RRDB(nn.Module):
    """Residual in residual: x + scale * (three residual dense blocks)(x)."""

    def __init__(self, channels: int, growth: int, layers: int, scale: float, spatial: bool):
        super().__init__()
        self.body = nn.Sequential(*(ResidualDenseBlock(channels, growth, layers, scale, spatial) for _ in range(3)))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.body(x)


def target_shape_error(target: str, shape) -> str | None:
    shape = tuple(shape)
    if target not in TARGETS:
        return f"fsr target must be one of {TARGETS}, got {target!r}"
    want = {"covariance": 2, "feature_map": 3, "embedding": 1}[target]
    if len(shape) != want or min(shape) < 1:
        return f"fsr target {target!r} needs a per-sample shape of {want} dims, got {list(shape)}"
    if target == "covariance" and shape[0] != shape[1]:
        return f"fsr target 'covariance' needs a square matrix, got {list(shape)}"
    return None


class FSRGenerator(nn.Module):
    """G(x) = x + f(x) on one target's per-sample `shape` ((d, d), (C, h, w) or (D,))."""

    def __init__(self, target: str, shape, blocks: int = 6, channels: int = 32, growth: int = 16,
                 dense_layers: int = 5, residual_scale: float = 0.2):
        super().__init__()
        error = target_shape_error(target, shape)
        if error:
            raise ValueError(error)
        if blocks < 0 or channels < 1 or growth < 1:
            raise ValueError(f"fsr: need blocks >= 0, channels >= 1, growth >= 1; got {blocks}, {channels}, {growth}")
        self.target, self.shape = target, [int(v) for v in shape]
        spatial = target != "embedding"
        io = {"covariance": 1, "feature_map": self.shape[0], "embedding": self.shape[0]}[target]
        self.first = _layer(io, channels, spatial)
        self.body = nn.Sequential(*(RRDB(channels, growth, dense_layers, residual_scale, spatial)
                                    for _ in range(blocks)))
        self.trunk = _layer(channels, channels, spatial)
        self.tail = nn.Sequential(_layer(channels, channels, spatial), nn.LeakyReLU(0.2),
                                  _layer(channels, io, spatial))
        for layer in (self.first, self.trunk, self.tail[0]):
            _scaled_kaiming(layer, 1.0)
        nn.init.zeros_(self.tail[-1].weight)  # G starts as the identity
        nn.init.zeros_(self.tail[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1) if self.target == "covariance" else x
        first = self.first(h)
        out = h + self.tail(first + self.trunk(self.body(first)))
        if self.target == "covariance":
            out = out.squeeze(1)
            out = (out + out.transpose(-1, -2)) / 2  # a log-covariance is symmetric
        return out


class FSRCritic(nn.Module):
    """WGAN(-div) critic: one unbounded score per sample, no normalisation layers."""

    def __init__(self, target: str, shape, channels: int = 8, hidden: int = 100):
        super().__init__()
        error = target_shape_error(target, shape)
        if error:
            raise ValueError(error)
        self.target, self.shape = target, [int(v) for v in shape]
        act = nn.LeakyReLU(0.2)
        if target == "embedding":
            self.features = nn.Identity()
            flat = self.shape[0]
        else:
            in_ch = 1 if target == "covariance" else self.shape[0]
            side = min(self.shape[-2:])
            layers: list[nn.Module] = [nn.Conv2d(in_ch, channels, 3, padding=1), act]
            width = channels
            while side > 4:
                out = min(width * 2, channels * 8)
                layers += [nn.Conv2d(width, out, 3, padding=1), act, nn.Conv2d(out, out, 4, stride=2, padding=1), act]
                width, side = out, side // 2
            self.features = nn.Sequential(*layers, nn.Flatten())
            with torch.no_grad():
                flat = self.features(torch.zeros(1, in_ch, *self.shape[-2:])).shape[1]
        self.score = nn.Sequential(nn.Linear(flat, hidden), act, nn.Linear(hidden, hidden), act, nn.Linear(hidden, 1)) \
            if target == "embedding" else nn.Sequential(nn.Linear(flat, hidden), act, nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.target == "covariance":
            x = x.unsqueeze(1)
        return self.score(self.features(x)).squeeze(1)


def wgan_div_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, k: float = 2.0, p: float = 6.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-div's k * E[||grad_x D(x)||^p] at random points between real and fake samples
    (FSR-FER's interpolates; one uniform mix per sample). Differentiable w.r.t. the critic."""
    alpha = torch.rand(real.shape[0], generator=generator, device=generator.device if generator else None)
    alpha = alpha.to(real.device, real.dtype).view(-1, *([1] * (real.dim() - 1)))
    mixed = (real.detach() + alpha * (fake.detach() - real.detach())).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    squared_norm = grad.flatten(1).pow(2).sum(1)
    return k * squared_norm.pow(p / 2).mean()


def sample_weights(prob_true: torch.Tensor, offset: float = 1.5) -> torch.Tensor:
    """FSR-FER's per-sample re-weighting (offset - p_y)^2: faces the FER model finds hard count more."""
    return (offset - prob_true) ** 2


# ---------------------------------------------------------------- the FER side of a target


def check_target(model: nn.Module, target: str) -> str:
    """Resolve `auto` (covariance for covpool models, else feature_map) and check the model has it."""
    if target == "auto":
        return "covariance" if hasattr(model, "features_from_covariance") else "feature_map"
    if target not in TARGETS:
        raise ValueError(f"fsr target must be auto or one of {TARGETS}, got {target!r}")
    if target == "covariance" and not hasattr(model, "features_from_covariance"):
        arch = getattr(model, "config", {}).get("name", type(model).__name__)
        raise InputError(f"fsr target 'covariance' needs a covpool FER model, got {arch!r} "
                         "(use feature_map or embedding)")
    return target


def target_features(model: nn.Module, x: torch.Tensor, target: str) -> torch.Tensor:
    """The target features of normalised images `x` under FER `model`."""
    if target == "covariance":
        return model.covariance(x)
    if target == "feature_map":
        return model.feature_map(x)
    if target == "embedding":
        return model.features(x)
    raise ValueError(f"unknown fsr target {target!r}")


def embedding_from_target(model: nn.Module, t: torch.Tensor, target: str) -> torch.Tensor:
    """The rest of the FER net: target features -> (N, D) embedding (its head gives the logits)."""
    if target == "covariance":
        return model.features_from_covariance(t)
    if target == "feature_map":
        return model.features_from_map(t)
    if target == "embedding":
        return t
    raise ValueError(f"unknown fsr target {target!r}")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())



# ---------------------------------------------------------------- a trained FSR


@dataclasses.dataclass(eq=False)
class FSRModel:
    """A trained FSR: generator (and critic), its metadata, and the file it came from."""

    generator: FSRGenerator
    critic: FSRCritic | None
    meta: dict
    path: str = "<memory>"
    # FER model instances already checked against `meta["fer_fingerprint"]` (hashing weights is slow)
    _verified: weakref.WeakSet = dataclasses.field(default_factory=weakref.WeakSet, repr=False)

    @property
    def target(self) -> str:
        return self.meta["target"]


def build_networks(config: dict, target: str, shape: list[int]) -> tuple[FSRGenerator, FSRCritic]:
    """Generator, then critic (this order fixes their random init), from an FSR file's
    `meta["config"]`: blocks, channels, growth, dense_layers, residual_scale, critic_channels, critic_hidden."""
    generator = FSRGenerator(target, shape, blocks=config["blocks"], channels=config["channels"],
                             growth=config["growth"], dense_layers=config["dense_layers"],
                             residual_scale=config["residual_scale"])
    critic = FSRCritic(target, shape, channels=config["critic_channels"], hidden=config["critic_hidden"])
    return generator, critic


def fer_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's weights and buffers (names, dtypes, shapes, bytes): the same file
    loaded anywhere gives the same value; another training run does not."""
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoint.unwrap(model).state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def load_fsr(path: str | os.PathLike, device: torch.device | str = "cpu", fer_meta: dict | None = None) -> FSRModel:
    """Read `models/fsr.pt`. With `fer_meta` (the FER model's meta from `checkpoint.load_model`),
    refuse an FSR trained on another FER model (their `params_hash` differ)."""
    payload = checkpoint.load(path)
    if not isinstance(payload, dict) or not {"generator", "meta"} <= set(payload):
        raise InputError(f"{path}: not an mrfer FSR file (expected keys generator and meta)")
    meta = payload["meta"]
    generator, critic = build_networks(meta["config"], meta["target"], meta["shape"])
    try:
        generator.load_state_dict(payload["generator"])
        if payload.get("critic") is not None:
            critic.load_state_dict(payload["critic"])
        else:
            critic = None
    except RuntimeError as e:
        raise InputError(f"{path}: FSR weights do not fit its own metadata: {e}") from None
    fsr = FSRModel(generator.to(device).eval(), critic.to(device).eval() if critic else None, meta, str(path))
    if fer_meta is not None:
        check_fer_meta(fsr, fer_meta)
    return fsr


def check_fer_meta(fsr: FSRModel, fer_meta: dict) -> None:
    """InputError unless `fer_meta` is the metadata of the FER model the FSR was trained on."""
    if fer_meta.get("params_hash") != fsr.meta["fer_params_hash"]:
        raise InputError(f"{fsr.path}: this FSR was trained on FER model {fsr.meta['fer_model']} "
                         f"(params_hash {fsr.meta['fer_params_hash']}), not on the given one "
                         f"(params_hash {fer_meta.get('params_hash')}); rerun fsr-train on that model")


def check_fer_model(fsr: FSRModel, fer_model: nn.Module) -> None:
    """InputError unless `fer_model` has exactly the weights the FSR was trained on."""
    if fer_model in fsr._verified:
        return
    found = fer_fingerprint(fer_model)
    if found != fsr.meta["fer_fingerprint"]:
        raise InputError(f"{fsr.path}: this FSR was trained on FER model {fsr.meta['fer_model']} "
                         f"(params_hash {fsr.meta['fer_params_hash']}, weights {fsr.meta['fer_fingerprint']}); "
                         f"the FER model given has other weights ({found}); rerun fsr-train on it")
    fsr._verified.add(fer_model)


def check_norm(fsr: FSRModel, mean: list[float], std: list[float] | None) -> None:
    """InputError unless `mean`, `std` are the normalisation the FSR was trained with."""
    trained = (fsr.meta["mean"], fsr.meta["std"])
    if not (_same_values(mean, trained[0]) and _same_values(std, trained[1])):
        raise InputError(f"{fsr.path}: FSR trained with normalisation mean={trained[0]} std={trained[1]}, "
                         f"given mean={list(mean)} std={std}")


def _same_values(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.shape(a) == np.shape(b) and bool(np.allclose(a, b))


@torch.no_grad()
def super_resolve(fer_model: nn.Module, generator: FSRGenerator, target: str, lr_targets: torch.Tensor,
                  device: torch.device | str = "cpu", batch_size: int = 256,
                  hr_targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """Generator on target features, then the rest of the FER net: (embeddings, logits, feature
    MSE to `hr_targets` or None). Runs in float32."""
    device = torch.device(device)
    fer_model.eval()
    generator.eval()
    embeddings, logits, squared = [], [], 0.0
    for start in range(0, len(lr_targets), batch_size):
        sr = generator(lr_targets[start:start + batch_size].to(device))
        emb = embedding_from_target(fer_model, sr, target)
        embeddings.append(emb.float().cpu())
        logits.append(fer_model.head(emb).float().cpu())
        if hr_targets is not None:
            squared += float((sr - hr_targets[start:start + batch_size].to(device)).pow(2).sum())
    mse = squared / hr_targets.numel() if hr_targets is not None else None
    return torch.cat(embeddings), torch.cat(logits), mse
