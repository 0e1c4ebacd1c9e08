"""Feature super-resolution (FSR-FER): a generator that maps the features of a low-resolution
face to those of the same face at full resolution, and a WGAN-div critic.

The generator follows ESRGAN (residual-in-residual dense blocks, RRDB): a first layer to
`channels`, `blocks` RRDBs (each three residual dense blocks of `dense_layers` layers growing
by `growth`, residuals scaled by `residual_scale`), a trunk layer with a skip over the RRDBs,
and a two-layer tail (`tail_kernel`) back to the target's channels. Two layouts share it:

    mrfer (the defaults)   G(x) = x + f(x), f's last layer zero-initialised, so G is the identity at
                           the start ("the low-resolution features as they are"); 3x3 tail; no
                           normalisation; a covariance output is symmetrised
    FSR-FER's TF code      G(x) = f(x) (`input_skip=False`), tail of two 8x8 convs with TF 'same'
      (lib/network.py)     padding, each dense-block conv followed by its batch norm as TF ran it
                           (`dense_norm="frozen_bn"`, see `InferenceBatchNorm`), He-normal init with
                           every generator variable then times 0.1 (`init="fsrfer"`; ops.py
                           scale_initialization), no symmetrisation

Three targets, i.e. which FER feature is super-resolved:

    covariance   (N, d, d)     CovPoolFER's log-covariance matrix as a 1-channel image (FSR-FER)
    feature_map  (N, C, h, w)  the FER net's last conv map; RRDB on C channels
    embedding    (N, D)        the embedding; the same structure with Linear layers (an MLP)

`target_features(model, x, target)` takes the target from images and
`embedding_from_target(model, t, target)` runs the rest of the FER net to its embedding.

The critic has no batch norm (a per-sample gradient penalty needs per-sample outputs). Layout
`mrfer`: conv blocks (3x3, then 4x4 stride 2, LeakyReLU 0.2) down to <= 4 px, then two linear
layers; layout `fsrfer` (network.py Discriminator): bias-free 3x3 + 4x4/2 convs at widths
c, 2c, 4c, 8c, 8c (five halvings, TF 'same' padding), then two linear layers. The embedding
target always gets a three-layer MLP.

A trained FSR (`models/fsr.pt`, written by `mrfer.train.fsr`) is rebuilt by `load_fsr` as an
`FSRModel`; it names the FER model it was trained on, which `check_fer_meta` (by params_hash)
and `check_fer_model` (by weights) enforce. `super_resolve` applies a generator to target
features; `mrfer.infer_fsr.fsr_features` does the whole path from uint8 faces.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrfer.errors import InputError
from mrfer.nets import checkpoint

TARGETS = ("covariance", "feature_map", "embedding")
INITS = ("identity", "fsrfer")
DENSE_NORMS = ("none", "frozen_bn")
CRITIC_LAYOUTS = ("mrfer", "fsrfer")
DIV_NORMS = ("sample", "column")
# Network options added after FSR files were first written, at the values that give the original
# networks: a file's meta["config"] names an option only where it differs from these, so older
# files still load and the default run writes the same bytes.
NETWORK_DEFAULTS = {"input_skip": True, "tail_kernel": 3, "init": "identity", "init_scale": 0.1,
                    "dense_norm": "none", "symmetrize": True, "critic_layout": "mrfer"}


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'same' padding: output ceil(size / stride), the odd padding pixel
    after (bottom, right), as FSR-FER's TF layers pad even kernels and strided convs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip((x.shape[-1], x.shape[-2]), self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _layer(in_features: int, out_features: int, spatial: bool, kernel: int = 3) -> nn.Module:
    if not spatial:
        return nn.Linear(in_features, out_features)
    if kernel == 3:
        return nn.Conv2d(in_features, out_features, 3, padding=1)
    return SameConv2d(in_features, out_features, kernel)


def _scaled_kaiming(module: nn.Module, scale: float) -> None:
    """ESRGAN's init: Kaiming (LeakyReLU 0.2) times `scale`, biases zero."""
    nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
    module.weight.data.mul_(scale)
    nn.init.zeros_(module.bias)


def tf_he_normal_(weight: torch.Tensor) -> None:
    """TF 1.x `he_normal`: a normal truncated at 2 sd, sd sqrt(2 / fan_in) / 0.8796 (so the
    truncated values keep variance 2 / fan_in)."""
    std = math.sqrt(2.0 / weight[0].numel()) / 0.87962566103423978
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


