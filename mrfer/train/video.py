"""video-train recipes: a clip classifier, per-frame CNN features -> GRU, compared with the FER
model's own head voting over the same clips.

`recipe` (both read from `video_train`; the README table lists every setting):
  vgg_gru    the VGG+GRU of XiaoYee/emotion_classification (`VGG_GRU/VGG_gru.py`, `train.py`,
             `dataset.py`): the CNN's frame features (VGG-Face conv + fc6 + ReLU there: `frame_layer`)
             -> GRU -> dropout -> mean over time -> Linear, trained end to end from the FER model with
             one SGD (momentum, weight decay, constant lr) on one window per clip per epoch.
  mrfer_gru  this repo's earlier recipe: a frozen CNN (embed every frame once) or a fine-tuned one at
             its own lr, standardised features, dropout on the GRU input and output, Adam + cosine.
The windows (`window_sampling`, `test_windows`) and the clip score (`clip_score`) are their own
keys; the published values are spread / full / logits (`mrfer.nets.clip_gru`, `mrfer.infer_clips`).

`cnn` picks the backbone: `fer` (the stage's --fer-model, a FER model) or `face` (--face-model, a
face-recognition model whose head is identities: the seed system's ResNet+GRU started from one).
The frame-voting baselines always use the FER model's own head, on every frame of the test clips:
the mean of frame probabilities, and the majority vote. The clips (every frame of each labelled
sequence, faces cropped as extract does, split by the assembled data's subjects) come from
`mrfer.data.clips`. The epoch with the best val clip accuracy is kept (`restore_best`).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mrfer.config import Section
from mrfer.data import labels, splits
from mrfer.data.clips import Clip, ClipSet, load_clips, reader_options
from mrfer.data.extract import ExtractParams
from mrfer.errors import InputError
from mrfer.infer import Device, autocast, infer, pick_device, seed_everything
from mrfer.infer_clips import predict_clips
from mrfer.io import write_json
from mrfer.metrics import summarize, warn_if_collapsed
from mrfer.nets import checkpoint
from mrfer.nets.clip_gru import (ClipGRU, FrameEncoder, clip_mean, majority_vote, test_starts,
                                 train_positions, window_batch)
from mrfer.train import loop
from mrfer.transforms import prepare, stats_tensors

log = logging.getLogger(__name__)


class VggGruParams(Section):
    """`video_train.vgg_gru`: the published VGG+GRU's training (XiaoYee `VGG_GRU/train.py`)."""

    frame_layer: Literal["embedding", "fc6"] = Field(
        description="fc6: conv layers + fc6 + ReLU (published; a vggface CNN) | embedding: the CNN's features()")
    dropout: float = Field(ge=0, lt=1, description="on the GRU outputs (published 0.8)")
    batch_size: int = Field(gt=0, description="clips per SGD step (published 1)")
    lr: float = Field(gt=0, description="one constant SGD lr for the CNN and the GRU (published 1e-5)")
    momentum: float = Field(ge=0, lt=1, description="published 0.9")
    weight_decay: float = Field(ge=0, description="published 5e-5")


class MrferGruParams(Section):
    """`video_train.mrfer_gru`: this repo's earlier recipe."""

    freeze: bool = Field(description="true: embed every frame once, train the GRU only | "
                                     "false: fine-tune the CNN with the GRU at cnn_lr (slower)")
    layers: int = Field(gt=0, description="GRU layers")
    dropout: float = Field(ge=0, lt=1, description="on the GRU input and output (and between layers)")
    mask_padding: bool = Field(description="true: average over each window's true length only")
    batch_size: int = Field(gt=0, description="windows per training step")
    lr: float = Field(gt=0, description="GRU learning rate (Adam, cosine over the epochs)")
    cnn_lr: float = Field(gt=0, description="CNN learning rate when fine-tuned (freeze: false)")
    weight_decay: float = Field(ge=0)


