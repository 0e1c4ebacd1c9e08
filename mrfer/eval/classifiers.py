"""sklearn classifiers on network embeddings (FSR-FER's SVC: linear, with probabilities, on
L2-normalised features), and the network's own head as a 'classifier'.

`svc_fsrfer` is the same SVC under FSR-FER's classify protocol (`mrfer.eval.classify`): for
`+fsr` models fitted and tested on super-resolved features, full resolution included."""
from __future__ import annotations

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import SVC

CLASSIFIERS = ("head", "svc", "logreg", "svc_fsrfer")


def make(name: str, seed: int):
    """An unfitted sklearn pipeline: L2-normalise, then the classifier. Its `predict` is the argmax
    of the probabilities, as FSR-FER's classify scripts take it."""
    if name in ("svc", "svc_fsrfer"):
        # SVC(probability=True) is deprecated in scikit-learn 1.9; this is its documented replacement.
        return make_pipeline(Normalizer(), CalibratedClassifierCV(SVC(kernel="linear", random_state=seed),
                                                                  ensemble=False))
    if name == "logreg":
        return make_pipeline(Normalizer(), LogisticRegression(max_iter=2000, random_state=seed))
    raise ValueError(f"unknown sklearn classifier {name!r}; expected svc, svc_fsrfer or logreg")
