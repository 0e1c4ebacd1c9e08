"""fsr-train recipe: FSR-FER's feature super-resolution, trained on a frozen FER model.

Training pairs are rows of the assembled arrays: the same face at `hr` and at a low-resolution
scale (`x2`...`x8`, row-aligned files of the downsample stage). `pairing`: each epoch takes every
train row once at a random training scale (`random_scale`), or every (row, scale) pair once
(`all_scales`, FSR-FER's code: utils.py repeats each HR face 7 times beside its x2...x8 faces);
optionally flipped, identically for the pair. The frozen FER model (eval mode, no gradients to
its weights) gives the target features of both.

Phase 1 (`pretrain_epochs`): the generator learns |G(lr) - hr|^2, averaged (`mean`) or summed per
sample (`sum`, FSR-FER) (Adam, FSR-FER: 2e-4 halved every 20k steps).
Phase 2 (`epochs`): generator and WGAN-div critic, alternately (Adam, FSR-FER: 2e-5, beta1 0,
halved after steps 20k, 100k and 200k).

    critic     mean(w * D(G(lr))) - mean(w * D(hr)) + k * penalty(grad D(mix), p)     (k=2, p=6)
    generator  adversarial_weight * -mean(w * D(G(lr)))
               + feature_weight    * mean(w * |G(lr) - hr|^2)                         (0.01)
               + classifier_weight * mean(w * |out(G(lr)) - out(hr)|^2)               (10)

(FSR-FER's code has the critic's sign the other way round, D' = -D; the same losses.) The
penalty's gradient norm is per sample (`div_norm: sample`) or per column (`column`, FSR-FER's
code; `mrfer.nets.fsr.wgan_div_penalty`). `out` is the frozen net's head output (`logits`) or
its embedding (`embedding`, `model.features`), or CovPoolFER's fc 128 layer (`hidden`, FSR-FER).
Per-sample weights w = (1.5 - p_y)^2, p_y the frozen model's softmax probability of the true
class on the HR face (`reweight_from: hr`) or on the super-resolved features (`sr`, FSR-FER),
with the gradient through w stopped or, as FSR-FER's code, kept (`reweight_grad`).
`|.|^2` is the per-sample squared L2 distance summed over the feature (FSR-FER, `reduction: sum`)
or averaged (`reduction: mean`).

The networks and the applied model (`load_fsr`, `FSRModel`) are in `mrfer.nets.fsr`; applying
a trained FSR to uint8 faces is `mrfer.infer_fsr.fsr_features`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from mrfer.config import Section
from mrfer.data import lineage, lowres, shards
from mrfer.data.scales import Scale
from mrfer.errors import InputError
from mrfer.infer import Device, autocast, pick_device, seed_everything
from mrfer.infer_fsr import encode_targets
from mrfer.io import write_json
from mrfer.metrics import summarize
from mrfer.nets import checkpoint
from mrfer.nets.fsr import (CRITIC_LAYOUTS, DENSE_NORMS, DIV_NORMS, INITS, TARGETS, FSRCritic,
                            FSRGenerator, build_networks, check_target, embedding_from_target, fer_fingerprint,
                            parameter_count, sample_weights, super_resolve, target_features, wgan_div_penalty)
from mrfer.train import loop
from mrfer.transforms import prepare, stats_tensors

log = logging.getLogger(__name__)

REDUCTIONS = ("sum", "mean")
REWEIGHT_FROM = ("hr", "sr")
CLASSIFIER_TARGETS = ("logits", "embedding", "hidden")
PAIRINGS = ("random_scale", "all_scales")
Beta = Annotated[float, Field(ge=0, lt=1)]


class FsrTrainParams(Section):
    """`fsr_train`: FSR-FER's generator, critic, losses and schedule (the FER model is the stage's --fer-model)."""

    seed: int
    target: Literal[("auto", *TARGETS)] = Field(
        description="the FER feature super-resolved: auto (covariance for covpool models, else feature_map) | "
                    + " | ".join(TARGETS))
    blocks: int = Field(ge=0, description="generator RRDB blocks (ESRGAN; FSR-FER: 6)")
    channels: int = Field(ge=1, description="generator channels (FSR-FER: 32)")
    growth: int = Field(ge=1, description="dense-block growth (FSR-FER: 16)")
    dense_layers: int = Field(ge=2, description="layers per residual dense block (FSR-FER: 5)")
    residual_scale: float = Field(gt=0, description="residual scaling in the dense blocks (FSR-FER: 0.2)")
    input_skip: bool = Field(description="G(x) = x + f(x) (mrfer: starts as the identity) | false: f(x) (FSR-FER)")
    tail_kernel: int = Field(ge=1, description="kernel of the generator's two tail convs, TF 'same' padding when "
                                               "even (mrfer: 3; FSR-FER: 8)")
    init: Literal[INITS] = Field(description="generator init: identity (Kaiming, dense layers x init_scale, last "
                                             "layer zero) | fsrfer (He-normal, then every variable x init_scale)")
    init_scale: float = Field(gt=0, description="the init's scale factor (ESRGAN and FSR-FER: 0.1)")
    dense_norm: Literal[DENSE_NORMS] = Field(
        description="after each dense-block conv: none | frozen_bn (FSR-FER's batch norm as its TF code runs it: "
                    "inference mode on mean 0 / variance 1, a learnt per-channel affine)")
    symmetrize: bool = Field(description="covariance target: symmetrise the generator's output (FSR-FER: false)")
    critic_channels: int = Field(ge=1, description="critic's first conv channels (FSR-FER: 8)")
    critic_hidden: int = Field(ge=1, description="critic's hidden linear width (FSR-FER: 100)")
    critic_layout: Literal[CRITIC_LAYOUTS] = Field(
        description="critic convs for 2-D targets: mrfer (3x3 + 4x4/2 blocks down to 4 px) | fsrfer (network.py: "
                    "bias-free, widths c..8c, five halvings, TF padding and init)")
    pretrain_epochs: int = Field(ge=0, description="phase 1: MSE pre-training of the generator")
    epochs: int = Field(ge=0, description="phase 2: WGAN-div + weighted feature and classifier-output losses")
    batch_size: int = Field(ge=2, description="pairs per step (FSR-FER: 32)")
    pretrain_lr: float = Field(gt=0, description="phase-1 Adam learning rate (FSR-FER: 2e-4)")
    pretrain_betas: tuple[Beta, Beta] = Field(description="phase-1 Adam betas")
    pretrain_lr_halve_every: int = Field(ge=0, description="phase-1 steps per halving of pretrain_lr "
                                                           "(FSR-FER: 20000); 0: constant")
    pretrain_reduction: Literal[REDUCTIONS] = Field(
        description="phase-1 loss: per-sample squared distance summed (FSR-FER) | mean (MSE)")
    lr: float = Field(gt=0, description="phase-2 generator Adam learning rate (FSR-FER: 2e-5)")
    critic_lr: float | None = Field(gt=0, description="phase-2 critic learning rate; null: lr")
    betas: tuple[Beta, Beta] = Field(description="phase-2 Adam betas, generator and critic (FSR-FER: [0, 0.999])")
    lr_halve_after: list[Annotated[int, Field(gt=0)]] = Field(
        description="phase-2 steps after each of which both rates halve (FSR-FER: [20000, 100000, 200000]); []: constant")
    critic_steps: int = Field(ge=0, description="critic updates per generator update")
    adversarial_weight: float = Field(ge=0, description="weight of the generator's adversarial loss (FSR-FER: 1)")
    feature_weight: float = Field(ge=0, description="weight of the feature distance to HR (FSR-FER: 0.01)")
    classifier_weight: float = Field(ge=0, description="weight of the head-output distance to HR (FSR-FER: 10)")
    div_k: float = Field(ge=0, description="WGAN-div penalty factor k (FSR-FER: 2)")
    div_p: float = Field(gt=0, description="WGAN-div gradient-norm power p (FSR-FER: 6)")
    div_norm: Literal[DIV_NORMS] = Field(
        description="penalty's gradient norm: sample (per sample, the WGAN-div paper) | column (over each column "
                    "only, FSR-FER's code)")
    classifier_target: Literal[CLASSIFIER_TARGETS] = Field(
        description="the classifier term compares the frozen net's logits | its embedding | hidden: covpool's fc 128 "
                    "(after its BN, before the ReLU: FSR-FER's net_f; covariance target only)")
    reweight: bool = Field(description="per-sample loss weights (reweight_offset - p_y)^2; false: all 1")
    reweight_offset: float = Field(gt=0, description="the offset in (offset - p_y)^2 (FSR-FER: 1.5)")
    reweight_from: Literal[REWEIGHT_FROM] = Field(
        description="p_y on the HR face (hr) or on the super-resolved features (sr, FSR-FER's code)")
    reweight_grad: bool = Field(description="reweight_from sr: keep the gradient through the weights into the "
                                            "generator (FSR-FER's code) | false: stop it")
    reduction: Literal[REDUCTIONS] = Field(description="per-sample squared distance: sum (FSR-FER) | mean")
    flip: bool = Field(description="random horizontal flip, the same for both faces of a pair (FSR-FER: none)")
    pairing: Literal[PAIRINGS] = Field(description="per epoch: each train row at one random scale | every "
                                                   "(row, scale) pair once (all_scales, FSR-FER)")
    scales: Annotated[list[Scale], Field(min_length=1)] | None = Field(
        description="training scales; null: downsample.scales")
    val_scale: Scale | None = Field(description="validation scale; null: the middle training scale")
    eval_batch_size: int = Field(ge=1, description="batch size of the frozen FER passes and evaluation")
    amp: bool = Field(description="CUDA only: autocast the frozen FER passes (bf16 where supported)")
    device: Device

    @field_validator("lr_halve_after")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if steps != sorted(set(steps)):
            raise ValueError(f"steps must be strictly increasing, got {steps}")
        return steps

    @model_validator(mode="after")
    def _weight_gradient_needs_sr_weights(self):
        if self.reweight_grad and not (self.reweight and self.reweight_from == "sr"):
            raise ValueError("reweight_grad: true needs reweight: true and reweight_from: sr "
                             "(weights from the HR face carry no gradient to the generator)")
        return self


def network_config(cfg: FsrTrainParams) -> dict:
    """What `build_networks` needs; saved in the FSR file's meta so `load_fsr` rebuilds the nets."""
    options = {"input_skip": cfg.input_skip, "tail_kernel": cfg.tail_kernel, "init": cfg.init,
               "init_scale": cfg.init_scale, "dense_norm": cfg.dense_norm, "symmetrize": cfg.symmetrize,
               "critic_layout": cfg.critic_layout}
    return {"blocks": cfg.blocks, "channels": cfg.channels, "growth": cfg.growth, "dense_layers": cfg.dense_layers,
            "residual_scale": cfg.residual_scale, "critic_channels": cfg.critic_channels,
            "critic_hidden": cfg.critic_hidden,
            **options}


