"""fsr-train recipe: FSR-FER's feature super-resolution on a frozen FER model, and applying it.

Training pairs are rows of the assembled arrays: the same face at `hr` and at a low-resolution
scale (`x2`...`x8`, row-aligned files of the downsample stage). Each step takes a batch of train
rows, each at a random training scale (optionally flipped, identically for the pair); the frozen
FER model (eval mode, no gradients to its weights) gives the target features of both.

Phase 1 (`pretrain_epochs`): the generator learns MSE(G(lr), hr) (Adam, FSR-FER: 2e-4).
Phase 2 (`epochs`): generator and WGAN-div critic, alternately (Adam, FSR-FER: 2e-5, beta1 0).

    critic     mean(w * D(G(lr))) - mean(w * D(hr)) + k * mean(||grad D(mix)||^p)       (k=2, p=6)
    generator  adversarial_weight * -mean(w * D(G(lr)))
               + feature_weight    * mean(w * |G(lr) - hr|^2)                           (0.01)
               + classifier_weight * mean(w * |head(emb(G(lr))) - head(emb(hr))|^2)     (10)

with per-sample weights w = (1.5 - p_y)^2, p_y the frozen model's softmax probability of the true
class on the HR face (FSR-FER took it on the super-resolved features; `reweight_from: sr`).
`|.|^2` is the per-sample squared L2 distance summed over the feature (FSR-FER, `reduction: sum`)
or averaged (`reduction: mean`). The classifier term is on the frozen head's outputs (logits).

Applying: `load_fsr(path)` then `fsr_features(fer_model, fsr, images, mean, std)` gives the
embedding and logits of low-resolution faces through FER target -> generator -> rest of the net.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from mrfer.data import shards
from mrfer.data.degrade import parse_scale
from mrfer.infer import autocast, pick_device, seed_everything
from mrfer.metrics import summarize
from mrfer.io import write_json
from mrfer.nets.fsr import (FSRCritic, FSRGenerator, check_target, embedding_from_target, parameter_count,
                            sample_weights, target_features, wgan_div_penalty)
from mrfer.nets import checkpoint
from mrfer.train import loop
from mrfer.transforms import prepare, stats_tensors

log = logging.getLogger(__name__)

DEFAULTS = {
    # the frozen FER model (the stage's --fer-model overrides it)
    "fer_model": "models/base.pt",
    # what is super-resolved: auto (covariance for covpool models, else feature_map) | covariance |
    # feature_map | embedding
    "target": "auto",
    # generator (ESRGAN RRDB; FSR-FER: 6 blocks, 32 channels, growth 16, 5 layers, scale 0.2)
    "blocks": 6, "channels": 32, "growth": 16, "dense_layers": 5, "residual_scale": 0.2,
    # critic (FSR-FER: 8 base conv channels, 100 hidden)
    "critic_channels": 8, "critic_hidden": 100,
    # optimisation (FSR-FER: batch 32; Adam 2e-4 pre-training, 2e-5 with beta1 = 0 for the GAN)
    "pretrain_epochs": 5, "epochs": 5, "batch_size": 32,
    "pretrain_lr": 2e-4, "pretrain_betas": [0.9, 0.999],
    "lr": 2e-5, "critic_lr": None, "betas": [0.0, 0.999], "critic_steps": 1,
    # losses (FSR-FER: 1, 0.01, 10; WGAN-div k = 2, p = 6; weights (1.5 - p_y)^2)
    "adversarial_weight": 1.0, "feature_weight": 0.01, "classifier_weight": 10.0,
    "div_k": 2.0, "div_p": 6.0, "reweight": True, "reweight_offset": 1.5, "reweight_from": "hr",
    "reduction": "sum",
    # data
    "flip": True, "scales": None, "val_scale": None,
    "eval_batch_size": 256, "amp": True, "device": "auto",
}
REDUCTIONS = ("sum", "mean")


# ---------------------------------------------------------------- a trained FSR


@dataclasses.dataclass(eq=False)
class FSRModel:
    """A trained FSR: generator (and critic), its metadata, and the file it came from."""

    generator: FSRGenerator
    critic: FSRCritic | None
    meta: dict
    path: str = "<memory>"
    _verified: weakref.WeakSet = dataclasses.field(default_factory=weakref.WeakSet, repr=False)

    @property
    def target(self) -> str:
        return self.meta["target"]


def build_networks(cfg: dict, target: str, shape: list[int]) -> tuple[FSRGenerator, FSRCritic]:
    generator = FSRGenerator(target, shape, blocks=cfg["blocks"], channels=cfg["channels"], growth=cfg["growth"],
                             dense_layers=cfg["dense_layers"], residual_scale=cfg["residual_scale"])
    critic = FSRCritic(target, shape, channels=cfg["critic_channels"], hidden=cfg["critic_hidden"])
    return generator, critic


def fer_fingerprint(model: torch.nn.Module) -> str:
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
        raise ValueError(f"{path}: not an mrfer FSR file (expected keys generator and meta)")
    meta = payload["meta"]
    generator, critic = build_networks(meta["config"], meta["target"], meta["shape"])
    try:
        generator.load_state_dict(payload["generator"])
        if payload.get("critic") is not None:
            critic.load_state_dict(payload["critic"])
        else:
            critic = None
    except RuntimeError as e:
        raise ValueError(f"{path}: FSR weights do not fit its own metadata: {e}") from None
    fsr = FSRModel(generator.to(device).eval(), critic.to(device).eval() if critic else None, meta, str(path))
    if fer_meta is not None:
        check_fer_meta(fsr, fer_meta)
    return fsr


def check_fer_meta(fsr: FSRModel, fer_meta: dict) -> None:
    """ValueError unless `fer_meta` is the metadata of the FER model the FSR was trained on."""
    if fer_meta.get("params_hash") != fsr.meta["fer_params_hash"]:
        raise ValueError(f"{fsr.path}: this FSR was trained on FER model {fsr.meta['fer_model']} "
                         f"(params_hash {fsr.meta['fer_params_hash']}), not on the given one "
                         f"(params_hash {fer_meta.get('params_hash')}); rerun fsr-train on that model")


def check_fer_model(fsr: FSRModel, fer_model: torch.nn.Module) -> None:
    """ValueError unless `fer_model` has exactly the weights the FSR was trained on."""
    if fer_model in fsr._verified:
        return
    found = fer_fingerprint(fer_model)
    if found != fsr.meta["fer_fingerprint"]:
        raise ValueError(f"{fsr.path}: this FSR was trained on FER model {fsr.meta['fer_model']} "
                         f"(params_hash {fsr.meta['fer_params_hash']}, weights {fsr.meta['fer_fingerprint']}); "
                         f"the FER model given has other weights ({found}); rerun fsr-train on it")
    fsr._verified.add(fer_model)


@torch.no_grad()
def encode(fer_model: torch.nn.Module, target: str, images: np.ndarray, mean: list[float], std: list[float] | None,
           device: torch.device | str = "cpu", batch_size: int = 256, amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain FER pass over uint8 NHWC `images`: (target features, logits), CPU float32."""
    device = torch.device(device)
    fer_model.eval()
    m, s = stats_tensors(mean, std, device)
    targets, logits = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with autocast(device, amp):
            t = target_features(fer_model, prepare(batch, m, s), target)
            out = fer_model.head(embedding_from_target(fer_model, t, target))
        targets.append(t.float().cpu())
        logits.append(out.float().cpu())
    if not targets:
        raise ValueError("no images to encode")
    return torch.cat(targets), torch.cat(logits)


