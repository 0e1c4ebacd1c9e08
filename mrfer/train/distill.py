"""distill: our cross-resolution recipe, a variant of MAFER's (mrfer.train.cr + multires), not it.

Where MAFER distils on face-recognition data from the face model and then fine-tunes on FER at
full resolution, distill works on the FER data alone, from the FER base model:
Step 1 (cross-resolution distillation): a student initialised from the base model sees each
training face, with probability p, degraded on the device to a random lower resolution; the loss
is cross-entropy on the expression + lambda * MSE(student features of the degraded face, the
frozen base teacher's features of the same face at full resolution).
Step 2: fine-tune on the labels, the multi-resolution augmentation kept.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from mrfer.data import lineage, shards
from mrfer.data.degrade import degrade_mixed
from mrfer.data.scales import KERNELS, Scale
from mrfer.infer import pick_device, seed_everything, test_at_scales
from mrfer.io import write_json
from mrfer.nets import checkpoint
from mrfer.train import losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import augment, normalize, random_scales, stats_tensors

log = logging.getLogger(__name__)



class DistillParams(loop.TrainParams):
    """`distill`: cross-resolution distillation from the frozen FER base on the FER data, then the
    fine-tune with multi-resolution augmentation kept."""

    seed: int
    step1_epochs: int = Field(ge=0, description="cross-resolution step (teacher = the frozen base)")
    step2_epochs: int = Field(ge=0, description="fine-tune on the labels, degraded faces kept")
    step2_lr: float | None = Field(gt=0, description="step 2 backbone learning rate (null: lr)")
    step2_head_lr: float | None = Field(gt=0, description="step 2 head learning rate (null: head_lr)")
    scales: list[Scale] | None = Field(min_length=1, description="scales drawn for degraded faces (null: downsample.scales)")
    kernel: Literal[KERNELS] | None = Field(description="degradation kernel (null: downsample.kernel)")
    p: float = Field(ge=0, le=1, description="probability that a training face is degraded")
    p_end: float | None = Field(ge=0, le=1, description="grow p linearly to this over each step (null: constant)")
    lambda_: float = Field(alias="lambda", ge=0, description="weight of the feature MSE to the teacher")


class FoldDistillParams(DistillParams):
    """`kfold_test.train.distill`: the distill section, with the keys set here overriding it."""

    inherits = ("loop", "distill")


def probability(epoch: int, p: float, p_end: float | None, epochs: int) -> float:
    """p, optionally growing linearly to p_end over the step's epochs."""
    if p_end is None or epochs <= 1:
        return float(p)
    return float(p + (p_end - p) * epoch / (epochs - 1))


def random_degrade(x: torch.Tensor, epoch: int, *, scales: list[str], p, gen: torch.Generator,
                   kernel: str) -> torch.Tensor:
    """Each face of the float batch degraded, with probability p(epoch), to a scale drawn from `scales`."""
    return degrade_mixed(x, random_scales(len(x), scales, p(epoch), gen), kernel)


