"""video-train recipe: train a clip classifier, per-frame CNN embeddings -> GRU (the CNN-GRU of the
VGG-Face fine-tune system), and compare it with the same CNN's own head voting over the same clips.

The clips (every frame of each labelled sequence of the raw dataset, faces cropped as extract
does, split by the assembled data's subjects) come from `mrfer.data.clips`; the GRU, its windows
and the per-clip aggregation from `mrfer.nets.clip_gru`; clip scoring from `mrfer.infer_clips`.

Frozen CNN (`freeze: true`): every frame is embedded once (`infer(what="features")`) and only the
GRU trains. `freeze: false` fine-tunes the CNN end to end with the GRU (lr `cnn_lr`), slower. The
optimizer always holds both groups; a frozen CNN takes no gradient, so its group never steps.
Training draws one window per train clip per epoch; the epoch with the best val clip accuracy is
kept (`restore_best`). The comparison is the pipeline CNN's own head on every frame of the same
test clips: the mean of frame probabilities, and the majority vote.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from typing import Any

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
from mrfer.nets.clip_gru import ClipGRU, clip_mean, majority_vote, train_starts, window_batch
from mrfer.train import loop
from mrfer.transforms import prepare, stats_tensors

log = logging.getLogger(__name__)


class VideoTrainParams(Section):
    """`video_train`: the clips' reader options, the GRU and its windows, and its training."""

    seed: int
    freeze: bool = Field(description="true: embed every frame once, train the GRU only | "
                                     "false: fine-tune the CNN with the GRU (slower)")
    options: dict[str, Any] | None = Field(
        description="reader options over extract.options; null: extract.options + frames: all where "
                    "the reader has it (CK+: every frame of a sequence)")
    window: int = Field(gt=0, description="frames per GRU window; shorter clips are padded with their last frame")
    stride: int = Field(gt=0, description="test-time window stride; the last window ends on the clip's last frame")
    hidden: int = Field(gt=0, description="GRU hidden size")
    layers: int = Field(gt=0, description="GRU layers")
    dropout: float = Field(ge=0, lt=1, description="on the GRU input and output (and between layers)")
    mask_padding: bool = Field(description="true: average the GRU outputs over each window's true length only")
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="windows per training step")
    lr: float = Field(gt=0, description="GRU learning rate (Adam, cosine over the epochs)")
    cnn_lr: float = Field(gt=0, description="CNN learning rate when fine-tuned (freeze: false); "
                                            "a frozen CNN's group never steps")
    weight_decay: float = Field(ge=0)
    restore_best: bool = Field(description="end with the weights of the best val clip-accuracy epoch")
    eval_batch_size: int = Field(gt=0, description="frames per CNN inference batch and windows per GRU eval batch")
    amp: bool = Field(description="CUDA only: bf16 autocast where supported (fp16 + loss scaling otherwise)")
    device: Device


@dataclass
class Frames:
    """Every kept frame (`Clip.rows` index it) and the CNN that embeds it."""
    faces: np.ndarray               # (frames, H, W, C) uint8
    features: torch.Tensor          # the CNN's embedding of each face before any fine-tuning, on the device
    cnn: nn.Module
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


# ---------------------------------------------------------------- the CNN and the frames


def load_cnn(path: str | os.PathLike, device: torch.device,
             extract_cfg: ExtractParams) -> tuple[nn.Module, dict, list[str]]:
    """(CNN, its meta, classes): the pipeline CNN, which must take the faces extract crops."""
    cnn, meta = checkpoint.load_model(path, device)
    classes = list(labels.class_names(extract_cfg.contempt))
    channels = 1 if extract_cfg.color == "gray" else 3
    if list(meta["classes"]) != classes:
        raise InputError(f"{path}: the CNN's classes {meta['classes']} differ from the extract "
                         f"params' {classes} (extract.contempt is {extract_cfg.contempt!r})")
    if meta["size"] != extract_cfg.size or meta["channels"] != channels:
        raise InputError(f"{path}: the CNN takes {meta['size']} px x {meta['channels']} channels, "
                         f"extract gives {extract_cfg.size} px {extract_cfg.color}")
    return cnn, meta, classes