@torch.no_grad()
def super_resolve(fer_model: torch.nn.Module, generator: FSRGenerator, target: str, lr_targets: torch.Tensor,
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


def fsr_features(fer_model: torch.nn.Module, fsr: FSRModel, images_uint8: np.ndarray, mean: list[float],
                 std: list[float] | None, device: torch.device | str = "cpu",
                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Super-resolved features of low-resolution faces.

    fer_model     the frozen FER model the FSR was trained on (`checkpoint.load_model(path)[0]`);
                  checked by its weights: another model is a ValueError naming the FSR file
    fsr           from `load_fsr(path, device)`
    images_uint8  (N, H, W, C) uint8 faces at the FER model's input size (e.g. `x4.npy` rows)
    mean, std     the FER model's normalisation (its meta's `mean`, `std`)

    Returns (features (N, D), logits (N, classes)), CPU float32: FER target of each face ->
    generator -> rest of the FER net -> embedding, and the FER head's logits on it.
    """
    check_fer_model(fsr, fer_model)
    trained = (fsr.meta["mean"], fsr.meta["std"])
    if not (_same_values(mean, trained[0]) and _same_values(std, trained[1])):
        raise ValueError(f"{fsr.path}: FSR trained with normalisation mean={trained[0]} std={trained[1]}, "
                         f"given mean={list(mean)} std={std}")
    device = torch.device(device)
    fsr.generator.to(device)
    lr_targets, _ = encode(fer_model, fsr.target, images_uint8, mean, std, device, batch_size)
    features, logits, _ = super_resolve(fer_model, fsr.generator, fsr.target, lr_targets, device, batch_size)
    return features, logits


def _same_values(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.shape(a) == np.shape(b) and bool(np.allclose(a, b))


# ---------------------------------------------------------------- training


def squared_distance(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample squared L2 distance, summed (FSR-FER) or averaged over the feature."""
    squared = (a - b).pow(2).flatten(1)
    return squared.sum(1) if reduction == "sum" else squared.mean(1)


def check_config(cfg: dict) -> None:
    if cfg["reduction"] not in REDUCTIONS:
        raise ValueError(f"fsr_train.reduction must be one of {REDUCTIONS}, got {cfg['reduction']!r}")
    if cfg["reweight_from"] not in ("hr", "sr"):
        raise ValueError(f"fsr_train.reweight_from must be hr or sr, got {cfg['reweight_from']!r}")
    for key in ("pretrain_epochs", "epochs", "critic_steps"):
        if int(cfg[key]) < 0:
            raise ValueError(f"fsr_train.{key} must be >= 0, got {cfg[key]}")
    if cfg["batch_size"] < 2:
        raise ValueError(f"fsr_train.batch_size must be >= 2, got {cfg['batch_size']}")
    for key in ("pretrain_betas", "betas"):
        if len(cfg[key]) != 2:
            raise ValueError(f"fsr_train.{key} must be two numbers, got {cfg[key]}")


class PairSampler:
    """Per epoch: shuffled train rows, a random training scale per row, optional flip of both.

    Yields (hr, lr, labels) uint8 NHWC / long batches on `device`; gathering is one index per
    scale present in the batch, never a loop over images."""

    def __init__(self, hr: np.ndarray, lr: list[np.ndarray], labels: np.ndarray, batch_size: int, flip: bool,
                 device: torch.device, seed: int):
        self.hr = torch.from_numpy(np.ascontiguousarray(hr))
        self.lr = [torch.from_numpy(np.ascontiguousarray(a)) for a in lr]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.batch_size, self.flip, self.device = min(batch_size, len(self.hr)), flip, device
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.hr) // self.batch_size

    def __iter__(self):
        n = len(self.hr)
        order = torch.randperm(n, generator=self.generator)
        scale = torch.randint(len(self.lr), (n,), generator=self.generator)
        flip = torch.rand(n, generator=self.generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start:start + self.batch_size]
            k, f = scale[start:start + self.batch_size], flip[start:start + self.batch_size]
            hr = self.hr[rows]
            lr = torch.empty_like(hr)
            for s in k.unique().tolist():
                lr[k == s] = self.lr[s][rows[k == s]]
            hr[f], lr[f] = hr[f].flip(2), lr[f].flip(2)
            yield hr.to(self.device), lr.to(self.device), self.labels[rows].to(self.device)


