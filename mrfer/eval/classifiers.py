"""sklearn classifiers on network embeddings (FSR-FER's SVC: linear, with probabilities, on
L2-normalised features), and the network's own head as a 'classifier'.

`svc_fsrfer` is the same SVC under FSR-FER's classify protocol (`mrfer.eval.classify`): for
`+fsr` models fitted and tested on super-resolved features, full resolution included.

At scale: libsvm's cost grows between n² and n³ in the training rows, so above
`classify.libsvm_max_rows` the same model (a linear SVM, hinge loss, C = 1, sigmoid-calibrated
probabilities) is fitted by liblinear's dual coordinate descent, whose time is linear in the rows.
The two differ in the multi-class scheme (libsvm one-vs-one, liblinear one-vs-rest) and in that
liblinear regularises the intercept; `tests/test_classify.py` shows they agree.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import SVC, LinearSVC

log = logging.getLogger(__name__)

CLASSIFIERS = ("head", "svc", "logreg", "svc_fsrfer")
HEARTBEAT_S = 30  # a "still fitting" line this often, so a long fit never looks hung


def solver(name: str, n_rows: int, libsvm_max_rows: int) -> str:
    """The solver that fits classifier `name` on `n_rows` training rows (stated in the report)."""
    if name in ("svc", "svc_fsrfer"):
        return "libsvm" if n_rows <= libsvm_max_rows else "liblinear"
    if name == "logreg":
        return "lbfgs"
    raise ValueError(f"unknown sklearn classifier {name!r}; expected svc, svc_fsrfer or logreg")


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


def make_liblinear(name: str, seed: int):
    """`make`'s SVC fitted in linear time: liblinear, hinge loss (the SVM's own, not squared), C = 1,
    the same sigmoid calibration with the same internal 5-fold cross-validation."""
    if name not in ("svc", "svc_fsrfer"):
        raise ValueError(f"{name!r} has no liblinear variant; expected svc or svc_fsrfer")
    svm = LinearSVC(C=1.0, loss="hinge", dual=True, max_iter=5000, random_state=seed)
    return make_pipeline(Normalizer(), CalibratedClassifierCV(svm, method="sigmoid", ensemble=False))


@contextlib.contextmanager
def progress(what: str):
    """Log `what` when it starts, every HEARTBEAT_S seconds while it runs, and its time when done."""
    start, done = time.perf_counter(), threading.Event()

    def beat():
        while not done.wait(HEARTBEAT_S):
            log.info("%s: still running, %.0f s", what, time.perf_counter() - start)

    log.info("%s ...", what)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    log.info("%s: done in %.1f s", what, time.perf_counter() - start)
