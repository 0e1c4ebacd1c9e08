"""face-pretrain: MAFER's base network, a face-recognition model trained on identity labels at
full resolution (VGGFace2's SE-ResNet-50 in the paper; `init: imported` with `epochs: 0` takes
that released model as it is, with no training here).

It never sees a FER face, so every FER model started from it (pretrain-base, k-fold folds) starts
from weights that no FER test row has touched.
"""
from __future__ import annotations

import logging
import os

from pydantic import Field, field_validator

from mrfer.data import lineage, shards
from mrfer.errors import InputError
from mrfer.infer import pick_device, seed_everything
from mrfer.io import write_json
from mrfer.nets import checkpoint
from mrfer.nets.weights import import_weights
from mrfer.train import loop
from mrfer.train.base import FinetuneParams, StartParams, finetune, start_model
from mrfer.transforms import norm_stats

log = logging.getLogger(__name__)


class FacePretrainParams(FinetuneParams, StartParams):
    """`face_pretrain`: the identity classifier (init: scratch | imported | an mrfer model file)."""

    seed: int
    keep_identity_head: bool = Field(
        description="init: imported, kind vggface2_senet: keep the released 8,631-way identity classifier as "
                    "the head (the identities must be VGGFace2's train identities; MAFER step 1 trains through "
                    "it) | false: a new head sized to the identities")

    @field_validator("init")
    @classmethod
    def _not_itself(cls, init: str) -> str:
        if init == "face":
            raise ValueError("cannot be 'face': this stage makes the face model (scratch | imported | *.pt)")
        return init


def fit_face(cfg: FacePretrainParams, data: str | os.PathLike, out: str | os.PathLike, report: str | os.PathLike,
             live_dir: str | None, resume: str | os.PathLike | None) -> dict:
    seed_everything(cfg.seed)
    rank, world, local_rank = loop.distributed()
    device = pick_device(cfg.device, local_rank)
    stats = shards.read_stats(data)
    identities = stats["classes"]
    model, start, ancestry = start_model(cfg, None, len(identities), stats, device, cfg.channels_last)
    if cfg.keep_identity_head:
        if cfg.init != "imported" or cfg.weights.kind != "vggface2_senet":
            raise InputError("face_pretrain.keep_identity_head: true needs init: imported with weights of kind "
                             "vggface2_senet (the released identity classifier)")
        if len(identities) != 8631:
            raise InputError(f"face_pretrain.keep_identity_head: true needs VGGFace2's 8,631 train identities; "
                             f"{data} has {len(identities)}")
        import_weights(model, "vggface2_senet", cfg.weights.path, keep_head=True)
    norm = norm_stats(cfg.normalize, cfg.mean, cfg.std, stats)
    run_hash = checkpoint.params_hash("face_pretrain", cfg.model_dump(by_alias=True), stats, world)
    faces = loop.Data(shards.open_xy(data, "train"), shards.load_xy(data, "val"), norm, len(identities))
    run = loop.Run(cfg.seed, "face-pretrain", run_hash, resume, live_dir, rank, world)
    history = finetune(model, cfg, faces, run) if cfg.epochs else []
    if rank != 0:
        return {}
    seen = lineage.merge(ancestry, lineage.assembled(data, ["train", "val"]))
    meta = {"lineage": lineage.to_meta(seen), "arch": cfg.arch, "options": dict(cfg.arch_options),
            "classes": identities, "task": "identity",
            "size": stats["size"][0], "channels": stats["channels"], "mean": norm[0], "std": norm[1],
            "params_hash": run_hash, "seed": cfg.seed, "stage": "face_pretrain", "start": start}
    checkpoint.save_model(out, model, meta)
    result = {"start": start, "identities": len(identities), "epochs_run": len(history),
              "val": history[-1] if history else {}, "params_hash": run_hash, "seed": cfg.seed}
    write_json(report, result)
    log.info("face model: %d identities, val identification accuracy %s", len(identities),
             result["val"].get("val_accuracy"))
    return result
