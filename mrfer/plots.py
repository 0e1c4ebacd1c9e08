"""Figures for people (PNG). Plot data for `dvc plots` is written by the stages as JSON/CSV."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401
import numpy as np  # noqa: E402
from pydantic import Field  # noqa: E402

from mrfer.config import Section  # noqa: E402
from mrfer.data import shards  # noqa: E402
from mrfer.io import atomic_path  # noqa: E402
from mrfer.metrics import confusion  # noqa: E402


class PlotsParams(Section):
    """`plots`: settings of the figures the plots stage draws."""

    tsne_max_points: int = Field(gt=1, description="t-SNE of at most this many test faces: a seeded random "
                                                  "subsample above it, stated on the plot")


def save_figure(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def mosaic(images: np.ndarray, labels: np.ndarray, n_classes: int, per_class: int,
           pick: dict[int, np.ndarray]) -> np.ndarray:
    """(n_classes*H, per_class*W) grey/RGB mosaic: row = class, columns = the picked faces."""
    h, w, c = images.shape[1:]
    sheet = np.full((n_classes * h, per_class * w, c), 255, dtype=np.uint8)
    for k in range(n_classes):
        for j, i in enumerate(pick.get(k, [])[:per_class]):
            sheet[k * h:(k + 1) * h, j * w:(j + 1) * w] = images[i]
    return sheet


def contact_sheet(images_by_scale: dict[str, np.ndarray], labels: np.ndarray, classes: list[str],
                  path: str | os.PathLike, per_class: int = 6, seed: int = 0) -> None:
    """A grid of faces per class (rows) at each scale (panels), same faces in every panel."""
    rng = np.random.default_rng(seed)
    pick = {k: rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in range(len(classes))}
    fig, axes = plt.subplots(1, len(images_by_scale), figsize=(3.2 * len(images_by_scale), 0.55 * len(classes) + 1.2))
    axes = np.atleast_1d(axes)
    for ax, (scale, images) in zip(axes, images_by_scale.items()):
        sheet = mosaic(np.asarray(images), labels, len(classes), per_class, pick)
        h = images.shape[1]
        ax.imshow(sheet.squeeze(-1) if sheet.shape[-1] == 1 else sheet, cmap="gray", vmin=0, vmax=255)
        ax.set_title("full resolution" if scale == "hr" else f"{scale} down, then up", fontsize=10)
        ax.set_yticks([(k + 0.5) * h for k in range(len(classes))])
        ax.set_yticklabels(classes if ax is axes[0] else [], fontsize=9)
        ax.set_xticks([])
    fig.suptitle("Faces per class (rows) at each resolution", fontsize=11)
    save_figure(fig, path)


def tsne_subsample(n: int, max_points: int | None, seed: int) -> np.ndarray:
    """Sorted row indices t-SNE draws: all rows, or a seeded random `max_points` of them (t-SNE's
    time and memory grow faster than the rows: a 300k-face test set would take hours)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def tsne_panels(embeddings: dict[str, np.ndarray], labels: np.ndarray, classes: list[str],
                path: str | os.PathLike, seed: int = 0, max_points: int | None = None) -> str:
    """t-SNE of test embeddings, one panel per model, points coloured by class (MAFER's figure);
    above `max_points` faces, the same seeded subsample in every panel, stated in the title."""
    from sklearn.manifold import TSNE
    n = len(labels)
    shown = tsne_subsample(n, max_points, seed)
    labels = np.asarray(labels)[shown]
    fig, axes = plt.subplots(1, len(embeddings), figsize=(4.2 * len(embeddings), 4.4), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (model, features) in zip(axes[0], embeddings.items()):
        features = np.asarray(features)[shown]
        perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
        for k, name in enumerate(classes):
            mask = labels == k
            ax.scatter(points[mask, 0], points[mask, 1], s=9, color=colors(k), label=name, alpha=0.8)
        ax.set_title(model, fontsize=11)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, title="class")
    title = "t-SNE of test-set embeddings (full resolution)"
    if len(shown) < n:
        title += f"\nrandom subsample of {len(shown)} of {n} faces (seed {seed})"
    fig.suptitle(title, fontsize=12)
    save_figure(fig, path)
    return title


def confusion_grid(matrices: dict[str, dict[str, np.ndarray]], classes: list[str], path: str | os.PathLike,
                   title: str) -> None:
    """Rows: models; columns: one per named matrix, each drawn as counts and row-normalised."""
    models = list(matrices)
    columns = list(next(iter(matrices.values())))
    fig, axes = plt.subplots(len(models), 2 * len(columns), squeeze=False,
                             figsize=(3.6 * 2 * len(columns), 3.4 * len(models)))
    for r, model in enumerate(models):
        for c, column in enumerate(columns):
            counts = matrices[model][column]
            normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            for j, (values, kind) in enumerate(((counts, "counts"), (normalised, "row-normalised"))):
                ax = axes[r][2 * c + j]
                ax.imshow(values, cmap="Blues", vmin=0, vmax=values.max() if kind == "counts" else 1)
                for (i, k), v in np.ndenumerate(values):
                    text = f"{v:.0f}" if kind == "counts" else f"{v:.2f}"
                    ax.text(k, i, text, ha="center", va="center", fontsize=6.5,
                            color="white" if v > 0.6 * (values.max() or 1) else "black")
                ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=7)
                ax.set_yticks(range(len(classes)), classes, fontsize=7)
                ax.set_xlabel("predicted", fontsize=8)
                ax.set_ylabel("true", fontsize=8)
                ax.set_title(f"{model}, {column}: {kind}", fontsize=8.5)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)


