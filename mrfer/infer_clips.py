"""Inference of the clip model (video-train's GRU over per-frame CNN features): the test windows of
a clip scored and averaged. Used by the video-train recipes and by anything that scores clips.

`clip_score`: `logits` averages the windows' logits, then a softmax (XiaoYee's `VGG_GRU/train.py`
eval: `torch.mean` of the model outputs); `probabilities` averages the windows' softmax outputs.
Either way a clip's score is a probability vector, so val loss and accuracy read it alike."""
from __future__ import annotations

import numpy as np
import torch

from mrfer.infer import autocast, infer
from mrfer.nets.clip_gru import clip_mean, test_starts, window_batch, window_index

CLIP_SCORES = ("logits", "probabilities")


def clip_scores(window_logits: np.ndarray, owner: np.ndarray, n_clips: int, clip_score: str) -> np.ndarray:
    """(clips, classes) probabilities from the windows' logits and the clip owning each window."""
    logits = torch.as_tensor(np.asarray(window_logits, dtype=np.float64))
    if clip_score == "logits":
        return torch.from_numpy(clip_mean(logits.numpy(), owner, n_clips)).softmax(1).numpy()
    if clip_score == "probabilities":
        return clip_mean(logits.softmax(1).numpy(), owner, n_clips)
    raise ValueError(f"clip_score must be one of {CLIP_SCORES}, got {clip_score!r}")


@torch.no_grad()
def predict_clips(model: torch.nn.Module, features: torch.Tensor, clips_rows: list[np.ndarray], window: int,
                  stride: int, test_windows: str, clip_score: str, batch_size: int = 256,
                  use_amp: bool = False) -> np.ndarray:
    """(clips, classes) clip probabilities of a clip model (`mrfer.nets.clip_gru.ClipGRU`) over each
    clip's test windows (`test_windows`: full | cover). `clips_rows[k]` are clip k's rows of `features`."""
    model.eval()
    owners, windows = [], []
    for k, rows in enumerate(clips_rows):
        for s in test_starts(len(rows), window, stride, test_windows):
            owners.append(k)
            windows.append((rows, window_index(s, len(rows), window)))
    logits = []
    device = features.device
    for start in range(0, len(windows), batch_size):
        part = windows[start:start + batch_size]
        index, lengths = window_batch([w[0] for w in part], [w[1] for w in part])
        with autocast(device, use_amp):
            out = model(features[torch.from_numpy(index).to(device)], torch.from_numpy(lengths))
        logits.append(out.float().cpu().numpy())
    return clip_scores(np.concatenate(logits), np.asarray(owners), len(clips_rows), clip_score)


@torch.no_grad()
def score_clip(model: torch.nn.Module, encoder: torch.nn.Module, meta: dict, faces: np.ndarray,
               device="cpu") -> np.ndarray:
    """Class probabilities of one clip of cropped faces (uint8 NHWC, frame order), from a clip
    model and its frame encoder as `mrfer.nets.clip_gru.load_video` returns them."""
    cm = meta["cnn_meta"]
    feats = infer(encoder, faces, cm["mean"], cm["std"], device=device, what="features").to(device)
    return predict_clips(model, feats, [np.arange(len(faces))], meta["window"], meta["stride"],
                         meta["test_windows"], meta["clip_score"])[0]
