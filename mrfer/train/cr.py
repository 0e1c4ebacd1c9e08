"""cr-pretrain: MAFER's step 1, cross-resolution training on the face-recognition data
(fvmassoli/cross-resolution-face-recognition: trainer.py, vggface2_custom_dataset.py, main.py).

Student and frozen teacher both start from the face model. Image i of the run (counted from 1)
is degraded with probability p_i = min(p_max, p_start + p_step * floor(i / p_every)) (the
curriculum: 0.1, growing by 0.1 every 35,000 images in the paper); a degraded image is resized so
its short side is a resolution drawn uniformly from `resolutions` (2^k, k in 3..7: 8..128 px, the
code's `2 ** int(3 + 5 * rand)`), with PIL bilinear, then back up; a draw at or above the face's
size leaves it unchanged, as the code does. Loss = cross-entropy on the identity of the student's
logits on the (maybe) degraded face + lambda * MSE(student's pooled features of it, teacher's
pooled features of the full-resolution face), lambda 0.1. Validation: the val faces at
`val_resolution` px (the code's 8), which drives the plateau scheduler and the kept epoch; its
loss is the training loss's: cross-entropy + lambda * MSE(student features of the 8 px face,
teacher features of the full-resolution face) (trainer.py:39-42, 116).

Differences from the code, by design: the two images are augmented identically (the code crops
the degraded copy and the teacher's copy independently), and images are counted over the whole
run (the code counts per data-loader worker, so with 8 workers its p grows 8x slower).
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from mrfer.data import lineage, shards
from mrfer.data.degrade import degrade, degrade_mixed
from mrfer.data.scales import KERNELS
from mrfer.infer import infer, pick_device, seed_everything
from mrfer.io import write_json
from mrfer.nets import checkpoint
from mrfer.train import losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import augment, normalize, stats_tensors

log = logging.getLogger(__name__)


class CrPretrainParams(loop.TrainParams):
    """`cr_pretrain`: MAFER step 1 (cross-resolution) on the identity data."""

    seed: int
    epochs: int = Field(gt=0)
    lambda_: float = Field(alias="lambda", ge=0, description="weight of the feature MSE to the teacher (MAFER: 0.1)")
    p_start: float = Field(ge=0, le=1, description="degradation probability at the start (MAFER: 0.1)")
    p_step: float = Field(ge=0, le=1, description="added every p_every images (MAFER: 0.1)")
    p_every: int = Field(gt=0, description="images per curriculum step (MAFER: 35000)")
    p_max: float = Field(ge=0, le=1, description="the cap of p (MAFER: 1.0)")
    resolutions: list[int] = Field(min_length=1, description="short sides drawn uniformly, px (MAFER: 8 16 32 64 128)")
    kernel: Literal[KERNELS] = Field(description="resize kernel down and back up (MAFER: bilinear, PIL's)")
    val_resolution: int = Field(gt=0, description="short side of the validation faces, px (MAFER: 8)")


def curriculum_p(image_index: np.ndarray, p_start: float, p_step: float, p_every: int, p_max: float) -> np.ndarray:
    """p of the images numbered `image_index` (1-based, over the whole run)."""
    return np.minimum(p_max, p_start + p_step * (np.asarray(image_index) // p_every))


class ResolutionDraw:
    """Per image: None (kept) or '<n>px', drawn as MAFER's step-1 dataset draws it. Counts images
    across calls; the count is reset from the epoch, so a resumed run draws the same."""

    def __init__(self, cfg: CrPretrainParams, images_per_epoch: int, face_side: int, gen: torch.Generator):
        self.cfg, self.images_per_epoch, self.face_side, self.gen = cfg, images_per_epoch, face_side, gen
        self.epoch, self.seen = -1, 0

    def __call__(self, n: int, epoch: int) -> list[str | None]:
        if epoch != self.epoch:
            self.epoch, self.seen = epoch, epoch * self.images_per_epoch
        cfg = self.cfg
        p = curriculum_p(self.seen + np.arange(1, n + 1), cfg.p_start, cfg.p_step, cfg.p_every, cfg.p_max)
        self.seen += n
        u = torch.rand(n, 2, generator=self.gen).numpy()
        picks = [cfg.resolutions[int(len(cfg.resolutions) * v)] for v in u[:, 1]]
        return [f"{r}px" if d < pi and r < self.face_side else None for d, pi, r in zip(u[:, 0], p, picks)]


def cr_step(net, xb: torch.Tensor, yb: torch.Tensor, epoch: int, *, teacher: torch.nn.Module, mean: torch.Tensor,
            std: torch.Tensor, augment_cfg, augment_gen: torch.Generator, draw: ResolutionDraw, kernel: str,
            weight: float, class_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1's `loss_fn`: augment, degrade each face as drawn, then the cross-resolution loss."""
    x_hr = augment(xb, augment_cfg, augment_gen)
    x_lr = degrade_mixed(x_hr, draw(len(xb), epoch), kernel)
    return losses.cross_resolution_loss(net, teacher, normalize(x_hr, mean, std), normalize(x_lr, mean, std),
                                        yb, weight, class_weight)


