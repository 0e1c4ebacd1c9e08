"""multires-finetune recipe: MAFER's two steps, starting from the base model.

Step 1 (cross-resolution): a student initialised from the base model sees each training face,
with probability p, degraded on the device to a random lower resolution; the loss is
cross-entropy + lambda * MSE(student features of the degraded face, frozen base teacher's
features of the same face at full resolution).
Step 2: fine-tune on the labels alone, the multi-resolution augmentation kept.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

from mrfer.data.degrade import KERNELS, degrade_mixed, parse_scale
from mrfer.data import shards
from mrfer.infer import pick_device, seed_everything, test_at_scales
from mrfer.io import write_json
from mrfer.nets import checkpoint
from mrfer.train import losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import AUGMENT_DEFAULTS, augment, check_augment, normalize, random_scales, stats_tensors

log = logging.getLogger(__name__)

DEFAULTS = {**loop.OPTIM_DEFAULTS, "step1_epochs": 10, "step2_epochs": 5, "step2_lr": None,
            "step2_head_lr": None, "scales": None, "kernel": None, "p": 0.5, "p_end": None,
            "lambda": 1.0, "augment": AUGMENT_DEFAULTS, "on_device": "auto"}


def probability(cfg: dict, epoch: int, epochs: int) -> float:
    """p, optionally growing linearly to p_end over the step's epochs."""
    if cfg["p_end"] is None or epochs <= 1:
        return float(cfg["p"])
    return float(cfg["p"] + (cfg["p_end"] - cfg["p"]) * epoch / (epochs - 1))


def cross_resolution_loss(student_net, teacher: torch.nn.Module, x_hr: torch.Tensor, x_lr: torch.Tensor,
                          labels: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(student(x_lr)) + weight * MSE(student features(x_lr), teacher features(x_hr)).

    `x_hr`/`x_lr` are normalised inputs; the teacher is frozen, so only the student learns."""
    with torch.no_grad():
        target = teacher.features(x_hr)
    logits, features = student_net(x_lr)
    loss = F.cross_entropy(logits, labels) + weight * F.mse_loss(features.float(), target.float())
    return loss, logits


def fit_multires(cfg: dict, data: str | os.PathLike, base: str | os.PathLike, out: str | os.PathLike,
                 report: str | os.PathLike, scales: list[str], kernel: str,
                 live_dir: str | None = "dvclive/multires_finetune",
                 resume_dir: str | os.PathLike | None = "models/resume") -> dict:
    seed_everything(cfg["seed"])
    rank, world, local_rank = loop.distributed()
    device = pick_device(cfg["device"], local_rank)
    train_scales = list(cfg["scales"] or scales)
    for scale in train_scales:
        parse_scale(scale)
    kernel = cfg["kernel"] or kernel
    if kernel not in KERNELS:
        raise ValueError(f"multires_finetune.kernel must be one of {KERNELS}, got {kernel!r}")

    student, meta = checkpoint.load_model(base, device, cfg["channels_last"])
    teacher, _ = checkpoint.load_model(base, device, cfg["channels_last"])
    teacher.eval().requires_grad_(False)
    stats = shards.read_stats(data)
    norm = (meta["mean"], meta["std"])  # the base model's own normalisation, not re-derived
    classes = meta["classes"]
    aug_cfg = check_augment(cfg)
    train_x, train_y = shards.load_xy(data, "train")
    # Validate on every resolution at once, so early stopping / best-epoch restore pick the
    # model that is best across resolutions, not the one that is best at full resolution only.
    val_sets = [shards.load_xy(data, "val", s) for s in ["hr", *scales]]
    val_x, val_y = np.concatenate([x for x, _ in val_sets]), np.concatenate([y for _, y in val_sets])
    mean, std = stats_tensors(*norm, device)
    augment_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 1)
    scale_gen = torch.Generator().manual_seed(cfg["seed"] + 2)
    run_hash = checkpoint.params_hash("multires_finetune", cfg, stats, meta["params_hash"], train_scales, kernel, world)

    def make_loss(step: int, epochs: int):
        def p(epoch: int) -> float:
            return probability(cfg, epoch, epochs)

        if step == 2:  # labels only, multi-resolution augmentation kept
            return losses.ce_loss(mean, std, aug_cfg, augment_gen, scales=train_scales, p=p,
                                  scale_gen=scale_gen, kernel=kernel)

        def loss_fn(net, xb, yb, epoch):
            x_hr = augment(xb, aug_cfg, augment_gen)
            x_lr = degrade_mixed(x_hr, random_scales(len(xb), train_scales, p(epoch), scale_gen), kernel)
            return cross_resolution_loss(net, teacher, normalize(x_hr, mean, std), normalize(x_lr, mean, std),
                                         yb, cfg["lambda"])
        return loss_fn

    history = {}
    for step, epochs, lr, head_lr in ((1, cfg["step1_epochs"], cfg["lr"], cfg["head_lr"]),
                                      (2, cfg["step2_epochs"], cfg["step2_lr"] or cfg["lr"],
                                       cfg["step2_head_lr"] or cfg["head_lr"])):
        if epochs <= 0:
            continue
        step_cfg = {**cfg, "epochs": epochs, "lr": lr, "head_lr": head_lr}
        loader = ArrayLoader(train_x, train_y, cfg["batch_size"], device, seed=cfg["seed"] + step,
                             rank=rank, world_size=world, on_device=cfg["on_device"])
        history[f"step{step}"] = loop.fit(
            student, loader, val_x, val_y, step_cfg, loss_fn=make_loss(step, epochs), norm=norm,
            generators={"augment": augment_gen, "scales": scale_gen}, run_hash=f"{run_hash}-step{step}",
            resume_path=f"{resume_dir}/multires_step{step}.pt" if resume_dir else None,
            live_dir=f"{live_dir}/step{step}" if live_dir else None, n_classes=len(classes),
            rank=rank, world_size=world, desc=f"multires step {step}")
    if rank != 0:
        return {}
    new_meta = {**{k: v for k, v in meta.items() if k != "versions"}, "params_hash": run_hash,
                "stage": "multires_finetune", "base_params_hash": meta["params_hash"],
                "train_scales": train_scales, "kernel": kernel}
    checkpoint.save_model(out, student, new_meta)
    result = {"val": {k: v[-1] for k, v in history.items() if v},
              "test": test_at_scales(student, data, scales, norm, device, len(classes)),
              "params_hash": run_hash, "seed": cfg["seed"]}
    write_json(report, result)
    log.info("multires test accuracy per scale: %s", {s: m["accuracy"] for s, m in result["test"].items()})
    return result