class InferenceBatchNorm(nn.Module):
    """FSR-FER's generator batch norm as its TF code runs it: `tf.layers.BatchNormalization()(x)`
    has `training=False` by default, so it normalises with the initial moving statistics (mean 0,
    variance 1, never updated): a learnt per-channel affine gamma * x / sqrt(1 + 0.001) + beta."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * (self.weight / math.sqrt(1 + self.eps)).view(shape) + self.bias.view(shape)


class ResidualDenseBlock(nn.Module):
    """x + scale * last(cat(x, h1, ..., h_{n-1})), h_i = lrelu(layer_i(cat(x, h1, ..., h_{i-1}))),
    each layer optionally followed by an `InferenceBatchNorm` (FSR-FER).

    `init_scale`: ESRGAN's Kaiming x scale here (the `identity` init); None leaves the layers to
    the generator's own init."""

    def __init__(self, channels: int, growth: int, layers: int, scale: float, spatial: bool,
                 init_scale: float | None = 0.1, norm: bool = False):
        super().__init__()
        if layers < 2:
            raise ValueError(f"fsr: dense_layers must be >= 2, got {layers}")
        self.layers = nn.ModuleList(
            _layer(channels + i * growth, growth if i < layers - 1 else channels, spatial) for i in range(layers))
        if init_scale is not None:
            for layer in self.layers:
                _scaled_kaiming(layer, init_scale)
        self.norms = nn.ModuleList(InferenceBatchNorm(layer.weight.shape[0]) for layer in self.layers) \
            if norm else None
        self.act = nn.LeakyReLU(0.2)
        self.scale = scale

    def _out(self, i: int, x: torch.Tensor) -> torch.Tensor:
        h = self.layers[i](x)
        return self.norms[i](h) if self.norms is not None else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(len(self.layers) - 1):
            features.append(self.act(self._out(i, torch.cat(features, 1))))
        return x + self.scale * self._out(len(self.layers) - 1, torch.cat(features, 1))


class RRDB(nn.Module):
    """Residual in residual: x + scale * (three residual dense blocks)(x)."""

    def __init__(self, channels: int, growth: int, layers: int, scale: float, spatial: bool,
                 init_scale: float | None = 0.1, norm: bool = False):
        super().__init__()
        self.body = nn.Sequential(*(ResidualDenseBlock(channels, growth, layers, scale, spatial, init_scale, norm)
                                    for _ in range(3)))
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
    """G on one target's per-sample `shape` ((d, d), (C, h, w) or (D,)); the keyword options are
    `NETWORK_DEFAULTS` (module docstring: mrfer's layout vs FSR-FER's)."""

    def __init__(self, target: str, shape, blocks: int = 6, channels: int = 32, growth: int = 16,
                 dense_layers: int = 5, residual_scale: float = 0.2, input_skip: bool = True, tail_kernel: int = 3,
                 init: str = "identity", init_scale: float = 0.1, dense_norm: str = "none", symmetrize: bool = True):
        super().__init__()
        error = target_shape_error(target, shape)
        if error:
            raise ValueError(error)
        if blocks < 0 or channels < 1 or growth < 1 or tail_kernel < 1:
            raise ValueError(f"fsr: need blocks >= 0, channels >= 1, growth >= 1, tail_kernel >= 1; "
                             f"got {blocks}, {channels}, {growth}, {tail_kernel}")
        if init not in INITS or dense_norm not in DENSE_NORMS:
            raise ValueError(f"fsr: init must be one of {INITS}, dense_norm one of {DENSE_NORMS}")
        self.target, self.shape = target, [int(v) for v in shape]
        self.input_skip, self.symmetrize = input_skip, symmetrize
        spatial = target != "embedding"
        io = {"covariance": 1, "feature_map": self.shape[0], "embedding": self.shape[0]}[target]
        dense_init = init_scale if init == "identity" else None
        self.first = _layer(io, channels, spatial)
        self.body = nn.Sequential(*(RRDB(channels, growth, dense_layers, residual_scale, spatial, dense_init,
                                         dense_norm == "frozen_bn") for _ in range(blocks)))
        self.trunk = _layer(channels, channels, spatial)
        self.tail = nn.Sequential(_layer(channels, channels, spatial, tail_kernel), nn.LeakyReLU(0.2),
                                  _layer(channels, io, spatial, tail_kernel))
        if init == "identity":
            for layer in (self.first, self.trunk, self.tail[0]):
                _scaled_kaiming(layer, 1.0)
            nn.init.zeros_(self.tail[-1].weight)  # with the input skip, G starts as the identity
            nn.init.zeros_(self.tail[-1].bias)
        else:
            fsrfer_init_(self, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1) if self.target == "covariance" else x
        first = self.first(h)
        out = self.tail(first + self.trunk(self.body(first)))
        if self.input_skip:
            out = h + out
        if self.target == "covariance":
            out = out.squeeze(1)
            if self.symmetrize:
                out = (out + out.transpose(-1, -2)) / 2  # a log-covariance is symmetric
        return out


def fsrfer_init_(generator: nn.Module, scale: float) -> None:
    """FSR-FER's generator init: TF He-normal kernels, zero biases, unit batch-norm gains, then
    every variable times `scale` (lib/ops.py scale_initialization, run once before pre-training)."""
    for module in generator.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            tf_he_normal_(module.weight)
            nn.init.zeros_(module.bias)
    with torch.no_grad():
        for p in generator.parameters():
            p.mul_(scale)