def embed_frames(cnn: nn.Module, faces: np.ndarray, norm: tuple, device: torch.device,
                 batch_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every frame's embedding (on the device) and the CNN's own head's probabilities on it,
    once, before any fine-tuning."""
    features = infer(cnn, faces, *norm, device=device, batch_size=batch_size, what="features")
    with torch.no_grad():
        frame_probs = cnn.head(features.to(device)).float().softmax(1).cpu().numpy()
    return features.to(device), frame_probs


def make_frames(faces: np.ndarray, features: torch.Tensor, cnn: nn.Module, norm: tuple, batch_size: int,
                finetune: bool) -> Frames:
    """The frames; fine-tuning puts the faces on the device, a frozen CNN takes no gradient."""
    if not finetune:
        cnn.requires_grad_(False)
        return Frames(faces, features, cnn, norm, batch_size, finetune)
    device = features.device
    return Frames(faces, features, cnn, norm, batch_size, finetune, torch.from_numpy(faces).to(device),
                  *stats_tensors(*norm, device))


def clip_features(frames: Frames, clips: list[Clip]) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Embeddings for `clips` and each clip's rows of them: the frozen ones, or the fine-tuned CNN's now."""
    rows = [c.rows for c in clips]
    if not frames.finetune:
        return frames.features, rows
    flat = np.concatenate(rows)
    feats = infer(frames.cnn, frames.faces[flat], *frames.norm, device=frames.features.device,
                  batch_size=frames.batch_size, what="features").to(frames.features.device)
    offsets = np.cumsum([0] + [len(r) for r in rows])
    return feats, [np.arange(offsets[k], offsets[k + 1]) for k in range(len(rows))]


def evaluate(model: ClipGRU, frames: Frames, clips: list[Clip], cfg: VideoTrainParams,
             use_amp: bool) -> np.ndarray:
    """(clips, classes) clip scores."""
    feats, rows = clip_features(frames, clips)
    return predict_clips(model, feats, rows, cfg.window, cfg.stride, cfg.eval_batch_size, use_amp)


# ---------------------------------------------------------------- training


def make_optim(model: ClipGRU, cnn: nn.Module, cfg: VideoTrainParams, use_amp: bool) -> Optim:
    groups = [{"params": list(model.parameters()), "lr": cfg.lr},
              {"params": list(cnn.parameters()), "lr": cfg.cnn_lr}]
    optimizer = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    return Optim(optimizer, scheduler, scaler)


def window_inputs(frames: Frames, index: torch.Tensor) -> torch.Tensor:
    """(B, window, D) embeddings of the frames at `index`."""
    if not frames.finetune:
        return frames.features[index]
    # each distinct frame through the CNN once (pads repeat frames), then gathered
    unique, inverse = torch.unique(index, return_inverse=True)
    return frames.cnn.features(prepare(frames.faces_t[unique], frames.mean_t, frames.std_t))[inverse]


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
                cfg: VideoTrainParams, use_amp: bool) -> dict:
    """One random window of every train clip, in a random order; the epoch's loss and accuracy."""
    model.train()
    if frames.finetune:
        frames.cnn.train()
    rows = [c.rows for c in clips]
    labels_t = torch.tensor([c.label for c in clips], dtype=torch.long)
    order = torch.randperm(len(clips), generator=gen).numpy()
    starts = train_starts(np.array([len(r) for r in rows])[order], cfg.window, gen)
    total, correct, seen = 0.0, 0, 0
    for b in range(0, len(order), cfg.batch_size):
        picks = order[b:b + cfg.batch_size]
        if frames.finetune and len(picks) * cfg.window < 2:  # BatchNorm cannot train on a single frame
            continue
        index, true_lengths = window_batch([rows[k] for k in picks], starts[b:b + cfg.batch_size], cfg.window)
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
              use_amp: bool, live_dir: str | None) -> tuple[list[dict], int]:
    """Train for `cfg.epochs`; end with the best val epoch's weights (`restore_best`).
    Returns (one row per epoch, the epoch whose weights the model ends with)."""
    optim = make_optim(model, frames.cnn, cfg, use_amp)
    steps_per_epoch = -(-len(by_split["train"]) // cfg.batch_size)  # one window per clip per epoch
    loop.warn_few_steps("video-train", steps_per_epoch, cfg.epochs, cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    live = loop.open_live(live_dir)
    history, best, best_state, best_epoch = [], -1.0, None, 0
    with cpu_threads(frames.features.device, None if frames.finetune else 1):
        for epoch in range(cfg.epochs):
            row = {"epoch": epoch + 1, **train_epoch(model, frames, by_split["train"], optim, gen, cfg, use_amp)}
            if by_split["val"]:
                row.update(val_metrics(model, frames, by_split["val"], cfg, use_amp))
                if row["val_accuracy"] > best:
                    best, best_epoch = row["val_accuracy"], epoch + 1
                    best_state = (copy.deepcopy(model.state_dict()),
                                  copy.deepcopy(frames.cnn.state_dict()) if frames.finetune else None)
            history.append(row)
            log.info("video epoch %d: %s", epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
            loop.log_epoch(live, row)
    if live is not None:
        live.end()
    if cfg.restore_best and best_state is not None:
        model.load_state_dict(best_state[0])
        if frames.finetune:
            frames.cnn.load_state_dict(best_state[1])
    else:
        best_epoch = len(history)
    return history, best_epoch


# ---------------------------------------------------------------- the recipe


def run_hash(cfg: VideoTrainParams, extract_cfg: ExtractParams, raw: str | os.PathLike, cnn: str | os.PathLike,
             options: dict, cnn_hash: str) -> str:
    """The run's params hash. Its inputs keep the shape they had while the CNN file and the raw
    dataset root were params keys (`video_train.cnn`, `extract.root`), so a run whose inputs did
    not change keeps its hash (and model file and report, byte for byte)."""
    video = cfg.model_dump() | {"cnn": str(cnn)}
    extracted = {"dataset": extract_cfg.dataset, "root": str(raw), "options": extract_cfg.options,
                 "size": extract_cfg.size, "color": extract_cfg.color, "margin": extract_cfg.margin,
                 "contempt": extract_cfg.contempt, "no_face": extract_cfg.no_face, "seed": cfg.seed}
    return checkpoint.params_hash("video_train", video, extracted, options, cnn_hash)


def cnn_summary(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("arch", "options", "classes", "size", "channels", "mean", "std",
                                     "params_hash")}


def frame_vote_metrics(frame_probs: np.ndarray, clips: list[Clip], n_classes: int) -> dict:
    """The CNN's own head over every frame of `clips`: mean of frame probabilities, and majority vote."""
    owner = np.concatenate([np.full(len(c.rows), k) for k, c in enumerate(clips)])
    probs = frame_probs[np.concatenate([c.rows for c in clips])]
    y = [c.label for c in clips]
    return {"mean": summarize(y, clip_mean(probs, owner, len(clips)).argmax(1), n_classes),
            "majority": summarize(y, majority_vote(probs, owner, len(clips)), n_classes)}


def video_meta(model: ClipGRU, cfg: VideoTrainParams, extract_cfg: ExtractParams, cnn: str | os.PathLike,
               cnn_meta: dict, classes: list[str], options: dict, hash_: str) -> dict:
    """What `clip_gru.load_video` and a reader of the model file need: the GRU, its windows, its CNN."""
    return {"stage": "video_train", "classes": classes, "gru": model.config, "window": cfg.window,
            "stride": cfg.stride, "freeze": bool(cfg.freeze), "cnn": str(cnn),
            "cnn_params_hash": cnn_meta["params_hash"], "cnn_meta": cnn_summary(cnn_meta),
            "extract": {"dataset": extract_cfg.dataset, "size": extract_cfg.size, "color": extract_cfg.color,
                        "margin": extract_cfg.margin, "contempt": extract_cfg.contempt},
            "reader_options": options, "params_hash": hash_, "seed": cfg.seed,
            "versions": checkpoint.versions()}


def save_video(out: str | os.PathLike, model: ClipGRU, frames: Frames, meta: dict) -> None:
    """The GRU's weights and `meta`; a fine-tuned CNN's weights too (a frozen one is named by meta)."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}
    if frames.finetune:
        payload["cnn_state_dict"] = {k: v.detach().cpu() for k, v in frames.cnn.state_dict().items()}
    checkpoint.save(out, payload)


def video_report(gru_metrics: dict, votes: dict, classes: list[str], data: ClipSet, history: list[dict],
                 best_epoch: int, cfg: VideoTrainParams, run_hash_: str, cnn_hash: str) -> dict:
    by_split, clip_skips, input_skips = data.by_split, data.clip_skips, data.input_skips
    all_lengths = [len(c.rows) for c in data.clips]
    return {
        "gru": gru_metrics,
        "frame_mean": votes["mean"],
        "frame_majority": votes["majority"],
        "classes": classes,
        "clips": {name: len(by_split[name]) for name in splits.SPLITS},
        "frames": {name: int(sum(len(c.rows) for c in by_split[name])) for name in splits.SPLITS},
        "clip_length": {"min": int(min(all_lengths)), "max": int(max(all_lengths)),
                        "mean": round(float(np.mean(all_lengths)), 2)},
        "test_clips_padded": int(sum(len(c.rows) < cfg.window for c in by_split["test"])),
        "window": cfg.window, "stride": cfg.stride, "freeze": bool(cfg.freeze),
        "val": history[best_epoch - 1] if history else {}, "best_epoch": best_epoch,
        "epochs_run": len(history),
        "skipped_clips": len(clip_skips), "skipped_clips_by_reason": clip_skips.reasons(),
        "skips": clip_skips.items,
        "skipped_inputs": len(input_skips), "skipped_inputs_by_reason": input_skips.reasons(),
        "params_hash": run_hash_, "cnn_params_hash": cnn_hash, "seed": cfg.seed,
    }


def fit_video(cfg: VideoTrainParams, extract_cfg: ExtractParams, *, raw: str | os.PathLike,
              data: str | os.PathLike, cnn: str | os.PathLike, out: str | os.PathLike,
              report: str | os.PathLike, live_dir: str | None) -> dict:
    """Train the clip GRU on the clips of the raw dataset at `raw`, split as the assembled data at
    `data`, over the embeddings of the CNN file `cnn`; write the model file `out`, the metrics JSON
    `report` and the curves under `live_dir` (None: none). Returns the report."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"
    cnn_model, cnn_meta, classes = load_cnn(cnn, device, extract_cfg)
    norm = (cnn_meta["mean"], cnn_meta["std"])
    options = reader_options(extract_cfg.dataset, extract_cfg.options, cfg.options)
    clip_set = load_clips(extract_cfg, raw, data, options, len(classes))
    features, frame_probs = embed_frames(cnn_model, clip_set.faces, norm, device, cfg.eval_batch_size)

    torch.manual_seed(cfg.seed)
    model = ClipGRU(features.shape[1], len(classes), cfg.hidden, cfg.layers, cfg.dropout,
                    cfg.mask_padding).to(device)
    train_frames = torch.from_numpy(np.concatenate([c.rows for c in clip_set.by_split["train"]])).to(device)
    model.set_input_stats(features[train_frames])
    frames = make_frames(clip_set.faces, features, cnn_model, norm, cfg.eval_batch_size, finetune=not cfg.freeze)
    history, best_epoch = train_gru(model, frames, clip_set.by_split, cfg, use_amp, live_dir)

    test_clips = clip_set.by_split["test"]
    test_scores = evaluate(model, frames, test_clips, cfg, use_amp)
    gru_metrics = summarize([c.label for c in test_clips], test_scores.argmax(1), len(classes))
    warn_if_collapsed(gru_metrics, "video GRU on the test clips", classes)
    votes = frame_vote_metrics(frame_probs, test_clips, len(classes))
    hash_ = run_hash(cfg, extract_cfg, raw, cnn, options, cnn_meta["params_hash"])
    save_video(out, model, frames, video_meta(model, cfg, extract_cfg, cnn, cnn_meta, classes, options, hash_))
    result = video_report(gru_metrics, votes, classes, clip_set, history, best_epoch, cfg, hash_,
                          cnn_meta["params_hash"])
    write_json(report, result)
    log.info("test clip accuracy: GRU %.4f, frame mean %.4f, frame majority %.4f (%d clips)",
             gru_metrics["accuracy"], votes["mean"]["accuracy"], votes["majority"]["accuracy"], len(test_clips))
    return result
