"""sklearn classifiers on network embeddings (FSR-FER's protocol: linear SVC with probabilities
on L2-normalised features), and the network's own head as a third 'classifier'."""
from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import SVC

CLASSIFIERS = ("head", "svc", "logreg")


def make(name: str, seed: int):
    """An unfitted sklearn pipeline: L2-normalise, then the classifier."""
    if name == "svc":
        # SVC(probability=True) is deprecated in scikit-learn 1.9; this is its documented replacement.
        return make_pipeline(Normalizer(), CalibratedClassifierCV(SVC(kernel="linear", random_state=seed),
                                                                  ensemble=False))
    if name == "logreg":
        return make_pipeline(Normalizer(), LogisticRegression(max_iter=2000, random_state=seed))
    raise ValueError(f"unknown sklearn classifier {name!r}; expected svc or logreg")