def fit_fsr(cfg: dict, data: str | os.PathLike, fer_model_path: str | os.PathLike, out: str | os.PathLike,
            report: str | os.PathLike, scales: list[str], live_dir: str | None = "dvclive/fsr_train") -> dict:
    """Train an FSR on the frozen FER model at `fer_model_path`; write `out` and `report`.

    `scales` are the downsample stage's (all are tested; `cfg["scales"]` picks the training ones)."""
    check_config(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # one GAN on one device: other torchrun ranks idle
        log.info("fsr-train runs on rank 0 only")
        return {}
    seed_everything(cfg["seed"])
    device = pick_device(cfg["device"])
    amp = bool(cfg["amp"])
    train_scales = list(cfg["scales"] or scales)
    if not train_scales:
        raise ValueError("fsr_train: no low-resolution scales to train on (downsample.scales is empty)")
    for scale in [*train_scales, *scales]:
        parse_scale(scale)
    val_scale = cfg["val_scale"] or train_scales[len(train_scales) // 2]

    fer, fer_meta = checkpoint.load_model(fer_model_path, device)
    fer.eval().requires_grad_(False)
    target = check_target(fer, cfg["target"])
    stats = shards.read_stats(data)
    classes = fer_meta["classes"]
    if list(stats["classes"]) != list(classes):
        raise ValueError(f"{data}: classes {stats['classes']} differ from FER model {fer_model_path}'s {classes}")
    norm = (fer_meta["mean"], fer_meta["std"])
    mean, std = stats_tensors(*norm, device)

    train_hr, train_y = shards.load_xy(data, "train")
    train_lr = [shards.load_xy(data, "train", s)[0] for s in train_scales]
    for s, a in zip(train_scales, train_lr):
        if a.shape != train_hr.shape:
            raise ValueError(f"{data}/train/{s}.npy has shape {a.shape}, hr.npy {train_hr.shape}: not row-aligned")
    val_hr, val_y = shards.load_xy(data, "val")
    val_lr, _ = shards.load_xy(data, "val", val_scale)

    def encoded(images):
        return encode(fer, target, images, *norm, device, cfg["eval_batch_size"], amp)

    val_hr_t, _ = encoded(val_hr)
    val_lr_t, val_lr_logits = encoded(val_lr)
    shape = list(val_hr_t.shape[1:])
    generator, critic = build_networks(cfg, target, shape)
    generator.to(device)
    critic.to(device)
    run_hash = checkpoint.params_hash("fsr_train", cfg, stats, fer_meta["params_hash"], train_scales, target)
    log.info("fsr-train: target %s %s, generator %d / critic %d parameters, scales %s", target, shape,
             parameter_count(generator), parameter_count(critic),
             train_scales)

    sampler = PairSampler(train_hr, train_lr, train_y, cfg["batch_size"], cfg["flip"], device, cfg["seed"] + 1)
    mix_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 2)
    n_classes = len(classes)
    val_lr_metrics = summarize(val_y, val_lr_logits.argmax(1).numpy(), n_classes)
    val_lr_mse = float(F.mse_loss(val_lr_t, val_hr_t))

    def pair_targets(hr_u8, lr_u8):
        with torch.no_grad(), autocast(device, amp):
            hr_t = target_features(fer, prepare(hr_u8, mean, std), target)
            hr_logits = fer.head(embedding_from_target(fer, hr_t, target))
            lr_t = target_features(fer, prepare(lr_u8, mean, std), target)
        return hr_t.float(), hr_logits.float(), lr_t.float()

    def validate() -> dict:
        _, logits, mse = super_resolve(fer, generator, target, val_lr_t, device, cfg["eval_batch_size"], val_hr_t)
        generator.train()
        val = summarize(val_y, logits.argmax(1).numpy(), n_classes)
        return {"val_accuracy": val["accuracy"], "val_average_accuracy": val["average_accuracy"],
                "val_feature_mse": round(mse, 6), "val_accuracy_lr": val_lr_metrics["accuracy"],
                "val_feature_mse_lr": round(val_lr_mse, 6)}

    def weigh(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not cfg["reweight"]:
            return torch.ones(len(labels), device=device)
        p_true = logits.float().softmax(1).gather(1, labels[:, None]).squeeze(1)
        return sample_weights(p_true, cfg["reweight_offset"])

    live = loop.open_live(live_dir)
    history: list[dict] = []
    clock = [time.perf_counter()]

    def record(row: dict) -> None:
        row = {"epoch": len(history) + 1, **row}
        history.append(row)
        now = time.perf_counter()
        log.info("fsr-train epoch %d (%.1f s): %s", row["epoch"], now - clock[0],
                 {k: v for k, v in row.items() if k != "epoch"})
        clock[0] = now
        loop.log_epoch(live, row)

    # Phase 1: MSE pre-training of the generator.
    generator.train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg["pretrain_lr"], betas=tuple(cfg["pretrain_betas"]))
    for _ in range(int(cfg["pretrain_epochs"])):
        total, seen = 0.0, 0
        for hr_u8, lr_u8, _ in sampler:
            hr_t, _, lr_t = pair_targets(hr_u8, lr_u8)
            loss = F.mse_loss(generator(lr_t), hr_t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(hr_t), seen + len(hr_t)
        record({"phase": 1, "pretrain_loss": round(total / max(seen, 1), 6), **validate()})

    # Phase 2: WGAN-div adversarial + weighted feature and classifier-output losses.
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg["critic_lr"] or cfg["lr"], betas=tuple(cfg["betas"]))
    reduction = cfg["reduction"]
    for _ in range(int(cfg["epochs"])):
        sums = dict.fromkeys(("g_loss", "d_loss", "adversarial_loss", "feature_loss", "classifier_loss",
                              "gradient_penalty", "weight"), 0.0)
        seen = 0
        for hr_u8, lr_u8, labels in sampler:
            hr_t, hr_logits, lr_t = pair_targets(hr_u8, lr_u8)
            weights = weigh(hr_logits, labels)

            d_loss = penalty = torch.zeros((), device=device)
            critic.requires_grad_(True)
            for _ in range(int(cfg["critic_steps"])):
                with torch.no_grad():
                    fake = generator(lr_t)
                    if cfg["reweight_from"] == "sr":
                        weights = weigh(fer.head(embedding_from_target(fer, fake, target)), labels)
                penalty = wgan_div_penalty(critic, hr_t, fake, cfg["div_k"], cfg["div_p"], mix_gen)
                d_loss = (weights * critic(fake)).mean() - (weights * critic(hr_t)).mean() + penalty
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            critic.requires_grad_(False)

            sr = generator(lr_t)
            sr_logits = fer.head(embedding_from_target(fer, sr, target))
            if cfg["reweight_from"] == "sr":
                weights = weigh(sr_logits.detach(), labels)
            adversarial = -(weights * critic(sr)).mean() if cfg["adversarial_weight"] else torch.zeros((), device=device)
            feature = (weights * squared_distance(sr, hr_t, reduction)).mean()
            classifier = (weights * squared_distance(sr_logits, hr_logits, reduction)).mean()
            g_loss = (cfg["adversarial_weight"] * adversarial + cfg["feature_weight"] * feature
                      + cfg["classifier_weight"] * classifier)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()

            n = len(labels)
            for key, value in (("g_loss", g_loss), ("d_loss", d_loss), ("adversarial_loss", adversarial),
                               ("feature_loss", feature), ("classifier_loss", classifier),
                               ("gradient_penalty", penalty), ("weight", weights.mean())):
                sums[key] += float(value.detach()) * n
            seen += n
        record({"phase": 2, **{k: round(v / max(seen, 1), 6) for k, v in sums.items()}, **validate()})
    critic.requires_grad_(True)
    if live is not None:
        live.end()

    meta = {"stage": "fsr_train", "target": target, "shape": shape,
            "config": {k: cfg[k] for k in ("blocks", "channels", "growth", "dense_layers", "residual_scale",
                                           "critic_channels", "critic_hidden")},
            "blocks": cfg["blocks"], "channels": cfg["channels"],
            "fer_model": str(fer_model_path), "fer_params_hash": fer_meta["params_hash"],
            "fer_fingerprint": fer_fingerprint(fer), "fer_arch": fer_meta["arch"], "classes": classes,
            "mean": norm[0], "std": norm[1], "train_scales": train_scales, "params_hash": run_hash,
            "seed": cfg["seed"], "versions": checkpoint.versions()}
    checkpoint.save(out, {"generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
                          "critic": {k: v.detach().cpu() for k, v in critic.state_dict().items()},
                          "meta": meta})

    test = {}
    for scale in ["hr", *scales]:
        images, labels = shards.load_xy(data, "test", scale)
        if scale == "hr":
            hr_t, logits = encoded(images)
            test["hr"] = summarize(labels, logits.argmax(1).numpy(), n_classes)
            continue
        lr_t, lr_logits = encoded(images)
        _, sr_logits, sr_mse = super_resolve(fer, generator, target, lr_t, device, cfg["eval_batch_size"], hr_t)
        test[scale] = {"lr": summarize(labels, lr_logits.argmax(1).numpy(), n_classes),
                       "sr": summarize(labels, sr_logits.argmax(1).numpy(), n_classes),
                       "feature_mse_lr": round(float(F.mse_loss(lr_t, hr_t)), 6),
                       "feature_mse_sr": round(sr_mse, 6)}
    result = {"target": target, "val_scale": val_scale, "train_scales": train_scales,
              "val": history[-1] if history else {}, "test": test, "fer_model": str(fer_model_path),
              "fer_params_hash": fer_meta["params_hash"], "params_hash": run_hash, "seed": cfg["seed"]}
    write_json(report, result)
    log.info("fsr test accuracy per scale (lr -> sr): %s",
             {s: (m["lr"]["accuracy"], m["sr"]["accuracy"]) for s, m in test.items() if s != "hr"})
    return result
