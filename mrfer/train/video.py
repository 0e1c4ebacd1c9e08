"""video-train recipe: a clip classifier, per-frame CNN embeddings -> GRU (the CNN-GRU of the
VGG-Face fine-tune system), compared with the same CNN's own head voting over the same clips.

Clips. The raw dataset is read with the reader named by `extract` (CK+ with `frames: all`, so a
clip is a whole neutral -> apex sequence; AFEW / Aff-Wild2 clips by their `sequence` id), every
frame's face is cropped exactly as the extract stage does (`extract.face_or_skip`, same size, margin
and colour), frames are grouped by `sequence` and ordered by `frame`. A clip's label is the label
its frames carry (for CK+ the sequence's emotion); a sequence whose frames change label
(Aff-Wild2's per-frame annotation) is cut into runs of one label, each its own clip
`<sequence>@<first frame>`. Contempt follows `extract.contempt`.

Split. Clips follow the assembled data's subject split: the train/val/test manifests give each
group (subject, else sequence: `mrfer.data.splits.groups_of`) its split, so no test subject is
ever trained on. A clip whose group is in no manifest takes the dataset's own split when the
reader gives one, and is otherwise skipped and reported.

Windows. The GRU sees windows of `window` frames: in training one window per clip per epoch, its
start drawn uniformly so it lies inside the clip; at test time windows start every `stride`
frames and the last window ends on the clip's last frame, so every frame is covered. A clip (or
window) shorter than `window` is padded by repeating its last frame (for CK+ that is the apex,
the natural pad: the face holds its expression) and its true length is kept; the window's
logits are the GRU outputs averaged over time (over the true length only with
`mask_padding: true`). A clip's score is the mean of its windows' softmax probabilities.

Frozen CNN (`freeze: true`): every frame is embedded once (`infer(what="features")`) and only the
GRU trains. `freeze: false` fine-tunes the CNN end to end with the GRU (lr `cnn_lr`), slower.
The comparison is the pipeline CNN's own head on every frame of the same test clips: the mean of
frame probabilities, and the majority vote (ties go to the tied class with the higher mean
probability).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrfer.data import datasets, labels, shards, splits
from mrfer.data.extract import check_config, face_or_skip
from mrfer.data.records import Record, SkipLog
from mrfer.errors import DatasetError
from mrfer.infer import autocast, infer, pick_device, seed_everything
from mrfer.metrics import summarize
from mrfer.io import write_json
from mrfer.nets import build
from mrfer.nets import checkpoint
from mrfer.train import loop
from mrfer.transforms import prepare, stats_tensors

log = logging.getLogger(__name__)

DEFAULTS = {
    "cnn": "models/multires.pt",  # the pipeline CNN that embeds every frame
    "freeze": True,               # true: embed once, train the GRU only; false: fine-tune end to end
    "options": None,              # reader options over extract.options (null: + frames: all where the reader has it)
    "window": 16,                 # frames per GRU window
    "stride": 8,                  # test-time window stride
    "hidden": 128,                # GRU hidden size
    "layers": 1,
    "dropout": 0.2,               # on the GRU input and output (and between layers)
    "mask_padding": False,        # true: average the GRU outputs over the true length only
    "epochs": 40,
    "batch_size": 32,             # windows per step
    "lr": 0.003,
    "cnn_lr": 0.0001,             # freeze: false only
    "weight_decay": 0.0001,
    "restore_best": True,         # keep the epoch with the best val clip accuracy
    "eval_batch_size": 256,
    "amp": True,                  # CUDA only
    "device": "auto",
}


# ---------------------------------------------------------------- clips


@dataclass
class Clip:
    """Frames of one labelled clip, in frame order. `rows` index the extracted face array."""
    id: str
    sequence: str
    label: int
    subject: str | None
    source_split: str | None
    records: list[Record] = field(default_factory=list, repr=False)
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    @property
    def group(self) -> str:
        return str(splits.groups_of([self.subject], [self.sequence])[0])


def reader_options(extract_cfg: dict, options: dict | None) -> dict:
    """`extract.options` with the video overrides on top; `frames: all` where the reader has it."""
    merged = dict(extract_cfg.get("options") or {})
    if options is None:
        if "frames" in datasets.get(extract_cfg["dataset"]).defaults:
            merged["frames"] = "all"
    else:
        merged.update(options)
    return merged


def group_clips(records: list[Record], n_classes: int, skips: SkipLog) -> list[Clip]:
    """Records -> clips: grouped by `sequence`, ordered by `frame`, cut where the label changes.

    Records without a sequence id and clips of a class the model lacks (contempt dropped) are
    reported in `skips`."""
    by_sequence: dict[str, list[Record]] = {}
    no_sequence = 0
    for record in records:
        if record.sequence in (None, ""):
            no_sequence += 1
            continue
        by_sequence.setdefault(str(record.sequence), []).append(record)
    if no_sequence:
        skips.add("(dataset)", f"not a clip: {no_sequence} records have no sequence id")
    clips = []
    for sequence in sorted(by_sequence):
        frames = sorted(by_sequence[sequence], key=lambda r: (r.frame is None, r.frame or 0, r.source))
        runs: list[list[Record]] = []
        for record in frames:
            if runs and runs[-1][-1].label == record.label:
                runs[-1].append(record)
            else:
                runs.append([record])
        for run in runs:
            clip_id = sequence if len(runs) == 1 else f"{sequence}@{run[0].frame}"
            label = int(run[0].label)
            if label >= n_classes:
                skips.add(clip_id, f"contempt dropped: extract.contempt is 'drop' ({len(run)} frames)")
                continue
            clips.append(Clip(clip_id, sequence, label, run[0].subject, run[0].split, list(run)))
    return clips


def manifest_groups(data_dir: str | os.PathLike) -> dict[str, set[str]]:
    """Group id (subject, else sequence) -> the assembled splits its rows are in."""
    out: dict[str, set[str]] = {}
    for split in splits.SPLITS:
        rows = shards.read_manifest(Path(data_dir) / split / "manifest.csv")
        groups = splits.groups_of([r["subject"] for r in rows], [r["sequence"] for r in rows])
        for group in set(groups.tolist()):
            if not group.startswith("row:"):
                out.setdefault(group, set()).add(split)
    return out


def assign_clip_splits(clips: list[Clip], groups: dict[str, set[str]],
                       skips: SkipLog) -> dict[str, list[Clip]]:
    """Each clip in its group's assembled split; otherwise its dataset's own split, else skipped."""
    out: dict[str, list[Clip]] = {name: [] for name in splits.SPLITS}
    for clip in clips:
        found = groups.get(clip.group, set())
        if len(found) == 1:
            out[next(iter(found))].append(clip)
        elif clip.source_split in found or (not found and clip.source_split in splits.SPLITS):
            out[clip.source_split].append(clip)
        elif found:
            skips.add(clip.id, f"ambiguous split: {clip.group} is in {sorted(found)} of the assembled data")
        else:
            skips.add(clip.id, f"not in the assembled data: {clip.group} is in no train/val/test "
                               f"manifest and the dataset gives no split")
    return out


def extract_clip_faces(clips: list[Clip], extract_cfg: dict, clip_skips: SkipLog,
                       frame_skips: SkipLog) -> tuple[np.ndarray, list[Clip]]:
    """Crop every frame's face like the extract stage; fills `clip.rows`. Frames that fail are
    reported and left out; a clip left with no frame is skipped."""
    size, channels = extract_cfg["size"], 1 if extract_cfg["color"] == "gray" else 3
    total = sum(len(c.records) for c in clips)
    faces = np.empty((total, size, size, channels), dtype=np.uint8)
    n, kept = 0, []
    for clip in clips:
        rows = []
        for record in clip.records:
            face, _ = face_or_skip(record, extract_cfg, frame_skips)
            if face is None:
                continue
            faces[n] = face
            rows.append(n)
            n += 1
        if not rows:
            clip_skips.add(clip.id, f"no face: none of its {len(clip.records)} frames gave a face")
            continue
        clip.rows = np.asarray(rows, dtype=np.int64)
        kept.append(clip)
    return faces[:n], kept


# ---------------------------------------------------------------- windows and votes


def window_index(start: int, length: int, window: int) -> np.ndarray:
    """Clip positions start .. start+window-1; past the clip's end, its last frame (the pad)."""
    return np.minimum(np.arange(start, start + window), length - 1)


