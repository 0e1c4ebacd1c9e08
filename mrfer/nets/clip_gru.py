"""The clip model of the video-train recipes: a GRU over a window of per-frame CNN features; the
frame encoder that gives them; the windows it sees; per-clip aggregation of window (or frame)
scores; and loading a trained clip-model file (`models/video.pt`). Not in the registry: it takes
features, not images. Scoring a clip of faces is `mrfer.infer_clips.score_clip`; the clips
themselves come from `mrfer.data.clips`. The window and aggregation helpers are plain numpy.

Two GRU layouts (`ClipGRU(layout=...)`):
  vgg_gru   XiaoYee/emotion_classification `VGG_GRU/VGG_gru.py`: GRU(features -> hidden), dropout
            on the GRU outputs, mean over time, Linear(hidden, classes). No input scaling.
  mrfer_gru this repo's earlier head: features standardised by the training frames' mean/std,
            dropout on the GRU input and output, Linear per step, logits averaged over time.

Windows. Training draws one window per clip per epoch (`train_positions`):
  spread      (`VGG_GRU/dataset.py` load_data_label) `window` distinct frames drawn at random over
              the whole clip, kept in order, so the apex (last frame) can be drawn;
  contiguous  `window` consecutive frames from a random start.
A clip shorter than `window` gives all its frames, then its last frame repeated (both modes, as
the published code). At test time windows start every `stride` frames (`test_starts`):
  full        (`load_test_data_label`) full windows only; a clip shorter than `window` has one,
              padded with its last frame; frames after the last full window are not seen;
  cover       the last window ends on the clip's last frame, so every frame is covered.
A window's true length (frames before the padding) is kept for `mask_padding`.
`majority_vote` is the per-clip vote of frame predictions (ties go to the tied class with the
higher mean probability), a baseline a clip model is compared with.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from mrfer.errors import InputError
from mrfer.nets import build, checkpoint

LAYOUTS = ("vgg_gru", "mrfer_gru")
FRAME_LAYERS = ("embedding", "fc6")


# ---------------------------------------------------------------- model


class ClipGRU(nn.Module):
    """(N, T, D) frame features -> (N, classes) logits, in one of the two `LAYOUTS` (module doc)."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 128, layers: int = 1,
                 dropout: float = 0.2, mask_padding: bool = False, layout: str = "mrfer_gru"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"GRU layout must be one of {LAYOUTS}, got {layout!r}")
        self.config = {"input_dim": input_dim, "num_classes": num_classes, "hidden": hidden,
                       "layers": layers, "dropout": dropout, "mask_padding": mask_padding, "layout": layout}
        self.mask_padding = mask_padding
        self.layout = layout
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

    def time_mean(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Mean over time, over each window's true length with `mask_padding`."""
        if not (self.mask_padding and lengths is not None):
            return x.mean(1)
        steps = torch.arange(x.shape[1], device=x.device)[None]
        mask = (steps < lengths.to(x.device)[:, None]).to(x.dtype)[..., None]
        return (x * mask).sum(1) / mask.sum(1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.layout == "vgg_gru":
            out, _ = self.gru(x)
            return self.head(self.time_mean(self.drop(out), lengths))
        x = (x - self.input_mean) / self.input_std
        out, _ = self.gru(self.drop(x))
        return self.time_mean(self.head(self.drop(out)), lengths)


class FrameEncoder(nn.Module):
    """A CNN's per-frame features for the GRU: `embedding` is its `features()` (the input of its
    head); `fc6` is VGG-Face's conv layers + fc6 + ReLU (`VGG_gru.py`), for a `vggface` CNN only."""

    def __init__(self, cnn: nn.Module, layer: str):
        super().__init__()
        if layer not in FRAME_LAYERS:
            raise ValueError(f"frame layer must be one of {FRAME_LAYERS}, got {layer!r}")
        if layer == "fc6" and not hasattr(cnn, "fc6_features"):
            raise InputError(f"frame_layer fc6 needs a vggface CNN, not a {type(cnn).__name__}")
        self.cnn = cnn
        self.layer = layer

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.fc6_features(x) if self.layer == "fc6" else self.cnn.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# ---------------------------------------------------------------- windows


def window_index(start: int, length: int, window: int) -> np.ndarray:
    """Clip positions start .. start+window-1; past the clip's end, its last frame (the pad)."""
    return np.minimum(np.arange(start, start + window), length - 1)


def spread_positions(length: int, window: int, gen: torch.Generator) -> np.ndarray:
    """`window` distinct clip positions drawn at random over the whole clip, sorted; a clip
    shorter than `window`: every frame, then the last one repeated (`VGG_GRU/dataset.py`)."""
    if length < window:
        return window_index(0, length, window)
    return np.sort(torch.randperm(length, generator=gen)[:window].numpy())


def train_positions(lengths, window: int, sampling: str, gen: torch.Generator) -> list[np.ndarray]:
    """One training window (clip positions) per clip: `spread` or `contiguous` (module doc)."""
    if sampling == "spread":
        return [spread_positions(int(n), window, gen) for n in lengths]
    if sampling != "contiguous":
        raise ValueError(f"window sampling must be spread or contiguous, got {sampling!r}")
    starts = train_starts(np.asarray(lengths), window, gen)
    return [window_index(int(s), int(n), window) for s, n in zip(starts, lengths)]


def window_batch(clips_rows: list[np.ndarray], positions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(B, window) frame rows and (B,) true lengths (positions before the padding repeats the
    last one) for windows given as (clip rows, clip positions)."""
    index = np.stack([rows[p] for rows, p in zip(clips_rows, positions)])
    lengths = np.array([len(np.unique(p)) for p in positions])
    return index, lengths


def train_starts(lengths: np.ndarray, window: int, gen: torch.Generator) -> np.ndarray:
    """One random window start per clip, uniform over the starts that keep it inside the clip."""
    lengths = np.asarray(lengths)
    choices = np.maximum(lengths - window, 0) + 1
    u = torch.rand(len(lengths), generator=gen, dtype=torch.float64).numpy()
    return np.minimum(np.floor(u * choices).astype(np.int64), choices - 1)


def test_starts(length: int, window: int, stride: int, windows: str = "full") -> list[int]:
    """Starts every `stride` frames: `full` windows only, or `cover` (the last ends on the last frame)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if windows == "cover" and starts[-1] != length - window:
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
               device="cpu") -> tuple[ClipGRU, FrameEncoder, dict]:
    """(GRU, frame encoder, meta) from a video checkpoint. A frozen-CNN checkpoint names its CNN
    file (`cnn_path` overrides) and must match its params_hash; a fine-tuned one carries the CNN."""
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
    encoder = FrameEncoder(cnn, meta.get("frame_layer", "embedding"))
    return model.to(device).eval(), encoder.to(device).eval(), meta