class VideoTrainParams(Section):
    """`video_train`: the recipe, the backbone, the clips' windows and scoring, and each recipe's training."""

    seed: int
    recipe: Literal["vgg_gru", "mrfer_gru"] = Field(
        description="vgg_gru: XiaoYee's VGG+GRU, end to end (published) | mrfer_gru: this repo's earlier recipe")
    cnn: Literal["fer", "face"] = Field(
        description="the backbone: fer (--fer-model) | face (--face-model, a face-recognition model)")
    options: dict[str, Any] | None = Field(
        description="reader options over extract.options; null: extract.options + frames: all where "
                    "the reader has it (CK+: every frame of a sequence)")
    window: int = Field(gt=0, description="frames per GRU window; shorter clips are padded with their last frame")
    window_sampling: Literal["spread", "contiguous"] = Field(
        description="training window: spread (`window` distinct frames over the whole clip, in order; "
                    "published) | contiguous (from a random start)")
    stride: int = Field(gt=0, description="test-time window stride")
    test_windows: Literal["full", "cover"] = Field(
        description="full: full windows only (published) | cover: the last window ends on the last frame")
    clip_score: Literal["logits", "probabilities"] = Field(
        description="mean of the test windows' logits (published) | of their probabilities")
    hidden: int = Field(gt=0, description="GRU hidden size (published 128)")
    epochs: int = Field(gt=0)
    restore_best: bool = Field(description="end with the weights of the best val clip-accuracy epoch")
    eval_batch_size: int = Field(gt=0, description="frames per CNN inference batch and windows per GRU eval batch")
    amp: bool = Field(description="CUDA only: bf16 autocast where supported (fp16 + loss scaling otherwise)")
    device: Device
    vgg_gru: VggGruParams
    mrfer_gru: MrferGruParams


@dataclass
class Recipe:
    """What the chosen recipe sets, resolved from its sub-section."""
    name: str
    frame_layer: str
    finetune: bool
    layers: int
    dropout: float
    mask_padding: bool
    batch_size: int


def resolve_recipe(cfg: VideoTrainParams) -> Recipe:
    """The chosen recipe. Both sub-sections are read on every run (each key a stage accepts is read)."""
    settings = {name: {k: getattr(getattr(cfg, name), k) for k in type(getattr(cfg, name)).model_fields}
                for name in ("vgg_gru", "mrfer_gru")}
    s = settings[cfg.recipe]
    if cfg.recipe == "vgg_gru":
        return Recipe("vgg_gru", s["frame_layer"], True, 1, s["dropout"], False, s["batch_size"])
    return Recipe("mrfer_gru", "embedding", not s["freeze"], s["layers"], s["dropout"], s["mask_padding"],
                  s["batch_size"])


@dataclass
class Frames:
    """Every kept frame (`Clip.rows` index it) and the encoder that gives its features."""
    faces: np.ndarray               # (frames, H, W, C) uint8
    features: torch.Tensor          # each face's features before any fine-tuning, on the device
    encoder: FrameEncoder
    norm: tuple                     # the CNN's (mean, std)
    batch_size: int                 # CNN inference batch
    finetune: bool
    faces_t: torch.Tensor | None = None   # fine-tuning only: the faces and the norm stats on the device
    mean_t: torch.Tensor | None = None
    std_t: torch.Tensor | None = None


@dataclass
class Optim:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


@contextlib.contextmanager
def cpu_threads(device: torch.device, n: int | None):
    """Run the block with `n` torch threads on CPU (None or another device: unchanged). A small
    GRU batch gains nothing from intra-op threads; on a busy 2-core CPU they only spin: one
    training step took 0.32 s of CPU with 2 threads and 0.017 s with 1."""
    if device.type != "cpu" or n is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- the CNNs and the frames


def load_cnn(path: str | os.PathLike, device: torch.device, extract_cfg: ExtractParams,
             check_classes: bool) -> tuple[nn.Module, dict, list[str]]:
    """(CNN, its meta, the FER classes): a pipeline CNN that takes the faces extract crops; a FER
    model must also have extract's classes (a face model's classes are identities)."""
    cnn, meta = checkpoint.load_model(path, device)
    classes = list(labels.class_names(extract_cfg.contempt))
    channels = 1 if extract_cfg.color == "gray" else 3
    if check_classes and list(meta["classes"]) != classes:
        raise InputError(f"{path}: the CNN's classes {meta['classes']} differ from the extract "
                         f"params' {classes} (extract.contempt is {extract_cfg.contempt!r})")
    if meta["size"] != extract_cfg.size or meta["channels"] != channels:
        raise InputError(f"{path}: the CNN takes {meta['size']} px x {meta['channels']} channels, "
                         f"extract gives {extract_cfg.size} px {extract_cfg.color}")
    return cnn, meta, classes


