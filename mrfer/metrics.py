"""FER metrics: overall accuracy, average accuracy (mean of per-class accuracies, MAFER's second
figure), macro-F1, and the confusion matrix. Classes absent from `y_true` are left out of the
per-class mean rather than counted as zero."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


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
    return {
        "accuracy": round(float((y_true == y_pred).mean()), 4),
        "average_accuracy": round(float(per_class[present].mean()), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=np.flatnonzero(present),
                                         average="macro", zero_division=0)), 4),
        "n": int(len(y_true)),
    }


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    return confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(n_classes)))
