"""multires-finetune: MAFER's step 2 from the cross-resolution model (models/cr.pt, MAFER's "CR"
row): its backbone with a fresh expression head, fine-tuned exactly as pretrain-base fine-tunes
the face model (mrfer.train.base.fit_fer), at full resolution only.
"""
from __future__ import annotations

import os

import torch
from pydantic import Field

from mrfer.data import lineage, shards
from mrfer.infer import pick_device, seed_everything
from mrfer.nets import checkpoint
from mrfer.train import loop
from mrfer.train.base import FerFinetuneParams, Outputs, check_input, fit_fer


class MultiresFinetuneParams(FerFinetuneParams):
    """`multires_finetune`: MAFER step 2, from models/cr.pt (the architecture is the CR model's)."""

    bn_momentum: float | None = Field(
        ge=0, le=1, description="null: the CR model's own batch-norm momentum | a value set on every batch norm "
                                "before the fine-tune (MAFER's CR row: 0.1, which step 2's models.py sets when it "
                                "loads a step-1 checkpoint)")


def fit_multires(cfg: MultiresFinetuneParams, data: str | os.PathLike, cr: str | os.PathLike,
                 out: str | os.PathLike, report: str | os.PathLike, scales: list[str], live_dir: str | None,
                 resume: str | os.PathLike | None) -> dict:
    seed_everything(cfg.seed)
    _, _, local_rank = loop.distributed()
    device = pick_device(cfg.device, local_rank)
    stats = shards.read_stats(data)
    model, meta = checkpoint.load_backbone(cr, len(stats["classes"]), device, cfg.channels_last)
    check_input(meta, stats, cr)
    if cfg.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg.bn_momentum
    start = f"{cr} (cr_pretrain, hash {meta['params_hash']})"
    return fit_fer(cfg, model, start, lineage.from_meta(meta, cr), data, scales, Outputs(out, report, live_dir, resume), "multires_finetune",
                   {"arch": meta["arch"], "options": meta.get("options", {}), "cr_params_hash": meta["params_hash"]})
