"""The clip model of the video-train recipe (the CNN-GRU of the VGG-Face fine-tune system): a GRU
over a window of per-frame CNN embeddings; the windows it sees; per-clip aggregation of window
(or frame) scores; and loading a trained clip-model file (`models/video.pt`) with the CNN that
embeds its frames. Not in the registry: it takes embeddings, not images. Scoring a clip of faces
is `mrfer.infer_clips.score_clip`; the clips themselves come from `mrfer.data.clips`. The window and
aggregation helpers are plain numpy (no dataset code), so scoring imports only this file.

Windows. The GRU sees windows of `window` frames: in training one window per clip per epoch,
its start drawn uniformly so it lies inside the clip (`train_starts`); at test time windows
start every `stride` frames and the last window ends on the clip's last frame, so every frame is
covered (`test_starts`). A clip (or window) shorter than `window` is padded by repeating its last
frame (for CK+ that is the apex: the face holds its expression) and its true length is kept; the
window's logits are the GRU outputs averaged over time (over the true length only with
`mask_padding`). A clip's score is the mean of its windows' softmax probabilities (`clip_mean`).
`majority_vote` is the per-clip vote of frame predictions (ties go to the tied class with the
higher mean probability), the baseline a clip model is compared with.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from mrfer.errors import InputError
from mrfer.nets import build, checkpoint


# ---------------------------------------------------------------- model


class ClipGRU(nn.Module):
    """(N, T, D) frame embeddings -> (N, classes) logits: standardised per dimension (the training
    frames' mean and std, buffers set by `set_input_stats`), GRU, linear head per step, logits
    averaged over time (over each window's true length with `mask_padding`)."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 128, layers: int = 1,
                 dropout: float = 0.2, mask_padding: bool = False):
        super().__init__()
        self.config = {"input_dim": input_dim, "num_classes": num_classes, "hidden": hidden,
                       "layers": layers, "dropout": dropout, "mask_padding": mask_padding}
        self.mask_padding = mask_padding
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(input_dim, hidden, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, num_classes)

    @torch.no_grad()
    def set_input_stats(self, features: torch.Tensor) -> None:
        self.input_mean.copy_(features.float().mean(0))
        self.input_std.copy_(features.float().std(0).clamp_min(1e-3) if len(features) > 1
                             else torch.ones_like(self.input_std))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        out, _ = self.gru(self.drop(x))
        logits = self.head(self.drop(out))
        if self.mask_padding and lengths is not None:
            steps = torch.arange(x.shape[1], device=x.device)[None]
            mask = (steps < lengths.to(x.device)[:, None]).to(logits.dtype)[..., None]
            return (logits * mask).sum(1) / mask.sum(1)
        return logits.mean(1)


# ---------------------------------------------------------------- windows


def window_index(start: int, length: int, window: int) -> np.ndarray:
    """Clip positions start .. start+window-1; past the clip's end, its last frame (the pad)."""
    return np.minimum(np.arange(start, start + window), length - 1)


def true_length(start: int, length: int, window: int) -> int:
    return max(1, min(window, length - start))


def window_batch(clips_rows: list[np.ndarray], starts, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, window) frame rows and (B,) true lengths for windows (clip rows, start)."""
    index = np.stack([rows[window_index(s, len(rows), window)] for rows, s in zip(clips_rows, starts)])
    lengths = np.array([true_length(s, len(rows), window) for rows, s in zip(clips_rows, starts)])
    return index, lengths


def train_starts(lengths: np.ndarray, window: int, gen: torch.Generator) -> np.ndarray:
    """One random window start per clip, uniform over the starts that keep it inside the clip."""
    lengths = np.asarray(lengths)
    choices = np.maximum(lengths - window, 0) + 1
    u = torch.rand(len(lengths), generator=gen, dtype=torch.float64).numpy()
    return np.minimum(np.floor(u * choices).astype(np.int64), choices - 1)


def test_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts every `stride` frames; the last window ends on the last frame."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


# ---------------------------------------------------------------- per-clip aggregation


def clip_mean(probs: np.ndarray, owner: np.ndarray, n_clips: int) -> np.ndarray:
    """Mean of the rows of `probs` (windows or frames) owned by each clip."""
    probs, owner = np.asarray(probs, dtype=np.float64), np.asarray(owner)
    sums = np.zeros((n_clips, probs.shape[1]))
    np.add.at(sums, owner, probs)
    counts = np.bincount(owner, minlength=n_clips)
    if (counts == 0).any():
        raise ValueError(f"clip {int(np.flatnonzero(counts == 0)[0])} has no rows to average")
    return sums / counts[:, None]


def majority_vote(probs: np.ndarray, owner: np.ndarray, n_clips: int) -> np.ndarray:
    """Most frequent per-frame prediction per clip; ties go to the higher mean probability."""
    probs, owner = np.asarray(probs, dtype=np.float64), np.asarray(owner)
    votes = np.zeros((n_clips, probs.shape[1]))
    np.add.at(votes, (owner, probs.argmax(1)), 1)
    mean = clip_mean(probs, owner, n_clips)
    tied = votes == votes.max(1, keepdims=True)
    return np.where(tied, mean, -np.inf).argmax(1)


# ---------------------------------------------------------------- model files


def load_video(path: str | os.PathLike, cnn_path: str | os.PathLike | None = None,
               device="cpu") -> tuple[ClipGRU, nn.Module, dict]:
    """(GRU, CNN, meta) from a video checkpoint. A frozen-CNN checkpoint names its CNN file
    (`cnn_path` overrides) and must match its params_hash; a fine-tuned one carries the CNN."""
    payload = checkpoint.load(path)
    if not isinstance(payload, dict) or payload.get("meta", {}).get("stage") != "video_train":
        raise InputError(f"{path}: not a video-train checkpoint")
    meta = payload["meta"]
    model = ClipGRU(**meta["gru"])
    model.load_state_dict(payload["state_dict"])
    if "cnn_state_dict" in payload:
        cm = meta["cnn_meta"]
        cnn = build(cm["arch"], num_classes=len(cm["classes"]), in_chans=cm["channels"],
                    image_size=cm["size"], **(cm.get("options") or {}))
        cnn.load_state_dict(payload["cnn_state_dict"])
    else:
        cnn_file = cnn_path or meta["cnn"]
        cnn, cnn_meta = checkpoint.load_model(cnn_file)
        if cnn_meta.get("params_hash") != meta["cnn_params_hash"]:
            raise InputError(f"{cnn_file}: CNN params_hash {cnn_meta.get('params_hash')} is not the one "
                             f"{path} was trained on ({meta['cnn_params_hash']})")
    return model.to(device).eval(), cnn.to(device).eval(), meta