def pretrain_rate(cfg: FsrTrainParams, step: int) -> float:
    """Phase-1 rate at optimiser step `step` (from 0): FSR-FER's tf.train.exponential_decay(2e-4,
    step, 20000, 0.5, staircase=True)."""
    if not cfg.pretrain_lr_halve_every:
        return cfg.pretrain_lr
    return cfg.pretrain_lr * 0.5 ** (step // cfg.pretrain_lr_halve_every)


def gan_rate(lr: float, step: int, halve_after: list[int]) -> float:
    """Phase-2 rate at step `step` (from 0): halved once per boundary passed, as FSR-FER's
    tf.train.piecewise_constant (its values change after steps 20k, 100k and 200k)."""
    return lr * 0.5 ** sum(step > b for b in halve_after)


def set_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def squared_distance(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample squared L2 distance, summed (FSR-FER) or averaged over the feature."""
    squared = (a - b).pow(2).flatten(1)
    return squared.sum(1) if reduction == "sum" else squared.mean(1)


def weigh(logits: torch.Tensor, labels: torch.Tensor, cfg: FsrTrainParams) -> torch.Tensor:
    """Per-sample loss weights from the FER head's logits (ones when `reweight` is off)."""
    if not cfg.reweight:
        return torch.ones(len(labels), device=labels.device)
    p_true = logits.float().softmax(1).gather(1, labels[:, None]).squeeze(1)
    return sample_weights(p_true, cfg.reweight_offset)


@dataclasses.dataclass(eq=False)
class FrozenFER:
    """The frozen FER model the FSR learns on: its target features and head, never trained."""

    model: torch.nn.Module
    target: str
    norm: tuple[list[float], list[float] | None]
    n_classes: int
    device: torch.device
    amp: bool
    batch_size: int  # for whole-array passes (`encode`, evaluation)
    compare: str  # what the classifier term compares: logits | embedding | hidden

    def __post_init__(self):
        self.mean, self.std = stats_tensors(*self.norm, self.device)

    def encode(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, logits) of a uint8 array, CPU float32."""
        return encode_targets(self.model, self.target, images, *self.norm, self.device, self.batch_size, self.amp)

    def logits(self, t: torch.Tensor) -> torch.Tensor:
        return self.model.head(embedding_from_target(self.model, t, self.target))

    def outputs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the classifier term compares, logits) of target features: the rest of the frozen net."""
        embedding = embedding_from_target(self.model, t, self.target)
        logits = self.model.head(embedding)
        if self.compare == "hidden":
            return self.model.hidden_from_covariance(t), logits
        return (embedding if self.compare == "embedding" else logits), logits

    @torch.no_grad()
    def pair_targets(self, hr_u8: torch.Tensor, lr_u8: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(HR targets, HR compared outputs, HR logits, LR targets) of a batch of pairs, float32."""
        with autocast(self.device, self.amp):
            hr_t = target_features(self.model, prepare(hr_u8, self.mean, self.std), self.target)
            hr_out, hr_logits = self.outputs(hr_t)
            lr_t = target_features(self.model, prepare(lr_u8, self.mean, self.std), self.target)
        return hr_t.float(), hr_out.float(), hr_logits.float(), lr_t.float()


def load_frozen(path: str | os.PathLike, cfg: FsrTrainParams, device: torch.device) -> tuple[FrozenFER, dict]:
    fer, meta = checkpoint.load_model(path, device)
    fer.eval().requires_grad_(False)
    target = check_target(fer, cfg.target)
    if cfg.classifier_target == "hidden" and not (target == "covariance" and hasattr(fer, "hidden_from_covariance")):
        raise InputError(f"fsr_train.classifier_target 'hidden' (covpool's fc 128) needs a covpool FER model and "
                         f"target covariance; {path} gives target {target!r} (use logits or embedding)")
    frozen = FrozenFER(fer, target, (meta["mean"], meta["std"]), len(meta["classes"]), device, cfg.amp,
                       cfg.eval_batch_size, cfg.classifier_target)
    return frozen, meta


def load_pairs(data: str | os.PathLike, split: str, scales: list[str]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(hr, [lr at each scale], labels) of a split; the arrays must be row-aligned."""
    hr, labels = shards.load_xy(data, split)
    lr = [lowres.load_xy(data, split, s)[0] for s in scales]
    for s, a in zip(scales, lr):
        if a.shape != hr.shape:
            raise InputError(f"{data}/{split}/{s}.npy has shape {a.shape}, hr.npy {hr.shape}: not row-aligned")
    return hr, lr, labels


class PairSampler:
    """Per epoch, shuffled: every train row at a random training scale (`all_scales` false) or
    every (row, scale) pair (true, FSR-FER); optional flip of both faces of a pair.

    Yields (hr, lr, labels) uint8 NHWC / long batches on `device`, dropping the last partial
    batch; gathering is one index per scale present in the batch, never a loop over images."""

    def __init__(self, hr: np.ndarray, lr: list[np.ndarray], labels: np.ndarray, batch_size: int, flip: bool,
                 device: torch.device, seed: int, all_scales: bool):
        self.hr = torch.from_numpy(np.ascontiguousarray(hr))
        self.lr = [torch.from_numpy(np.ascontiguousarray(a)) for a in lr]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.all_scales = all_scales
        self.pairs = len(self.hr) * (len(self.lr) if all_scales else 1)
        self.batch_size, self.flip, self.device = min(batch_size, self.pairs), flip, device
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.pairs // self.batch_size

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, scale indices, flips) of one epoch's pairs, in order."""
        n = len(self.hr)
        if self.all_scales:
            pair = torch.randperm(self.pairs, generator=self.generator)
            order, scale = pair % n, pair // n
        else:
            order = torch.randperm(n, generator=self.generator)
            scale = torch.randint(len(self.lr), (n,), generator=self.generator)
        flip = torch.rand(self.pairs, generator=self.generator) < 0.5 if self.flip else \
            torch.zeros(self.pairs, dtype=torch.bool)
        return order, scale, flip

    def __iter__(self):
        order, scale, flip = self._draw()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start:start + self.batch_size]
            k, f = scale[start:start + self.batch_size], flip[start:start + self.batch_size]
            hr = self.hr[rows]
            lr = torch.empty_like(hr)
            for s in k.unique().tolist():
                lr[k == s] = self.lr[s][rows[k == s]]
            hr[f], lr[f] = hr[f].flip(2), lr[f].flip(2)
            yield hr.to(self.device), lr.to(self.device), self.labels[rows].to(self.device)


# ---------------------------------------------------------------- validation and epoch log


@dataclasses.dataclass(eq=False)
class ValPairs:
    """Validation faces as FER targets at full resolution and at the validation scale (encoded once),
    and the plain low-resolution scores every epoch's row repeats for comparison."""

    hr_targets: torch.Tensor
    lr_targets: torch.Tensor
    labels: np.ndarray
    lr_accuracy: float
    lr_mse: float


def val_pairs(fer: FrozenFER, data: str | os.PathLike, val_scale: str) -> ValPairs | None:
    """None when the data has no validation split (FSR-FER trains on the whole training set)."""
    hr, [lr], labels = load_pairs(data, "val", [val_scale])
    if len(labels) == 0:
        log.info("fsr-train: %s has no validation split: the epochs are not validated", data)
        return None
    hr_t, _ = fer.encode(hr)
    lr_t, lr_logits = fer.encode(lr)
    lr_accuracy = summarize(labels, lr_logits.argmax(1).numpy(), fer.n_classes)["accuracy"]
    return ValPairs(hr_t, lr_t, labels, lr_accuracy, float(F.mse_loss(lr_t, hr_t)))


def validate(fer: FrozenFER, generator: FSRGenerator, val: ValPairs | None) -> dict:
    """Head accuracy on super-resolved validation features and their MSE to HR (generator left
    training); nothing without a validation split."""
    if val is None:
        return {}
    _, logits, mse = super_resolve(fer.model, generator, fer.target, val.lr_targets, fer.device, fer.batch_size,
                                   val.hr_targets)
    generator.train()
    scores = summarize(val.labels, logits.argmax(1).numpy(), fer.n_classes)
    return {"val_accuracy": scores["accuracy"], "val_average_accuracy": scores["average_accuracy"],
            "val_feature_mse": round(mse, 6), "val_accuracy_lr": val.lr_accuracy,
            "val_feature_mse_lr": round(val.lr_mse, 6)}


@dataclasses.dataclass(eq=False)
class EpochLog:
    """Epoch rows: kept for the report, logged, and sent to dvclive (`live` may be None)."""

    live: object
    rows: list[dict] = dataclasses.field(default_factory=list)
    clock: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, row: dict) -> None:
        row = {"epoch": len(self.rows) + 1, **row}
        self.rows.append(row)
        now = time.perf_counter()
        log.info("fsr-train epoch %d (%.1f s): %s", row["epoch"], now - self.clock,
                 {k: v for k, v in row.items() if k != "epoch"})
        self.clock = now
        loop.log_epoch(self.live, row)


