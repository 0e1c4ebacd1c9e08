"""Inference of the clip model (video-train's GRU over per-frame CNN embeddings): windows of a
clip scored and averaged. Used by the video-train recipe and by anything that scores clips."""
from __future__ import annotations

import numpy as np
import torch

from mrfer.infer import autocast, infer
from mrfer.nets.clip_gru import clip_mean, test_starts, window_batch


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