def fer_frame_probs(fer: nn.Module, fer_meta: dict, faces: np.ndarray, device: torch.device,
                    batch_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The FER model's features and its own head's probabilities on every frame, before any fine-tuning."""
    features = infer(fer, faces, fer_meta["mean"], fer_meta["std"], device=device, batch_size=batch_size,
                     what="features")
    with torch.no_grad():
        probs = fer.head(features.to(device)).float().softmax(1).cpu().numpy()
    return features, probs


def make_frames(faces: np.ndarray, features: torch.Tensor, encoder: FrameEncoder, norm: tuple, batch_size: int,
                finetune: bool) -> Frames:
    """The frames; fine-tuning puts the faces on the device, a frozen CNN takes no gradient."""
    if not finetune:
        encoder.requires_grad_(False)
        return Frames(faces, features, encoder, norm, batch_size, finetune)
    device = features.device
    return Frames(faces, features, encoder, norm, batch_size, finetune, torch.from_numpy(faces).to(device),
                  *stats_tensors(*norm, device))


def clip_features(frames: Frames, clips: list[Clip]) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Features for `clips` and each clip's rows of them: the frozen ones, or the fine-tuned CNN's now."""
    rows = [c.rows for c in clips]
    if not frames.finetune:
        return frames.features, rows
    flat = np.concatenate(rows)
    feats = infer(frames.encoder, frames.faces[flat], *frames.norm, device=frames.features.device,
                  batch_size=frames.batch_size, what="features").to(frames.features.device)
    offsets = np.cumsum([0] + [len(r) for r in rows])
    return feats, [np.arange(offsets[k], offsets[k + 1]) for k in range(len(rows))]


def evaluate(model: ClipGRU, frames: Frames, clips: list[Clip], cfg: VideoTrainParams,
             use_amp: bool) -> np.ndarray:
    """(clips, classes) clip probabilities over the test windows."""
    feats, rows = clip_features(frames, clips)
    return predict_clips(model, feats, rows, cfg.window, cfg.stride, cfg.test_windows, cfg.clip_score,
                         cfg.eval_batch_size, use_amp)


# ---------------------------------------------------------------- training


def make_optim(model: ClipGRU, encoder: FrameEncoder, cfg: VideoTrainParams, use_amp: bool) -> Optim:
    """vgg_gru: one SGD over the CNN and the GRU, constant lr (`VGG_GRU/train.py`);
    mrfer_gru: Adam with the GRU and the CNN at their own lrs, cosine over the epochs."""
    if cfg.recipe == "vgg_gru":
        v = cfg.vgg_gru
        optimizer = torch.optim.SGD([*model.parameters(), *encoder.parameters()], lr=v.lr, momentum=v.momentum,
                                    weight_decay=v.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    else:
        m = cfg.mrfer_gru
        groups = [{"params": list(model.parameters()), "lr": m.lr},
                  {"params": list(encoder.parameters()), "lr": m.cnn_lr}]
        optimizer = torch.optim.Adam(groups, weight_decay=m.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    return Optim(optimizer, scheduler, scaler)


def window_inputs(frames: Frames, index: torch.Tensor) -> torch.Tensor:
    """(B, window, D) features of the frames at `index`."""
    if not frames.finetune:
        return frames.features[index]
    # each distinct frame through the CNN once (pads repeat frames), then gathered
    unique, inverse = torch.unique(index, return_inverse=True)
    return frames.encoder.features(prepare(frames.faces_t[unique], frames.mean_t, frames.std_t))[inverse]


def train_step(model: ClipGRU, frames: Frames, index: np.ndarray, true_lengths: np.ndarray,
               y: torch.Tensor, optim: Optim, use_amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch of windows; (loss, logits)."""
    device = frames.features.device
    with autocast(device, use_amp):
        x = window_inputs(frames, torch.from_numpy(index).to(device))
        logits = model(x.float(), torch.from_numpy(true_lengths))
        loss = F.cross_entropy(logits.float(), y)
    optim.optimizer.zero_grad(set_to_none=True)
    optim.scaler.scale(loss).backward()
    optim.scaler.step(optim.optimizer)
    optim.scaler.update()
    return loss, logits


def train_epoch(model: ClipGRU, frames: Frames, clips: list[Clip], optim: Optim, gen: torch.Generator,
                cfg: VideoTrainParams, recipe: Recipe, use_amp: bool) -> dict:
    """One random window of every train clip, in a random order; the epoch's loss and accuracy."""
    model.train()
    if frames.finetune:
        frames.encoder.train()
    rows = [c.rows for c in clips]
    labels_t = torch.tensor([c.label for c in clips], dtype=torch.long)
    order = torch.randperm(len(clips), generator=gen).numpy()
    positions = train_positions([len(rows[k]) for k in order], cfg.window, cfg.window_sampling, gen)
    total, correct, seen = 0.0, 0, 0
    for b in range(0, len(order), recipe.batch_size):
        picks = order[b:b + recipe.batch_size]
        index, true_lengths = window_batch([rows[k] for k in picks], positions[b:b + recipe.batch_size])
        if frames.finetune and len(np.unique(index)) < 2:  # BatchNorm cannot train on a single frame
            continue
        y = labels_t[picks].to(frames.features.device)
        loss, logits = train_step(model, frames, index, true_lengths, y, optim, use_amp)
        total += float(loss.detach()) * len(picks)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(picks)
    optim.scheduler.step()
    return {"train_loss": round(total / max(seen, 1), 5), "train_accuracy": round(correct / max(seen, 1), 4)}


def val_metrics(model: ClipGRU, frames: Frames, clips: list[Clip], cfg: VideoTrainParams,
                use_amp: bool) -> dict:
    """Clip-level loss and accuracy on the val clips."""
    y = np.array([c.label for c in clips])
    probs = evaluate(model, frames, clips, cfg, use_amp)
    true_probs = np.clip(probs[np.arange(len(y)), y], 1e-12, 1)
    return {"val_loss": round(float(-np.log(true_probs).mean()), 5),
            "val_accuracy": round(float((probs.argmax(1) == y).mean()), 4)}


def train_gru(model: ClipGRU, frames: Frames, by_split: dict[str, list[Clip]], cfg: VideoTrainParams,
              recipe: Recipe, use_amp: bool, live_dir: str | None) -> tuple[list[dict], int]:
    """Train for `cfg.epochs`; end with the best val epoch's weights (`restore_best`).
    Returns (one row per epoch, the epoch whose weights the model ends with)."""
    optim = make_optim(model, frames.encoder, cfg, use_amp)
    steps_per_epoch = -(-len(by_split["train"]) // recipe.batch_size)  # one window per clip per epoch
    loop.warn_few_steps("video-train", steps_per_epoch, cfg.epochs, recipe.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    live = loop.open_live(live_dir)
    history, best, best_state, best_epoch = [], -1.0, None, 0
    with cpu_threads(frames.features.device, 1):
        for epoch in range(cfg.epochs):
            row = {"epoch": epoch + 1, **train_epoch(model, frames, by_split["train"], optim, gen, cfg, recipe,
                                                     use_amp)}
            if by_split["val"]:
                row.update(val_metrics(model, frames, by_split["val"], cfg, use_amp))
                if row["val_accuracy"] > best:
                    best, best_epoch = row["val_accuracy"], epoch + 1
                    best_state = (copy.deepcopy(model.state_dict()),
                                  copy.deepcopy(frames.encoder.state_dict()) if frames.finetune else None)
            history.append(row)
            log.info("video epoch %d: %s", epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
            loop.log_epoch(live, row)
    if live is not None:
        live.end()
    if cfg.restore_best and best_state is not None:
        model.load_state_dict(best_state[0])
        if frames.finetune:
            frames.encoder.load_state_dict(best_state[1])
    else:
        best_epoch = len(history)
    return history, best_epoch


# ---------------------------------------------------------------- the recipe


def cnn_summary(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("arch", "options", "classes", "size", "channels", "mean", "std",
                                     "params_hash")}


def frame_vote_metrics(frame_probs: np.ndarray, clips: list[Clip], n_classes: int) -> dict:
    """The FER model's own head over every frame of `clips`: mean of frame probabilities, and majority vote."""
    owner = np.concatenate([np.full(len(c.rows), k) for k, c in enumerate(clips)])
    probs = frame_probs[np.concatenate([c.rows for c in clips])]
    y = [c.label for c in clips]
    return {"mean": summarize(y, clip_mean(probs, owner, len(clips)).argmax(1), n_classes),
            "majority": summarize(y, majority_vote(probs, owner, len(clips)), n_classes)}


def frames_outside_windows(clips: list[Clip], cfg: VideoTrainParams) -> int:
    """Test frames no test window sees (`test_windows: full` leaves a clip's tail out)."""
    unseen = 0
    for c in clips:
        last = test_starts(len(c.rows), cfg.window, cfg.stride, cfg.test_windows)[-1]
        unseen += max(0, len(c.rows) - last - cfg.window)
    return unseen


def video_meta(model: ClipGRU, cfg: VideoTrainParams, recipe: Recipe, extract_cfg: ExtractParams,
               cnn: str | os.PathLike, cnn_meta: dict, classes: list[str], options: dict, hash_: str) -> dict:
    """What `clip_gru.load_video` and a reader of the model file need: the GRU, its windows, its CNN."""
    return {"stage": "video_train", "recipe": cfg.recipe, "classes": classes, "gru": model.config,
            "window": cfg.window, "stride": cfg.stride, "test_windows": cfg.test_windows,
            "clip_score": cfg.clip_score, "frame_layer": recipe.frame_layer, "freeze": not recipe.finetune,
            "cnn_role": cfg.cnn, "cnn": str(cnn), "cnn_params_hash": cnn_meta["params_hash"],
            "cnn_meta": cnn_summary(cnn_meta),
            "extract": {"reader": extract_cfg.reader, "size": extract_cfg.size, "color": extract_cfg.color,
                        "margin": extract_cfg.margin, "contempt": extract_cfg.contempt},
            "reader_options": options, "params_hash": hash_, "seed": cfg.seed,
            "versions": checkpoint.versions()}


def save_video(out: str | os.PathLike, model: ClipGRU, frames: Frames, meta: dict) -> None:
    """The GRU's weights and `meta`; a fine-tuned CNN's weights too (a frozen one is named by meta)."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}
    if frames.finetune:
        payload["cnn_state_dict"] = {k: v.detach().cpu() for k, v in frames.encoder.cnn.state_dict().items()}
    checkpoint.save(out, payload)


def video_report(gru_metrics: dict, votes: dict, classes: list[str], data: ClipSet, history: list[dict],
                 best_epoch: int, cfg: VideoTrainParams, recipe: Recipe, hashes: dict) -> dict:
    by_split, clip_skips, input_skips = data.by_split, data.clip_skips, data.input_skips
    all_lengths = [len(c.rows) for c in data.clips]
    return {
        "recipe": cfg.recipe, "cnn": cfg.cnn, "frame_layer": recipe.frame_layer, "freeze": not recipe.finetune,
        "gru": gru_metrics,
        "frame_mean": votes["mean"],
        "frame_majority": votes["majority"],
        "classes": classes,
        "clips": {name: len(by_split[name]) for name in splits.SPLITS},
        "frames": {name: int(sum(len(c.rows) for c in by_split[name])) for name in splits.SPLITS},
        "clip_length": {"min": int(min(all_lengths)), "max": int(max(all_lengths)),
                        "mean": round(float(np.mean(all_lengths)), 2)},
        "test_clips_padded": int(sum(len(c.rows) < cfg.window for c in by_split["test"])),
        "test_frames_outside_windows": frames_outside_windows(by_split["test"], cfg),
        "window": cfg.window, "stride": cfg.stride, "window_sampling": cfg.window_sampling,
        "test_windows": cfg.test_windows, "clip_score": cfg.clip_score,
        "val": history[best_epoch - 1] if history else {}, "best_epoch": best_epoch,
        "epochs_run": len(history),
        "skipped_clips": len(clip_skips), "skipped_clips_by_reason": clip_skips.reasons(),
        "skips": clip_skips.items,
        "skipped_inputs": len(input_skips), "skipped_inputs_by_reason": input_skips.reasons(),
        **hashes, "seed": cfg.seed,
    }


def fit_video(cfg: VideoTrainParams, extract_cfg: ExtractParams, *, raw: str | os.PathLike,
              data: str | os.PathLike, fer_model: str | os.PathLike, face_model: str | os.PathLike,
              out: str | os.PathLike, report: str | os.PathLike, live_dir: str | None) -> dict:
    """Train the clip model of `cfg.recipe` on the clips of the raw dataset at `raw`, split as the
    assembled data at `data`, on the backbone `cfg.cnn` picks (the FER model file `fer_model` or
    the face model file `face_model`); write the model file `out`, the metrics JSON `report` and
    the curves under `live_dir` (None: none). Returns the report."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"
    recipe = resolve_recipe(cfg)
    fer, fer_meta, classes = load_cnn(fer_model, device, extract_cfg, check_classes=True)
    cnn_path = fer_model if cfg.cnn == "fer" else face_model
    cnn, cnn_meta = (fer, fer_meta) if cfg.cnn == "fer" else load_cnn(face_model, device, extract_cfg, False)[:2]
    norm = (cnn_meta["mean"], cnn_meta["std"])
    options = reader_options(extract_cfg.reader, extract_cfg.options, cfg.options)
    clip_set = load_clips(extract_cfg, raw, data, options, len(classes))
    fer_features, frame_probs = fer_frame_probs(fer, fer_meta, clip_set.faces, device, cfg.eval_batch_size)
    encoder = FrameEncoder(cnn, recipe.frame_layer)
    features = (fer_features if cfg.cnn == "fer" and recipe.frame_layer == "embedding" else
                infer(encoder, clip_set.faces, *norm, device=device, batch_size=cfg.eval_batch_size,
                      what="features")).to(device)

    torch.manual_seed(cfg.seed)
    model = ClipGRU(features.shape[1], len(classes), cfg.hidden, recipe.layers, recipe.dropout,
                    recipe.mask_padding, layout=cfg.recipe).to(device)
    if cfg.recipe == "mrfer_gru":
        train_rows = np.concatenate([c.rows for c in clip_set.by_split["train"]])
        model.set_input_stats(features[torch.from_numpy(train_rows).to(device)])
    frames = make_frames(clip_set.faces, features, encoder, norm, cfg.eval_batch_size, recipe.finetune)
    history, best_epoch = train_gru(model, frames, clip_set.by_split, cfg, recipe, use_amp, live_dir)

    test_clips = clip_set.by_split["test"]
    test_scores = evaluate(model, frames, test_clips, cfg, use_amp)
    gru_metrics = summarize([c.label for c in test_clips], test_scores.argmax(1), len(classes))
    warn_if_collapsed(gru_metrics, f"video {cfg.recipe} on the test clips", classes)
    votes = frame_vote_metrics(frame_probs, test_clips, len(classes))
    extracted = {k: getattr(extract_cfg, k) for k in type(extract_cfg).model_fields}   # the whole section
    hash_ = checkpoint.params_hash("video_train", cfg.model_dump(), extracted, str(raw), options,
                                   cnn_meta["params_hash"], fer_meta["params_hash"])
    save_video(out, model, frames, video_meta(model, cfg, recipe, extract_cfg, cnn_path, cnn_meta, classes,
                                              options, hash_))
    hashes = {"params_hash": hash_, "cnn_params_hash": cnn_meta["params_hash"],
              "fer_params_hash": fer_meta["params_hash"]}
    result = video_report(gru_metrics, votes, classes, clip_set, history, best_epoch, cfg, recipe, hashes)
    write_json(report, result)
    log.info("test clip accuracy: %s %.4f, frame mean %.4f, frame majority %.4f (%d clips)", cfg.recipe,
             gru_metrics["accuracy"], votes["mean"]["accuracy"], votes["majority"]["accuracy"], len(test_clips))
    return result