# ---------------------------------------------------------------- the two phases


def pretrain_loss(sr: torch.Tensor, hr_t: torch.Tensor, reduction: str) -> torch.Tensor:
    """MSE, or FSR-FER's mean over samples of the summed squared distance (train_module_full.py)."""
    return F.mse_loss(sr, hr_t) if reduction == "mean" else squared_distance(sr, hr_t, "sum").mean()


def pretrain_epoch(generator: FSRGenerator, optimizer: torch.optim.Optimizer, sampler: PairSampler,
                   fer: FrozenFER, cfg: FsrTrainParams, first_step: int) -> dict:
    """Phase 1: one epoch of |G(lr) - hr|^2; the rate follows `pretrain_rate` from `first_step`."""
    total, seen = 0.0, 0
    for i, (hr_u8, lr_u8, _) in enumerate(sampler):
        hr_t, _, _, lr_t = fer.pair_targets(hr_u8, lr_u8)
        loss = pretrain_loss(generator(lr_t), hr_t, cfg.pretrain_reduction)
        set_rate(optimizer, pretrain_rate(cfg, first_step + i))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, seen = total + float(loss.detach()) * len(hr_t), seen + len(hr_t)
    return {"phase": 1, "pretrain_loss": round(total / max(seen, 1), 6)}