def cross_resolution_step(net, xb: torch.Tensor, yb: torch.Tensor, epoch: int, *, teacher: torch.nn.Module,
                          mean: torch.Tensor, std: torch.Tensor, augment_cfg, augment_gen: torch.Generator,
                          lowres: losses.LowRes, weight: float,
                          class_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1's `loss_fn`: augment, degrade some faces (`lowres`), then `cross_resolution_loss`."""
    x_hr = augment(xb, augment_cfg, augment_gen)
    x_lr = lowres(x_hr, epoch)
    return losses.cross_resolution_loss(net, teacher, normalize(x_hr, mean, std), normalize(x_lr, mean, std),
                                 yb, weight, class_weight)


def validation_set(data: str | os.PathLike, scales: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Val rows at every resolution at once, so early stopping / best-epoch restore pick the model
    that is best across resolutions, not the one that is best at full resolution only."""
    val_sets = [shards.load_xy(data, "val", s) for s in ["hr", *scales]]
    return np.concatenate([x for x, _ in val_sets]), np.concatenate([y for _, y in val_sets])


def distill_steps(cfg: DistillParams, student: torch.nn.Module, teacher: torch.nn.Module, data: loop.Data,
                  run: loop.Run, train_scales: list[str], kernel: str) -> dict[str, list[dict]]:
    """Steps 1 and 2 on `student` in place (the frozen `teacher` is the base model); the history.
    `run.resume` is a folder: each step resumes from its own checkpoint in it."""
    device = next(student.parameters()).device
    mean, std = stats_tensors(*data.norm, device)
    augment_gen = torch.Generator(device=device).manual_seed(run.seed + 1)
    scale_gen = torch.Generator().manual_seed(run.seed + 2)
    class_weight = loop.class_weights(data.train[1], data.n_classes).to(device) if cfg.class_weighted else None
    history = {}
    for step, epochs, lr, head_lr in ((1, cfg.step1_epochs, cfg.lr, cfg.head_lr),
                                      (2, cfg.step2_epochs, cfg.step2_lr or cfg.lr, cfg.step2_head_lr or cfg.head_lr)):
        if epochs <= 0:   # a skipped step still leaves its (empty) curves, a stage output
            if run.live_dir and run.rank == 0:
                loop.close_live(loop.open_live(f"{run.live_dir}/step{step}"), f"{run.live_dir}/step{step}")
            continue
        p = functools.partial(probability, p=cfg.p, p_end=cfg.p_end, epochs=epochs)
        lowres = functools.partial(random_degrade, scales=train_scales, p=p, gen=scale_gen, kernel=kernel)
        if step == 1:
            loss_fn = functools.partial(cross_resolution_step, teacher=teacher, mean=mean, std=std,
                                        augment_cfg=cfg.augment, augment_gen=augment_gen, lowres=lowres,
                                        weight=cfg.lambda_, class_weight=class_weight)
        else:  # labels only, multi-resolution augmentation kept
            loss_fn = losses.ce_loss(mean, std, cfg.augment, augment_gen, weight=class_weight, lowres=lowres)
        loader = ArrayLoader(*data.train, cfg.batch_size, device, seed=run.seed + step, rank=run.rank,
                             world_size=run.world, on_device=cfg.on_device)
        step_run = dataclasses.replace(
            run, desc=f"{run.desc} step {step}", run_hash=f"{run.run_hash}-step{step}",
            resume=f"{run.resume}/distill_step{step}.pt" if run.resume else None,
            live_dir=f"{run.live_dir}/step{step}" if run.live_dir else None)
        history[f"step{step}"] = loop.fit(student, loader, data, cfg, step_run, epochs=epochs, loss_fn=loss_fn,
                                          lr=lr, head_lr=head_lr, generators={"augment": augment_gen, "scales": scale_gen})
    return history


def fit_distill(cfg: DistillParams, data: str | os.PathLike, base: str | os.PathLike,
                out: str | os.PathLike, report: str | os.PathLike, scales: list[str], kernel: str,
                live_dir: str | None, resume_dir: str | os.PathLike | None) -> dict:
    seed_everything(cfg.seed)
    rank, world, local_rank = loop.distributed()
    device = pick_device(cfg.device, local_rank)
    train_scales = list(cfg.scales or scales)
    kernel = cfg.kernel or kernel
    student, meta = checkpoint.load_model(base, device, cfg.channels_last)
    ancestry = lineage.from_meta(meta, base)
    lineage.check_start(ancestry, lineage.split_hashes(data, "test"), base, f"{data}'s test split")
    teacher, _ = checkpoint.load_model(base, device, cfg.channels_last)
    teacher.eval().requires_grad_(False)
    stats = shards.read_stats(data)
    norm = (meta["mean"], meta["std"])  # the base model's own normalisation, not re-derived
    classes = meta["classes"]
    run_hash = checkpoint.params_hash("distill", cfg.model_dump(by_alias=True), stats,
                                      meta["params_hash"], train_scales, kernel, world)
    fer = loop.Data(shards.open_xy(data, "train"), validation_set(data, scales), norm, len(classes))
    run = loop.Run(cfg.seed, "distill", run_hash, resume_dir, live_dir, rank, world)
    history = distill_steps(cfg, student, teacher, fer, run, train_scales, kernel)
    if rank != 0:
        return {}
    new_meta = {**{k: v for k, v in meta.items() if k != "versions"}, "params_hash": run_hash,
                "stage": "distill", "base_params_hash": meta["params_hash"],
                "train_scales": train_scales, "kernel": kernel,
                "lineage": lineage.to_meta(lineage.merge(ancestry, lineage.assembled(data, ["train", "val"])))}
    checkpoint.save_model(out, student, new_meta)
    result = {"val": {k: v[-1] for k, v in history.items() if v},
              "test": test_at_scales(student, data, scales, norm, device, classes, "distill"),
              "params_hash": run_hash, "seed": cfg.seed}
    write_json(report, result)
    log.info("distill test accuracy per scale: %s", {s: m["accuracy"] for s, m in result["test"].items()})
    return result