def _fsrfer_critic_convs(in_ch: int, channels: int) -> list[nn.Module]:
    """network.py Discriminator: bias-free 3x3 then 4x4 stride-2 convs at c, 2c, 4c, 8c, 8c."""
    layers: list[nn.Module] = []
    width = in_ch
    for out in (channels, channels * 2, channels * 4, channels * 8, channels * 8):
        layers += [SameConv2d(width, out, 3, bias=False), nn.LeakyReLU(0.2),
                   SameConv2d(out, out, 4, stride=2, bias=False), nn.LeakyReLU(0.2)]
        width = out
    return layers


def _mrfer_critic_convs(in_ch: int, channels: int, side: int) -> list[nn.Module]:
    act = nn.LeakyReLU(0.2)
    layers: list[nn.Module] = [nn.Conv2d(in_ch, channels, 3, padding=1), act]
    width = channels
    while side > 4:
        out = min(width * 2, channels * 8)
        layers += [nn.Conv2d(width, out, 3, padding=1), act, nn.Conv2d(out, out, 4, stride=2, padding=1), act]
        width, side = out, side // 2
    return layers


class FSRCritic(nn.Module):
    """WGAN(-div) critic: one unbounded score per sample, no normalisation layers."""

    def __init__(self, target: str, shape, channels: int = 8, hidden: int = 100, layout: str = "mrfer"):
        super().__init__()
        error = target_shape_error(target, shape)
        if error:
            raise ValueError(error)
        if layout not in CRITIC_LAYOUTS:
            raise ValueError(f"fsr: critic layout must be one of {CRITIC_LAYOUTS}, got {layout!r}")
        self.target, self.shape = target, [int(v) for v in shape]
        act = nn.LeakyReLU(0.2)
        if target == "embedding":
            self.features = nn.Identity()
            flat = self.shape[0]
        else:
            in_ch = 1 if target == "covariance" else self.shape[0]
            convs = _fsrfer_critic_convs(in_ch, channels) if layout == "fsrfer" else \
                _mrfer_critic_convs(in_ch, channels, min(self.shape[-2:]))
            self.features = nn.Sequential(*convs, nn.Flatten())
            with torch.no_grad():
                flat = self.features(torch.zeros(1, in_ch, *self.shape[-2:])).shape[1]
        self.score = nn.Sequential(nn.Linear(flat, hidden), act, nn.Linear(hidden, hidden), act, nn.Linear(hidden, 1)) \
            if target == "embedding" else nn.Sequential(nn.Linear(flat, hidden), act, nn.Linear(hidden, 1))
        if layout == "fsrfer" and target != "embedding":
            tf_critic_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.target == "covariance":
            x = x.unsqueeze(1)
        return self.score(self.features(x)).squeeze(1)


def tf_critic_init_(critic: nn.Module) -> None:
    """TF's initialisers in network.py: He-normal convs, Glorot-uniform dense layers (tf.layers.dense's
    default), zero biases."""
    for module in critic.modules():
        if isinstance(module, nn.Conv2d):
            tf_he_normal_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)


def wgan_div_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, k: float = 2.0, p: float = 6.0,
                     generator: torch.Generator | None = None, norm: str = "sample") -> torch.Tensor:
    """WGAN-div's gradient penalty at random points between real and fake samples (FSR-FER's
    interpolates; one uniform mix per sample). Differentiable w.r.t. the critic. `norm`:

        sample   k * mean_n ||grad D(x_n)||^p                        (the WGAN-div paper)
        column   k * mean_{n,col} (sum_row grad D(x_n)[row, col]^2)^(p/2)
                 FSR-FER's code (train_module_full.py): reduce_sum over axis 1 of the NHWC
                 gradient (the rows) only, pow 3, then the mean over samples, columns and channels
    """
    if norm not in DIV_NORMS:
        raise ValueError(f"fsr: div norm must be one of {DIV_NORMS}, got {norm!r}")
    alpha = torch.rand(real.shape[0], generator=generator, device=generator.device if generator else None)
    alpha = alpha.to(real.device, real.dtype).view(-1, *([1] * (real.dim() - 1)))
    mixed = (real.detach() + alpha * (fake.detach() - real.detach())).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    if norm == "sample":
        squared_norm = grad.flatten(1).pow(2).sum(1)
    else:  # rows: dim 1 of (N, d, d) and (N, D), dim 2 (h) of (N, C, h, w)
        squared_norm = grad.pow(2).sum(max(1, grad.dim() - 2))
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
    `meta["config"]`: blocks, channels, growth, dense_layers, residual_scale, critic_channels,
    critic_hidden, and those of `NETWORK_DEFAULTS` that differ from their default."""
    options = {**NETWORK_DEFAULTS, **{k: config[k] for k in NETWORK_DEFAULTS if k in config}}
    generator = FSRGenerator(target, shape, blocks=config["blocks"], channels=config["channels"],
                             growth=config["growth"], dense_layers=config["dense_layers"],
                             residual_scale=config["residual_scale"], input_skip=options["input_skip"],
                             tail_kernel=options["tail_kernel"], init=options["init"],
                             init_scale=options["init_scale"], dense_norm=options["dense_norm"],
                             symmetrize=options["symmetrize"])
    critic = FSRCritic(target, shape, channels=config["critic_channels"], hidden=config["critic_hidden"],
                       layout=options["critic_layout"])
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