def critic_step(critic: FSRCritic, optimizer: torch.optim.Optimizer, generator: FSRGenerator, fer: FrozenFER,
                hr_t: torch.Tensor, lr_t: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                cfg: FsrTrainParams, mix_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`critic_steps` WGAN-div updates of the critic on one batch: (last critic loss, its penalty)."""
    d_loss = penalty = torch.zeros((), device=fer.device)
    critic.requires_grad_(True)
    for _ in range(cfg.critic_steps):
        with torch.no_grad():
            fake = generator(lr_t)
            if cfg.reweight_from == "sr":
                weights = weigh(fer.logits(fake), labels, cfg)
        penalty = wgan_div_penalty(critic, hr_t, fake, cfg.div_k, cfg.div_p, mix_gen, cfg.div_norm)
        d_loss = (weights * critic(fake)).mean() - (weights * critic(hr_t)).mean() + penalty
        optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        optimizer.step()
    critic.requires_grad_(False)
    return d_loss, penalty


def generator_step(generator: FSRGenerator, critic: FSRCritic, optimizer: torch.optim.Optimizer, fer: FrozenFER,
                   hr_t: torch.Tensor, hr_out: torch.Tensor, lr_t: torch.Tensor, labels: torch.Tensor,
                   weights: torch.Tensor, cfg: FsrTrainParams) -> dict[str, torch.Tensor]:
    """One generator update (adversarial + feature + classifier losses): its loss terms. `hr_out` is
    what the classifier term compares (`FrozenFER.outputs`) of the HR faces."""
    sr = generator(lr_t)
    sr_out, sr_logits = fer.outputs(sr)
    if cfg.reweight_from == "sr":
        weights = weigh(sr_logits if cfg.reweight_grad else sr_logits.detach(), labels, cfg)
    adversarial = -(weights * critic(sr)).mean() if cfg.adversarial_weight else torch.zeros((), device=fer.device)
    feature = (weights * squared_distance(sr, hr_t, cfg.reduction)).mean()
    classifier = (weights * squared_distance(sr_out, hr_out, cfg.reduction)).mean()
    g_loss = (cfg.adversarial_weight * adversarial + cfg.feature_weight * feature
              + cfg.classifier_weight * classifier)
    optimizer.zero_grad(set_to_none=True)
    g_loss.backward()
    optimizer.step()
    return {"g_loss": g_loss, "adversarial_loss": adversarial, "feature_loss": feature,
            "classifier_loss": classifier, "weight": weights.mean()}


def gan_epoch(generator: FSRGenerator, critic: FSRCritic, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
              sampler: PairSampler, fer: FrozenFER, cfg: FsrTrainParams, mix_gen: torch.Generator,
              first_step: int) -> dict:
    """Phase 2: one epoch of alternating critic and generator updates, rates following `gan_rate`
    from `first_step`; per-sample mean losses."""
    sums = dict.fromkeys(("g_loss", "d_loss", "adversarial_loss", "feature_loss", "classifier_loss",
                          "gradient_penalty", "weight"), 0.0)
    seen = 0
    for i, (hr_u8, lr_u8, labels) in enumerate(sampler):
        set_rate(opt_g, gan_rate(cfg.lr, first_step + i, cfg.lr_halve_after))
        set_rate(opt_d, gan_rate(cfg.critic_lr or cfg.lr, first_step + i, cfg.lr_halve_after))
        hr_t, hr_out, hr_logits, lr_t = fer.pair_targets(hr_u8, lr_u8)
        weights = weigh(hr_logits, labels, cfg)
        d_loss, penalty = critic_step(critic, opt_d, generator, fer, hr_t, lr_t, labels, weights, cfg, mix_gen)
        terms = generator_step(generator, critic, opt_g, fer, hr_t, hr_out, lr_t, labels, weights, cfg)
        n = len(labels)
        for key, value in {**terms, "d_loss": d_loss, "gradient_penalty": penalty}.items():
            sums[key] += float(value.detach()) * n
        seen += n
    return {"phase": 2, **{k: round(v / max(seen, 1), 6) for k, v in sums.items()}}


def train(generator: FSRGenerator, critic: FSRCritic, sampler: PairSampler, fer: FrozenFER, val: ValPairs | None,
          cfg: FsrTrainParams, mix_gen: torch.Generator, live_dir: str | None) -> list[dict]:
    """Both phases, validating after every epoch; returns the epoch rows."""
    loop.warn_few_steps("fsr-train", len(sampler), cfg.pretrain_epochs + cfg.epochs, cfg.batch_size)
    epochs = EpochLog(loop.open_live(live_dir))
    generator.train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.pretrain_lr, betas=cfg.pretrain_betas)
    for epoch in range(cfg.pretrain_epochs):
        epochs.add({**pretrain_epoch(generator, optimizer, sampler, fer, cfg, epoch * len(sampler)),
                    **validate(fer, generator, val)})

    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr or cfg.lr, betas=cfg.betas)
    for epoch in range(cfg.epochs):
        epochs.add({**gan_epoch(generator, critic, opt_g, opt_d, sampler, fer, cfg, mix_gen, epoch * len(sampler)),
                    **validate(fer, generator, val)})
    critic.requires_grad_(True)
    if epochs.live is not None:
        epochs.live.end()
    return epochs.rows


# ---------------------------------------------------------------- the recipe


def test_scores(fer: FrozenFER, generator: FSRGenerator, data: str | os.PathLike, scales: list[str]) -> dict:
    """Test metrics at full resolution, and per scale of the plain (lr) and super-resolved (sr)
    features with their MSE to the HR features."""
    images, labels = shards.load_xy(data, "test")
    hr_t, logits = fer.encode(images)
    test = {"hr": summarize(labels, logits.argmax(1).numpy(), fer.n_classes)}
    for scale in scales:
        images, labels = shards.load_xy(data, "test", scale)
        lr_t, lr_logits = fer.encode(images)
        _, sr_logits, sr_mse = super_resolve(fer.model, generator, fer.target, lr_t, fer.device, fer.batch_size,
                                             hr_t)
        test[scale] = {"lr": summarize(labels, lr_logits.argmax(1).numpy(), fer.n_classes),
                       "sr": summarize(labels, sr_logits.argmax(1).numpy(), fer.n_classes),
                       "feature_mse_lr": round(float(F.mse_loss(lr_t, hr_t)), 6),
                       "feature_mse_sr": round(sr_mse, 6)}
    return test


def fit_fsr(cfg: FsrTrainParams, data: str | os.PathLike, fer_model_path: str | os.PathLike,
            out: str | os.PathLike, report: str | os.PathLike, scales: list[str], live_dir: str | None) -> dict:
    """Train an FSR on the frozen FER model at `fer_model_path`; write `out` and `report`.

    `scales` are the downsample stage's (all are tested; `cfg.scales` picks the training ones)."""
    if int(os.environ.get("RANK", "0")) != 0:  # one GAN on one device: other torchrun ranks idle
        log.info("fsr-train runs on rank 0 only")
        return {}
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    train_scales = list(cfg.scales or scales)
    val_scale = cfg.val_scale or train_scales[len(train_scales) // 2]
    fer, fer_meta = load_frozen(fer_model_path, cfg, device)
    ancestry = lineage.from_meta(fer_meta, fer_model_path)
    lineage.check_start(ancestry, lineage.split_hashes(data, "test"), fer_model_path, f"{data}'s test split")
    stats = shards.read_stats(data)
    if list(stats["classes"]) != list(fer_meta["classes"]):
        raise InputError(f"{data}: classes {stats['classes']} differ from FER model {fer_model_path}'s "
                         f"{fer_meta['classes']}")
    train_hr, train_lr, train_y = load_pairs(data, "train", train_scales)
    val = val_pairs(fer, data, val_scale)

    shape = list(fer.encode(train_hr[:1])[0].shape[1:])
    generator, critic = build_networks(network_config(cfg), fer.target, shape)  # seeded init, this order
    generator.to(device)
    critic.to(device)
    run_hash = checkpoint.params_hash("fsr_train", cfg.model_dump(), str(fer_model_path), stats,
                                      fer_meta["params_hash"], train_scales, fer.target)
    log.info("fsr-train: target %s %s, generator %d / critic %d parameters, scales %s", fer.target, shape,
             parameter_count(generator), parameter_count(critic), train_scales)
    sampler = PairSampler(train_hr, train_lr, train_y, cfg.batch_size, cfg.flip, device, cfg.seed + 1,
                          cfg.pairing == "all_scales")
    mix_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    history = train(generator, critic, sampler, fer, val, cfg, mix_gen, live_dir)

    meta = {"stage": "fsr_train", "target": fer.target, "shape": shape, "config": network_config(cfg),
            "blocks": cfg.blocks, "channels": cfg.channels,
            "fer_model": str(fer_model_path), "fer_params_hash": fer_meta["params_hash"],
            "fer_fingerprint": fer_fingerprint(fer.model), "fer_arch": fer_meta["arch"],
            "classes": fer_meta["classes"], "mean": fer.norm[0], "std": fer.norm[1], "train_scales": train_scales,
            "params_hash": run_hash, "seed": cfg.seed, "versions": checkpoint.versions(),
            "lineage": lineage.to_meta(lineage.merge(ancestry, lineage.assembled(data, ["train", "val"])))}
    checkpoint.save(out, {"generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
                          "critic": {k: v.detach().cpu() for k, v in critic.state_dict().items()},
                          "meta": meta})
    test = test_scores(fer, generator, data, scales)
    result = {"target": fer.target, "val_scale": val_scale, "train_scales": train_scales,
              "val": history[-1] if history else {}, "test": test, "fer_model": str(fer_model_path),
              "fer_params_hash": fer_meta["params_hash"], "params_hash": run_hash, "seed": cfg.seed}
    write_json(report, result)
    log.info("fsr test accuracy per scale (lr -> sr): %s",
             {s: (m["lr"]["accuracy"], m["sr"]["accuracy"]) for s, m in test.items() if s != "hr"})
    return result
