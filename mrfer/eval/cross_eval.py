"""cross-eval: every trained model tested on every other dataset of the workspace, at every scale.

A model trained on dataset A is tested on dataset B's test split (all of B when B has no test
split), on the classes both have: the rows of B whose class the model knows, scored by the
model's logits over the classes B has (contempt follows `extract.contempt`, as everywhere). A
pair the model is not held out from (its lineage saw one of those faces) is left out and says so.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from mrfer.config import Section
from mrfer.data import lineage, lowres, shards
from mrfer.data.splits import SPLITS
from mrfer.eval.classify import resolution_px
from mrfer.infer import Device, infer, pick_device
from mrfer.io import atomic_path, write_json
from mrfer.metrics import summarize, warn_if_collapsed
from mrfer.nets import checkpoint

log = logging.getLogger(__name__)


class CrossEvalParams(Section):
    """`cross_eval`: which models are tested on the other datasets, and how."""

    models: list[str] = Field(min_length=1, description="model files under --models, by name (base, multires, distill)")
    batch_size: int = Field(gt=0, description="inference batch size")
    device: Device


def tested_rows(data: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The splits tested (test, or all of them when the set has no test rows), their HR faces'
    hashes and labels."""
    splits = ["test"] if len(shards.read_manifest(data / "test" / "manifest.csv")) else list(SPLITS)
    rows = [r for s in splits for r in shards.read_manifest(data / s / "manifest.csv")]
    hashes = np.concatenate([lineage.split_hashes(data, s) for s in splits])
    return splits, hashes, np.array([r["label"] for r in rows], dtype=np.int64)


def shared_classes(model_classes: list[str], stats: dict) -> list[str]:
    """The classes the model knows and the dataset has faces of, in the model's order."""
    present = set(stats.get("present", stats["classes"]))
    return [c for c in model_classes if c in present]


def score(logits: torch.Tensor, labels: np.ndarray, model_classes: list[str], data_classes: list[str],
          shared: list[str]) -> dict:
    """Metrics over the `shared` classes: rows of other classes dropped, logits of other classes
    ignored. Labels index `data_classes`; predictions index `model_classes`."""
    columns = [model_classes.index(c) for c in shared]
    label_names = np.array(data_classes)[labels]
    keep = np.isin(label_names, shared)
    y_true = np.array([shared.index(c) for c in label_names[keep]], dtype=np.int64)
    y_pred = logits[torch.from_numpy(keep)][:, columns].argmax(1).numpy()
    return summarize(y_true, y_pred, len(shared))


def evaluate_pair(model, meta: dict, seen: dict, data: Path, scales: list[str], cfg: CrossEvalParams,
                  device: torch.device) -> dict:
    """One model on one dataset at every scale (or why the pair is left out)."""
    stats = shards.read_stats(data)
    splits, hashes, labels = tested_rows(data)
    shared_faces = lineage.overlap(seen, hashes)
    if shared_faces:
        return {"skipped": f"not held out: the model's lineage saw {shared_faces} of these faces"}
    if (meta["size"], meta["channels"]) != (stats["size"][0], stats["channels"]):
        return {"skipped": f"input differs: model {meta['size']} px x {meta['channels']}, data "
                           f"{stats['size'][0]} px x {stats['channels']} (extract both at one size and colour)"}
    shared = shared_classes(list(meta["classes"]), stats)
    if len(shared) < 2:
        return {"skipped": f"fewer than 2 classes in common ({shared})"}
    out = {"splits": splits, "classes": shared, "metrics": {}}
    for scale in ["hr", *scales]:
        images = np.concatenate([lowres.load_split(data, s, scale)[0] for s in splits])
        logits = infer(model, images, meta["mean"], meta.get("std"), device, cfg.batch_size)
        out["metrics"][scale] = score(logits, labels, list(meta["classes"]), list(stats["classes"]), shared)
        warn_if_collapsed(out["metrics"][scale], f"{data.name} at {scale}", shared)
    return out


def cross_eval(cfg: CrossEvalParams, models_dir: str | os.PathLike, data_root: str | os.PathLike, train_on: str,
               datasets: list[str], scales: list[str], kernel: str, report: str | os.PathLike,
               table: str | os.PathLike, curves: str | os.PathLike) -> dict:
    """Every model of `cfg.models` (trained on `train_on`) on every other dataset; write the JSON
    report, a Markdown table and one accuracy-vs-resolution CSV per target dataset."""
    device = pick_device(cfg.device)
    targets = [d for d in datasets if d != train_on]
    results: dict = {"trained_on": train_on, "scales": ["hr", *scales], "targets": {}}
    for name in cfg.models:
        path = Path(models_dir) / f"{name}.pt"
        model, meta = checkpoint.load_model(path, device)
        seen = lineage.from_meta(meta, path)
        for target in targets:
            entry = evaluate_pair(model, meta, seen, Path(data_root) / target, scales, cfg, device)
            results["targets"].setdefault(target, {})[name] = entry
            log.info("%s on %s: %s", name, target, entry.get("skipped") or
                     {s: m["accuracy"] for s, m in entry["metrics"].items()})
    write_json(report, results)
    Path(table).write_text(markdown(results))
    write_curves(curves, results, int(shards.read_stats(Path(data_root) / train_on)["size"][0]), kernel)
    return results


def markdown(results: dict) -> str:
    """The report as a table: model x target dataset rows, accuracy / average accuracy per scale."""
    scales = results["scales"]
    lines = [f"Trained on `{results['trained_on']}`, tested on each other dataset (accuracy / average accuracy "
             "over the classes both have; * = collapsed onto one class).", "",
             "| model | tested on | classes | " + " | ".join(scales) + " |",
             "|---|---|---|" + "---|" * len(scales)]
    for target, by_model in results["targets"].items():
        for name, entry in by_model.items():
            if "skipped" in entry:
                lines.append(f"| {name} | {target} | - | left out: {entry['skipped']} |" + " |" * (len(scales) - 1))
                continue
            cells = [f"{m['accuracy']:.3f} / {m['average_accuracy']:.3f}{' *' if m['collapsed'] else ''}"
                     for m in (entry["metrics"][s] for s in scales)]
            lines.append(f"| {name} | {target} ({'+'.join(entry['splits'])}) | {len(entry['classes'])} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_curves(directory: str | os.PathLike, results: dict, size: int, kernel: str) -> None:
    """`<target>.csv`: scale, resolution_px, accuracy_<model> for the models tested on it."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for target, by_model in results["targets"].items():
            tested = {n: e for n, e in by_model.items() if "metrics" in e}
            with open(tmp / f"{target}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["scale", "resolution_px", *(f"accuracy_{n}" for n in tested)])
                for scale in sorted(results["scales"], key=lambda s: resolution_px(size, s, kernel)):
                    writer.writerow([scale, resolution_px(size, scale, kernel),
                                     *(e["metrics"][scale]["accuracy"] for e in tested.values())])
