"""FER metrics: overall accuracy, average accuracy (mean of per-class accuracies, MAFER's second
figure), macro-F1, and the confusion matrix. Classes absent from `y_true` are left out of the
per-class mean rather than counted as zero.

A model that answers one class for almost every face is useless however its accuracy reads (it
equals that class's share), so every summary says whether the predictions collapsed.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

log = logging.getLogger(__name__)

COLLAPSE_SHARE = 0.9  # one class predicted for at least this share of the faces: collapsed


def summarize(y_true, y_pred, n_classes: int) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no samples to score")
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
    support = cm.sum(axis=1)
    present = support > 0
    per_class = np.divide(np.diag(cm), support, out=np.zeros(n_classes), where=present)
    predicted = np.bincount(y_pred, minlength=n_classes)
    top = int(predicted.argmax())
    collapsed = bool(predicted[top] >= COLLAPSE_SHARE * len(y_pred))
    return {
        "accuracy": round(float((y_true == y_pred).mean()), 4),
        "average_accuracy": round(float(per_class[present].mean()), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=np.flatnonzero(present),
                                         average="macro", zero_division=0)), 4),
        "n": int(len(y_true)),
        "collapsed": collapsed,
        **({"collapsed_to": top, "collapsed_share": round(float(predicted[top] / len(y_pred)), 4)} if collapsed else {}),
    }


def warn_if_collapsed(summary: dict, what: str, classes: list[str]) -> None:
    """Log a warning naming the class when `summary` says the predictions collapsed."""
    if summary["collapsed"]:
        log.warning("%s predicts '%s' for %.0f %% of %d faces: the model is not usable here (its accuracy, "
                    "%.3f, mostly measures how common that class is)", what, classes[summary["collapsed_to"]],
                    100 * summary["collapsed_share"], summary["n"], summary["accuracy"])


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    return confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(n_classes)))
