"""MAFER's step 2, the FER fine-tune, and the model it starts from.

`pretrain-base` fine-tunes the face-recognition model (models/face.pt: MAFER's "base" row), or a
model trained from scratch, an imported file, or any mrfer model file (transfer from another FER
dataset); `multires-finetune` fine-tunes the cross-resolution model (models/cr.pt: MAFER's "CR"
row) the same way. MAFER's step 2 has no low-resolution augmentation: the model only sees full
resolution faces here. `finetune` is the one training call every fine-tune shares (k-fold too).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from mrfer.config import Section
from mrfer.data import lineage, shards
from mrfer.errors import InputError
from mrfer.infer import pick_device, seed_everything, test_at_scales
from mrfer.io import write_json
from mrfer.nets import build, checkpoint, registry, to_device
from mrfer.nets.weights import KINDS, import_weights
from mrfer.train import losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import EvalView, norm_stats, stats_tensors

log = logging.getLogger(__name__)

STARTS = ("face", "scratch", "imported")
MODEL_NAMES = {"pretrain_base": "base", "multires_finetune": "multires"}   # stage -> the model it trains


class Weights(Section):
    kind: Literal[KINDS] = Field(description="the weight file's layout: " + " | ".join(KINDS))
    path: str = Field(min_length=1, description="a local file (models/imported/...); nothing is downloaded")


class CenterLossParams(Section):
    """The centre loss on the embedding (CovPoolFER's train.sh: --center_loss_factor 1e-2)."""

    weight: float = Field(ge=0, description="its weight beside the cross-entropy (0: off; CovPoolFER: 0.01)")
    update: Literal["optimizer", "moving"] = Field(
        description="optimizer: the optimiser moves the centres (what CovPoolFER's code does) | moving: "
                    "c_y -= (1 - alpha)(c_y - f) each batch (the centre-loss paper's rule)")
    alpha: float = Field(gt=0, lt=1, description="update: moving's rate (CovPoolFER's --center_loss_alfa 0.9)")

    def unused(self) -> set[str]:
        return {"update", "alpha"} if self.__dict__["weight"] == 0 else set()


class FinetuneDefaults(Section):
    """`finetune`: what every fine-tune on labels at full resolution takes besides `loop`."""

    normalize: Literal["mean", "mean_std"] = Field(description="mean: centre only (MAFER) | mean_std")
    mean: list[float] | None = Field(description="a published dataset mean (0..255 per channel); null: measured")
    std: list[float] | None = Field(description="a published std; null: measured")
    center_loss: CenterLossParams


class FinetuneParams(loop.TrainParams, FinetuneDefaults):
    """A fine-tune on the labels at full resolution (MAFER step 2: Adam, backbone 1e-4, head 1e-2,
    weight decay 1e-4, class-weighted cross-entropy, plateau on val accuracy, mean-centred input)."""

    inherits = ("loop", "finetune")

    epochs: int = Field(ge=0)


class FerFinetuneParams(FinetuneParams):
    """A fine-tune on the assembled FER data, which has a test split to (not) select on."""

    seed: int
    select_on: Literal["val", "test"] = Field(
        description="the split that picks the best epoch: val | test (only to reproduce a published figure "
                    "that did so: it inflates the test accuracy)")
    test_view: EvalView | None = Field(
        description="{resize, size, crops}: validate and test on a centre crop (crops 1) or the mean of ten "
                    "crops (10) of the face seen at `resize`, kept in the model file (null: the whole face)")


class StartParams(Section):
    """Where a trained-from-labels model starts (pretrain-base, face-pretrain)."""

    init: str = Field(description="face (the --init model: models/face.pt) | scratch | imported (`weights`) | "
                                  "the path of any mrfer model file (transfer)")
    arch: str = Field(description="a registered model: " + " | ".join(registry.available()))
    arch_options: dict[str, Any] = Field(description="the model's own options (its builder's keyword arguments)")
    weights: Weights | None = Field(description="imported start weights (init: imported), else null")

    @field_validator("init")
    @classmethod
    def _known_start(cls, init: str) -> str:
        if init not in STARTS and not init.endswith(".pt"):
            raise ValueError(f"must be one of {', '.join(STARTS)} or an mrfer model file (*.pt)")
        return init

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        registry.check_options(arch, {})
        return arch

    @field_validator("arch_options")
    @classmethod
    def _arch_takes_options(cls, options: dict, info: ValidationInfo) -> dict:
        if "arch" in info.data:
            registry.check_options(info.data["arch"], options)
        return options

    @field_validator("weights")
    @classmethod
    def _weights_with_imported(cls, weights: Weights | None, info: ValidationInfo) -> Weights | None:
        if (weights is None) == (info.data.get("init") == "imported"):
            raise ValueError("set exactly when init is 'imported'")
        return weights


class PretrainBaseParams(FerFinetuneParams, StartParams):
    """`pretrain_base`: MAFER step 2 from the face model (or another start)."""


def start_model(cfg: StartParams, init_file: str | os.PathLike | None, n_classes: int, stats: dict,
                device: torch.device, channels_last: bool) -> tuple[torch.nn.Module, str, dict]:
    """The model a fine-tune starts from, a description of that start for the report, and its
    lineage (imported weights: trained on faces nobody can list here, recorded by file)."""
    arch, options, weights = cfg.arch, dict(cfg.arch_options), cfg.weights   # null unless init: imported
    if cfg.init in ("scratch", "imported"):
        model = build(arch, num_classes=n_classes, in_chans=stats["channels"], image_size=stats["size"][0], **options)
        ancestry = lineage.empty()
        if cfg.init == "imported":
            import_weights(model, weights.kind, weights.path)
            ancestry["datasets"] = [{"name": f"imported {weights.kind} weights ({weights.path})", "content": "",
                                     "faces": 0}]
        return to_device(model, device, channels_last), cfg.init, ancestry
    path = init_file if cfg.init == "face" else cfg.init
    model, meta = checkpoint.load_backbone(path, n_classes, device, channels_last)
    if (meta["arch"], meta.get("options", {})) != (arch, options):
        raise InputError(f"{path} is a {meta['arch']} {meta.get('options', {})}, but params ask for "
                         f"arch {arch} {options}: make them agree")
    check_input(meta, stats, path)
    return model, f"{path} ({meta.get('stage', '?')}, hash {meta.get('params_hash', '?')})", lineage.from_meta(meta, path)


def check_input(meta: dict, stats: dict, path: str | os.PathLike) -> None:
    """Refuse a start model whose input size or channels differ from the data's."""
    if (meta["size"], meta["channels"]) != (stats["size"][0], stats["channels"]):
        raise InputError(f"{path} takes {meta['size']} px x {meta['channels']} channels, the data is "
                         f"{stats['size'][0]} px x {stats['channels']}: extract at the model's size")


def finetune(model: torch.nn.Module, cfg: FinetuneParams, data: loop.Data, run: loop.Run) -> list[dict]:
    """Train `model` in place on `data.train` with cross-entropy (class-weighted when asked) and
    on-device augmentation; the best `data.val` epoch is restored when `restore_best`."""
    device = next(model.parameters()).device
    mean, std = stats_tensors(*data.norm, device)
    augment_gen = torch.Generator(device=device).manual_seed(run.seed + 1)
    weight = loop.class_weights(data.train[1], data.n_classes).to(device) if cfg.class_weighted else None
    center = center_loss(cfg.center_loss, data.n_classes, model.embedding_dim, device)
    loss_fn = losses.ce_loss(mean, std, cfg.augment, augment_gen, weight=weight, center=center,
                             center_weight=cfg.center_loss.weight)
    loader = ArrayLoader(*data.train, cfg.batch_size, device, seed=run.seed, rank=run.rank, world_size=run.world,
                         on_device=cfg.on_device)
    return loop.fit(model, loader, data, cfg, run, epochs=cfg.epochs, loss_fn=loss_fn,
                    generators={"augment": augment_gen}, aux=center)


def center_loss(cfg: CenterLossParams, n_classes: int, dim: int, device: torch.device) -> losses.CenterLoss | None:
    """The centre-loss module (centres trained beside the model), or None when its weight is 0."""
    if cfg.weight == 0:
        return None
    return losses.CenterLoss(n_classes, dim, update=cfg.update, alpha=cfg.alpha).to(device)


def selection_split(cfg: FerFinetuneParams, desc: str) -> str:
    if cfg.select_on == "test":
        log.warning("%s: the best epoch is chosen on the TEST split (select_on: test): the test figures are "
                    "inflated and not an honest estimate", desc)
    return cfg.select_on


@dataclass(frozen=True)
class Outputs:
    """A training stage's files (every one a path on its dvc.yaml cmd)."""

    model: str | os.PathLike
    report: str | os.PathLike
    live_dir: str | None = None
    resume: str | os.PathLike | None = None


def fit_fer(cfg: FerFinetuneParams, model: torch.nn.Module, start: str, ancestry: dict, data: str | os.PathLike,
            scales: list[str], out: Outputs, stage: str, meta_extra: dict) -> dict:
    """Fine-tune `model` (whose start saw the faces of `ancestry`) on the assembled FER data, save
    it, test it at every scale. A start that saw a test face is refused."""
    rank, world, _ = loop.distributed()
    lineage.check_start(ancestry, lineage.split_hashes(data, "test"), start, f"{data}'s test split")
    stats = shards.read_stats(data)
    classes = stats["classes"]
    norm = norm_stats(cfg.normalize, cfg.mean, cfg.std, stats)
    run_hash = checkpoint.params_hash(stage, cfg.model_dump(by_alias=True), stats, start, world)
    fer = loop.Data(shards.open_xy(data, "train"), shards.load_xy(data, selection_split(cfg, stage)), norm, len(classes))
    run = loop.Run(cfg.seed, stage.replace("_", "-"), run_hash, out.resume, out.live_dir, rank, world)
    model.test_view = None if cfg.test_view is None else cfg.test_view.model_dump()   # infer's view (val and test)
    history = finetune(model, cfg, fer, run)
    if rank != 0:
        return {}
    seen = lineage.assembled(data, ["train", cfg.select_on])   # the split that picked the epoch was seen too
    meta = {**meta_extra, "classes": classes, "size": stats["size"][0], "channels": stats["channels"],
            "mean": norm[0], "std": norm[1], "params_hash": run_hash, "seed": cfg.seed, "stage": stage, "start": start,
            "lineage": lineage.to_meta(lineage.merge(ancestry, seen))}
    meta["test_view"] = model.test_view
    checkpoint.save_model(out.model, model, meta)
    name = MODEL_NAMES[stage]
    result = {"start": start, "selected_on": cfg.select_on, "val": history[-1] if history else {},
              "epochs_run": len(history), "test": test_at_scales(model, data, scales, norm, model_device(model),
                                                                 classes, name),
              "params_hash": run_hash, "seed": cfg.seed}
    write_json(out.report, result)
    log.info("%s test accuracy per scale: %s", name, {s: m["accuracy"] for s, m in result["test"].items()})
    return result


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def fit_base(cfg: PretrainBaseParams, data: str | os.PathLike, out: str | os.PathLike, report: str | os.PathLike,
             scales: list[str], live_dir: str | None, resume: str | os.PathLike | None,
             init_file: str | os.PathLike | None = None) -> dict:
    """pretrain-base: `start_model` (init: face takes `init_file`), then `fit_fer`."""
    seed_everything(cfg.seed)
    _, _, local_rank = loop.distributed()
    device = pick_device(cfg.device, local_rank)
    stats = shards.read_stats(data)
    model, start, ancestry = start_model(cfg, init_file, len(stats["classes"]), stats, device, cfg.channels_last)
    return fit_fer(cfg, model, start, ancestry, data, scales, Outputs(out, report, live_dir, resume), "pretrain_base",
                   {"arch": cfg.arch, "options": dict(cfg.arch_options)})