def fit_cr(cfg: CrPretrainParams, data: str | os.PathLike, face: str | os.PathLike, out: str | os.PathLike,
           report: str | os.PathLike, live_dir: str | None, resume: str | os.PathLike | None) -> dict:
    seed_everything(cfg.seed)
    rank, world, local_rank = loop.distributed()
    device = pick_device(cfg.device, local_rank)
    student, meta = checkpoint.load_model(face, device, cfg.channels_last)
    teacher, _ = checkpoint.load_model(face, device, cfg.channels_last)
    teacher.eval().requires_grad_(False)
    stats = shards.read_stats(data)
    if stats["classes"] != meta["classes"]:
        raise ValueError(f"{face} was trained on other identities than {data}")
    norm = (meta["mean"], meta["std"])   # the face model's own input normalisation
    mean, std = stats_tensors(*norm, device)
    train_x, train_y = shards.open_xy(data, "train")   # memory-mapped: streamed when over the budget
    val_x, val_y = shards.load_xy(data, "val")
    val_target = infer(teacher, val_x, *norm, device=device, what="features", amp=cfg.amp)   # of the HR faces
    val_x = degrade(np.ascontiguousarray(val_x), f"{cfg.val_resolution}px", cfg.kernel)
    loader = ArrayLoader(train_x, train_y, cfg.batch_size, device, seed=cfg.seed, rank=rank, world_size=world,
                         on_device=cfg.on_device)
    augment_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    draw_gen = torch.Generator().manual_seed(cfg.seed + 2)
    draw = ResolutionDraw(cfg, len(loader) * cfg.batch_size * world, stats["size"][0], draw_gen)
    class_weight = loop.class_weights(train_y, len(meta["classes"])).to(device) if cfg.class_weighted else None
    run_hash = checkpoint.params_hash("cr_pretrain", cfg.model_dump(by_alias=True), stats, meta["params_hash"], world)
    loss_fn = functools.partial(cr_step, teacher=teacher, mean=mean, std=std, augment_cfg=cfg.augment,
                                augment_gen=augment_gen, draw=draw, kernel=cfg.kernel, weight=cfg.lambda_,
                                class_weight=class_weight)
    identities = loop.Data((train_x, train_y), (val_x, val_y), norm, len(meta["classes"]), (val_target, cfg.lambda_))
    run = loop.Run(cfg.seed, "cr-pretrain", run_hash, resume, live_dir, rank, world)
    history = loop.fit(student, loader, identities, cfg, run, epochs=cfg.epochs, loss_fn=loss_fn,
                       generators={"augment": augment_gen, "draw": draw_gen})
    if rank != 0:
        return {}
    seen = lineage.merge(lineage.from_meta(meta, face), lineage.assembled(data, ["train", "val"]))
    new_meta = {**{k: v for k, v in meta.items() if k != "versions"}, "params_hash": run_hash,
                "stage": "cr_pretrain", "face_params_hash": meta["params_hash"], "kernel": cfg.kernel,
                "lineage": lineage.to_meta(seen)}
    checkpoint.save_model(out, student, new_meta)
    images = cfg.epochs * draw.images_per_epoch
    result = {"val_at_resolution": cfg.val_resolution, "val": history[-1] if history else {},
              "epochs_run": len(history), "images_seen": images,
              "p_final": float(curriculum_p(images, cfg.p_start, cfg.p_step, cfg.p_every, cfg.p_max)),
              "params_hash": run_hash, "seed": cfg.seed}
    write_json(report, result)
    log.info("cr model: val identification accuracy at %d px %s", cfg.val_resolution, result["val"].get("val_accuracy"))
    return result