def accuracy_vs_resolution(curves: dict[str, tuple[list[int], list[float]]], path: str | os.PathLike,
                           title: str = "Test accuracy vs face resolution") -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, (px, accuracy) in curves.items():
        ax.plot(px, [100 * a for a in accuracy], marker="o", label=model)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({p for px, _ in curves.values() for p in px}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("face short side seen by the model (px, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(title="model")
    ax.set_title(title)
    save_figure(fig, path)


def training_curves(curves: dict[str, dict[str, list[float]]], path: str | os.PathLike) -> None:
    """One panel per training run: loss (left axis) and accuracies (right axis) per epoch."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False)
    for ax, (run, metrics) in zip(axes[0], curves.items()):
        losses = [k for k in metrics if k.endswith("loss")]
        for key in losses:  # runs log different metrics in different phases: each its own length
            ax.plot(range(1, len(metrics[key]) + 1), metrics[key], label=key,
                    linestyle="--" if key.startswith("val") else "-")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        twin = ax.twinx()
        for key, color in (("train_accuracy", "tab:green"), ("val_accuracy", "tab:red")):
            if key in metrics:
                twin.plot(range(1, len(metrics[key]) + 1), [100 * v for v in metrics[key]], color=color, label=key)
        twin.set_ylabel("accuracy (%)")
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
        ax.set_title(run, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def read_tsv_curves(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """dvclive's per-metric TSV files (step, value) -> {metric: values}."""
    import csv
    from pathlib import Path
    curves = {}
    for path in sorted(Path(run_dir).glob("*.tsv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        curves[path.stem] = [float(r[path.stem]) for r in rows]
    return curves


def scale_order(scale: str) -> float:
    """Sort key from full resolution down: hr, x2, x3 ... then 64px, 32px ... (lower is later)."""
    if scale == "hr":
        return -1e9
    return float(scale[1:]) if scale.startswith("x") else -float(scale[:-2])


def assembled_contact_sheet(assembled: str | os.PathLike, path: str | os.PathLike, seed: int) -> None:
    """The contact sheet of the assembled test faces at full resolution, a middle and the lowest scale."""
    stats = shards.read_stats(assembled)
    scales = sorted((p.stem for p in (Path(assembled) / "test").glob("*.npy")), key=scale_order)
    low = scales[1:]
    shown = ["hr", *dict.fromkeys([low[(len(low) - 1) // 2], low[-1]] if low else [])]
    rows = shards.load_split(assembled, "test")[1]
    test = {s: shards.load_split(assembled, "test", s)[0] for s in shown}
    contact_sheet(test, np.array([r["label"] for r in rows]), list(stats["classes"]), path, seed=seed)


def render_reports(predictions: str | os.PathLike, curves_dir: str | os.PathLike, live_runs: dict[str, str],
                   kfold_confusions: list[str], assembled: str | os.PathLike, out_dir: str | os.PathLike,
                   seed: int, tsne_max_points: int | None = None) -> list[str]:
    """Every PNG of reports/plots/ plus the confusion CSVs `dvc plots` draws (`<model>_hr.csv` and
    `<model>_lowest.csv`, so dvc.yaml names them whatever the scales). Returns the PNG names."""
    import csv
    import json

    saved = np.load(predictions)
    classes = [str(c) for c in saved["classes"]]
    y_true = saved["y_true"]
    models = sorted({k.split("/")[0] for k in saved.files if "/" in k}, key=lambda m: (len(m), m))
    scales = sorted({k.split("/")[1] for k in saved.files if k.count("/") == 2 and k.split("/")[1] != "hr"},
                    key=scale_order)
    lowest = scales[-1] if scales else "hr"
    clf = "head"
    written = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        tsne_panels({m: saved[f"{m}/hr/features"] for m in models}, y_true, classes, tmp / "tsne.png", seed,
                    tsne_max_points)
        matrices = {m: {s: confusion(y_true, saved[f"{m}/{s}/{clf}"], len(classes)) for s in ("hr", lowest)}
                    for m in models}
        confusion_grid(matrices, classes, tmp / "confusion.png",
                       f"Confusion matrices (test set, network head) at full resolution and {lowest}")
        (tmp / "confusion").mkdir()
        for m in models:
            for s, name in (("hr", "hr"), (lowest, "lowest")):
                with open(tmp / "confusion" / f"{m.replace('+', '_')}_{name}.csv", "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["actual", "predicted"])
                    writer.writerows((classes[a], classes[b]) for a, b in zip(y_true, saved[f"{m}/{s}/{clf}"]))
        curves = {}
        for path in sorted(Path(curves_dir).glob("*.csv")):
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            curves[path.stem.replace("_", "+")] = ([int(r["resolution_px"]) for r in rows],
                                                   [float(r[f"accuracy_{clf}"]) for r in rows])
        accuracy_vs_resolution(curves, tmp / "accuracy_vs_resolution.png",
                               "Test accuracy vs face resolution (network head)")
        runs = {name: read_tsv_curves(d) for name, d in live_runs.items() if Path(d).is_dir()}
        if runs:
            training_curves(runs, tmp / "training_curves.png")
        if kfold_confusions:
            summed: dict = {}
            for path in kfold_confusions:
                fold = json.loads(Path(path).read_text())["confusion"]
                for m, per_scale in fold.items():
                    for s in ("hr", lowest):
                        summed.setdefault(m, {}).setdefault(s, 0)
                        summed[m][s] = summed[m][s] + np.array(per_scale[s])
            confusion_grid(summed, classes, tmp / "kfold_confusion.png",
                           f"k-fold confusion matrices summed over {len(kfold_confusions)} folds")
        assembled_contact_sheet(assembled, tmp / "contact_sheet.png", seed)
        written = sorted(p.name for p in tmp.glob("*.png"))
    return written
