"""Inference: the device to run on, autocast, batched logits/probabilities/embeddings of uint8
face arrays, and test metrics at every scale. Used by training, evaluation and `predict` alike."""
from __future__ import annotations

import contextlib
import os
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from mrfer.data import shards
from mrfer.errors import InputError
from mrfer.metrics import summarize
from mrfer.transforms import prepare, stats_tensors


# A params value naming a device.
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto | cpu | cuda[:N] | mps")]


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` is this process's GPU when there is one (its local rank under torchrun), else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name}: no CUDA device is available (use cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA where supported (fp16 otherwise); nothing on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def infer(model: torch.nn.Module, images: np.ndarray, mean: list[float], std: list[float] | None,
          device: torch.device | str = "cpu", batch_size: int = 256, what: str = "logits") -> torch.Tensor:
    """Run `model` over NHWC uint8 `images`; `what` is logits | probs | features. Returns CPU float."""
    device = torch.device(device)
    model.eval()
    m, s = stats_tensors(mean, std, device)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with autocast(device):
            x = prepare(batch, m, s)
            out = model.features(x) if what == "features" else model(x)
        out = out.float()
        outputs.append((out.softmax(1) if what == "probs" else out).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def test_at_scales(model: torch.nn.Module, data_dir: str | os.PathLike, scales: list[str],
                    norm: tuple, device: torch.device, n_classes: int) -> dict:
    """Test-set metrics at full resolution and at every downsampled scale."""
    out = {}
    for scale in ["hr", *scales]:
        images, labels = shards.load_xy(data_dir, "test", scale)
        predicted = infer(model, images, *norm, device=device).argmax(1).numpy()
        out[scale] = summarize(labels, predicted, n_classes)
    return out


# ---------------------------------------------------------------- clips (the video-train model)

from mrfer.nets.clip_gru import clip_mean, test_starts, window_batch  # noqa: E402


@torch.no_grad()
def predict_clips(model: torch.nn.Module, features: torch.Tensor, clips_rows: list[np.ndarray], window: int,
                  stride: int, batch_size: int = 256, use_amp: bool = False) -> np.ndarray:
    """(clips, classes) clip scores of a clip model (`mrfer.nets.clip_gru.ClipGRU`): the mean of the
    softmax probabilities of each clip's test windows. `clips_rows[k]` are clip k's rows of `features`."""
    model.eval()
    owners, windows = [], []
    for k, rows in enumerate(clips_rows):
        for s in test_starts(len(rows), window, stride):
            owners.append(k)
            windows.append((rows, s))
    probs = []
    device = features.device
    for start in range(0, len(windows), batch_size):
        part = windows[start:start + batch_size]
        index, lengths = window_batch([w[0] for w in part], [w[1] for w in part], window)
        with autocast(device, use_amp):
            logits = model(features[torch.from_numpy(index).to(device)], torch.from_numpy(lengths))
        probs.append(logits.float().softmax(1).cpu().numpy())
    return clip_mean(np.concatenate(probs), np.asarray(owners), len(clips_rows))


@torch.no_grad()
def score_clip(model: torch.nn.Module, cnn: torch.nn.Module, meta: dict, faces: np.ndarray,
               device="cpu") -> np.ndarray:
    """Class probabilities of one clip of cropped faces (uint8 NHWC, frame order), from a clip
    model and its CNN as `mrfer.nets.clip_gru.load_video` returns them."""
    cm = meta["cnn_meta"]
    feats = infer(cnn, faces, cm["mean"], cm["std"], device=device, what="features").to(device)
    return predict_clips(model, feats, [np.arange(len(faces))], meta["window"], meta["stride"])[0]


# ---------------------------------------------------------------- feature super-resolution (FSR-FER)

from mrfer.nets.fsr import (FSRModel, check_fer_model, check_norm, embedding_from_target,  # noqa: E402
                            super_resolve, target_features)


@torch.no_grad()
def encode_targets(fer_model: torch.nn.Module, target: str, images: np.ndarray, mean: list[float],
                   std: list[float] | None, device: torch.device | str = "cpu", batch_size: int = 256,
                   amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain FER pass over uint8 NHWC `images`: (FSR target features, logits), CPU float32."""
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
        raise InputError("no images to encode")
    return torch.cat(targets), torch.cat(logits)


def fsr_features(fer_model: torch.nn.Module, fsr: FSRModel, images: np.ndarray, mean: list[float],
                 std: list[float] | None, device: torch.device | str = "cpu",
                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Super-resolved features of low-resolution faces.

    fer_model   the frozen FER model the FSR was trained on (`checkpoint.load_model(path)[0]`);
                checked by its weights: another model is an InputError naming the FSR file
    fsr         from `mrfer.nets.fsr.load_fsr(path, device)`
    images      (N, H, W, C) uint8 faces at the FER model's input size (e.g. `x4.npy` rows)
    mean, std   the FER model's normalisation (its meta's `mean`, `std`)

    Returns (features (N, D), logits (N, classes)), CPU float32: FER target of each face ->
    generator -> rest of the FER net -> embedding, and the FER head's logits on it.
    """
    check_fer_model(fsr, fer_model)
    check_norm(fsr, mean, std)
    device = torch.device(device)
    fsr.generator.to(device)
    lr_targets, _ = encode_targets(fer_model, fsr.target, images, mean, std, device, batch_size)
    features, logits, _ = super_resolve(fer_model, fsr.generator, fsr.target, lr_targets, device, batch_size)
    return features, logits
