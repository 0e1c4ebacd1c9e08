"""Figures for people (PNG). Plot data for `dvc plots` is written by the stages as JSON/CSV."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mrfer.io import atomic_path  # noqa: E402


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