def true_length(start: int, length: int, window: int) -> int:
    return max(1, min(window, length - start))


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


def check_video_config(cfg: dict) -> None:
    for key in ("window", "stride", "hidden", "layers", "epochs", "batch_size", "eval_batch_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"video_train.{key} must be an integer >= 1, got {cfg[key]!r}")
    if not 0 <= float(cfg["dropout"]) < 1:
        raise ValueError(f"video_train.dropout must be in [0, 1), got {cfg['dropout']!r}")
    if cfg["options"] is not None and not isinstance(cfg["options"], dict):
        raise ValueError(f"video_train.options must be a mapping or null, got {cfg['options']!r}")


def window_batch(clips_rows: list[np.ndarray], starts, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, window) frame rows and (B,) true lengths for windows (clip rows, start)."""
    index = np.stack([rows[window_index(s, len(rows), window)] for rows, s in zip(clips_rows, starts)])
    lengths = np.array([true_length(s, len(rows), window) for rows, s in zip(clips_rows, starts)])
    return index, lengths


@torch.no_grad()
def predict_clips(model: ClipGRU, features: torch.Tensor, clips_rows: list[np.ndarray], window: int,
                  stride: int, batch_size: int = 256, use_amp: bool = False) -> np.ndarray:
    """(clips, classes) clip scores: the mean of the softmax probabilities of each clip's test windows."""
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


# ---------------------------------------------------------------- the recipe


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


def cnn_summary(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("arch", "options", "classes", "size", "channels", "mean", "std",
                                     "params_hash")}


def frame_vote_metrics(frame_probs: np.ndarray, clips: list[Clip], n_classes: int) -> dict:
    owner = np.concatenate([np.full(len(c.rows), k) for k, c in enumerate(clips)])
    probs = frame_probs[np.concatenate([c.rows for c in clips])]
    y = [c.label for c in clips]
    return {"mean": summarize(y, clip_mean(probs, owner, len(clips)).argmax(1), n_classes),
            "majority": summarize(y, majority_vote(probs, owner, len(clips)), n_classes)}


def fit_video(cfg: dict, extract_cfg: dict, data: str | os.PathLike, out: str | os.PathLike,
              report: str | os.PathLike, live_dir: str | None = "dvclive/video_train") -> dict:
    """Train the clip GRU on the assembled data's subject split; write `out` and `report`."""
    check_video_config(cfg)
    check_config(extract_cfg)
    seed_everything(cfg["seed"])
    device = pick_device(cfg["device"])
    use_amp = bool(cfg["amp"]) and device.type == "cuda"
    window, stride = cfg["window"], cfg["stride"]

    cnn, cnn_meta = checkpoint.load_model(cfg["cnn"], device)
    classes = list(labels.class_names(extract_cfg["contempt"]))
    channels = 1 if extract_cfg["color"] == "gray" else 3
    if list(cnn_meta["classes"]) != classes:
        raise ValueError(f"{cfg['cnn']}: the CNN's classes {cnn_meta['classes']} differ from the extract "
                         f"params' {classes} (extract.contempt is {extract_cfg['contempt']!r})")
    if cnn_meta["size"] != extract_cfg["size"] or cnn_meta["channels"] != channels:
        raise ValueError(f"{cfg['cnn']}: the CNN takes {cnn_meta['size']} px x {cnn_meta['channels']} channels, "
                         f"extract gives {extract_cfg['size']} px {extract_cfg['color']}")
    n_classes = len(classes)
    norm = (cnn_meta["mean"], cnn_meta["std"])

    options = reader_options(extract_cfg, cfg["options"])
    records, input_skips = datasets.read(extract_cfg["dataset"], extract_cfg["root"], options)
    clip_skips = SkipLog()
    clips = group_clips(records, n_classes, clip_skips)
    by_split = assign_clip_splits(clips, manifest_groups(data), clip_skips)
    ordered = [c for name in splits.SPLITS for c in by_split[name]]
    faces, kept = extract_clip_faces(ordered, extract_cfg, clip_skips, input_skips)
    kept_ids = {id(c) for c in kept}
    by_split = {name: [c for c in by_split[name] if id(c) in kept_ids] for name in splits.SPLITS}
    for name in ("train", "test"):
        if not by_split[name]:
            raise DatasetError(f"no {name} clips ({len(clips)} clips read, {len(clip_skips)} skipped: "
                               f"{clip_skips.reasons()})")
    log.info("clips per split: %s (%d frames); skipped %d clips (%s)",
             {n: len(c) for n, c in by_split.items()}, len(faces), len(clip_skips), clip_skips.reasons())

    # Every frame's embedding (and the CNN's own head on it) once, before any fine-tuning.
    features = infer(cnn, faces, *norm, device=device, batch_size=cfg["eval_batch_size"], what="features")
    with torch.no_grad():
        frame_probs = cnn.head(features.to(device)).float().softmax(1).cpu().numpy()
    features = features.to(device)

    torch.manual_seed(cfg["seed"])
    model = ClipGRU(features.shape[1], n_classes, cfg["hidden"], cfg["layers"], float(cfg["dropout"]),
                    bool(cfg["mask_padding"])).to(device)
    train_frames = torch.from_numpy(np.concatenate([c.rows for c in by_split["train"]])).to(device)
    model.set_input_stats(features[train_frames])
    finetune = not cfg["freeze"]
    groups = [{"params": list(model.parameters()), "lr": cfg["lr"]}]
    if finetune:
        groups.append({"params": list(cnn.parameters()), "lr": cfg["cnn_lr"]})
        faces_t = torch.from_numpy(faces).to(device)
        mean_t, std_t = stats_tensors(*norm, device)
    else:
        cnn.requires_grad_(False)
    optimizer = torch.optim.Adam(groups, weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)

    def split_features(name: str) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Embeddings for a split's clips: the frozen ones, or the fine-tuned CNN's now."""
        rows = [c.rows for c in by_split[name]]
        if not finetune:
            return features, rows
        flat = np.concatenate(rows)
        feats = infer(cnn, faces[flat], *norm, device=device, batch_size=cfg["eval_batch_size"],
                      what="features").to(device)
        offsets = np.cumsum([0] + [len(r) for r in rows])
        return feats, [np.arange(offsets[k], offsets[k + 1]) for k in range(len(rows))]

    def evaluate(name: str) -> np.ndarray:
        feats, rows = split_features(name)
        return predict_clips(model, feats, rows, window, stride, cfg["eval_batch_size"], use_amp)

    train_clips = by_split["train"]
    train_rows = [c.rows for c in train_clips]
    train_y = torch.tensor([c.label for c in train_clips], dtype=torch.long)
    val_y = np.array([c.label for c in by_split["val"]])
    lengths = np.array([len(r) for r in train_rows])
    live = loop.open_live(live_dir)
    history, best, best_state, best_epoch = [], -1.0, None, 0
    with cpu_threads(device, None if finetune else 1):
        for epoch in range(cfg["epochs"]):
            model.train()
            if finetune:
                cnn.train()
            order = torch.randperm(len(train_clips), generator=gen).numpy()
            starts = train_starts(lengths[order], window, gen)
            total, correct, seen = 0.0, 0, 0
            for b in range(0, len(order), cfg["batch_size"]):
                picks = order[b:b + cfg["batch_size"]]
                if finetune and len(picks) * window < 2:  # BatchNorm cannot train on a single frame
                    continue
                index, true_lengths = window_batch([train_rows[k] for k in picks],
                                                   starts[b:b + cfg["batch_size"]], window)
                index_t = torch.from_numpy(index).to(device)
                yb = train_y[picks].to(device)
                with autocast(device, use_amp):
                    if finetune:  # each distinct frame once (pads repeat frames), then gathered
                        unique, inverse = torch.unique(index_t, return_inverse=True)
                        x = cnn.features(prepare(faces_t[unique], mean_t, std_t))[inverse]
                    else:
                        x = features[index_t]
                    logits = model(x.float(), torch.from_numpy(true_lengths))
                    loss = F.cross_entropy(logits.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += float(loss.detach()) * len(picks)
                correct += int((logits.detach().argmax(1) == yb).sum())
                seen += len(picks)
            scheduler.step()
            row = {"epoch": epoch + 1, "train_loss": round(total / max(seen, 1), 5),
                   "train_accuracy": round(correct / max(seen, 1), 4)}
            if len(val_y):
                val_probs = evaluate("val")
                true_probs = np.clip(val_probs[np.arange(len(val_y)), val_y], 1e-12, 1)
                row["val_loss"] = round(float(-np.log(true_probs).mean()), 5)
                row["val_accuracy"] = round(float((val_probs.argmax(1) == val_y).mean()), 4)
                if row["val_accuracy"] > best:
                    best, best_epoch = row["val_accuracy"], epoch + 1
                    best_state = (copy.deepcopy(model.state_dict()),
                                  copy.deepcopy(cnn.state_dict()) if finetune else None)
            history.append(row)
            log.info("video epoch %d: %s", epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
            loop.log_epoch(live, row)
    if live is not None:
        live.end()
    if cfg["restore_best"] and best_state is not None:
        model.load_state_dict(best_state[0])
        if finetune:
            cnn.load_state_dict(best_state[1])
    else:
        best_epoch = len(history)

    test_clips = by_split["test"]
    test_y = [c.label for c in test_clips]
    gru_metrics = summarize(test_y, evaluate("test").argmax(1), n_classes)
    votes = frame_vote_metrics(frame_probs, test_clips, n_classes)

    run_hash = checkpoint.params_hash("video_train", cfg, extract_cfg, options, cnn_meta["params_hash"])
    meta = {"stage": "video_train", "classes": classes, "gru": model.config, "window": window,
            "stride": stride, "freeze": bool(cfg["freeze"]), "cnn": str(cfg["cnn"]),
            "cnn_params_hash": cnn_meta["params_hash"], "cnn_meta": cnn_summary(cnn_meta),
            "extract": {k: extract_cfg[k] for k in ("dataset", "size", "color", "margin", "contempt")},
            "reader_options": options, "params_hash": run_hash, "seed": cfg["seed"],
            "versions": checkpoint.versions()}
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}
    if finetune:
        payload["cnn_state_dict"] = {k: v.detach().cpu() for k, v in cnn.state_dict().items()}
    checkpoint.save(out, payload)

    all_lengths = [len(c.rows) for c in kept]
    result = {
        "gru": gru_metrics,
        "frame_mean": votes["mean"],
        "frame_majority": votes["majority"],
        "classes": classes,
        "clips": {name: len(by_split[name]) for name in splits.SPLITS},
        "frames": {name: int(sum(len(c.rows) for c in by_split[name])) for name in splits.SPLITS},
        "clip_length": {"min": int(min(all_lengths)), "max": int(max(all_lengths)),
                        "mean": round(float(np.mean(all_lengths)), 2)},
        "test_clips_padded": int(sum(len(c.rows) < window for c in test_clips)),
        "window": window, "stride": stride, "freeze": bool(cfg["freeze"]),
        "val": history[best_epoch - 1] if history else {}, "best_epoch": best_epoch,
        "epochs_run": len(history),
        "skipped_clips": len(clip_skips), "skipped_clips_by_reason": clip_skips.reasons(),
        "skips": clip_skips.items,
        "skipped_inputs": len(input_skips), "skipped_inputs_by_reason": input_skips.reasons(),
        "params_hash": run_hash, "cnn_params_hash": cnn_meta["params_hash"], "seed": cfg["seed"],
    }
    write_json(report, result)
    log.info("test clip accuracy: GRU %.4f, frame mean %.4f, frame majority %.4f (%d clips)",
             gru_metrics["accuracy"], votes["mean"]["accuracy"], votes["majority"]["accuracy"], len(test_clips))
    return result


def load_video(path: str | os.PathLike, cnn_path: str | os.PathLike | None = None,
               device="cpu") -> tuple[ClipGRU, torch.nn.Module, dict]:
    """(GRU, CNN, meta) from a video checkpoint. A frozen-CNN checkpoint names its CNN file
    (`cnn_path` overrides) and must match its params_hash; a fine-tuned one carries the CNN."""
    payload = checkpoint.load(path)
    if not isinstance(payload, dict) or payload.get("meta", {}).get("stage") != "video_train":
        raise ValueError(f"{path}: not a video-train checkpoint")
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
            raise ValueError(f"{cnn_file}: CNN params_hash {cnn_meta.get('params_hash')} is not the one "
                             f"{path} was trained on ({meta['cnn_params_hash']})")
    return model.to(device).eval(), cnn.to(device).eval(), meta


@torch.no_grad()
def score_clip(model: ClipGRU, cnn: torch.nn.Module, meta: dict, faces: np.ndarray,
               device="cpu") -> np.ndarray:
    """Class probabilities of one clip of cropped faces (uint8 NHWC, frame order)."""
    cm = meta["cnn_meta"]
    feats = infer(cnn, faces, cm["mean"], cm["std"], device=device, what="features").to(device)
    return predict_clips(model, feats, [np.arange(len(faces))], meta["window"], meta["stride"])[0]
