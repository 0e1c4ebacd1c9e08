"""classify at scale: libsvm up to `libsvm_max_rows`, liblinear's fit of the same SVM above; they agree."""
import json

import numpy as np
import pytest
import torch

from assembled_fixture import CLASSES, make_assembled
from mrfer.eval import classifiers, classify
from mrfer.nets import checkpoint
from mrfer.nets.registry import build
from params_fixture import section

SCALES = ["x2", "x4"]


def blobs(n: int, seed: int, dim: int = 16, classes: int = 5):
    """Overlapping Gaussian classes: a linear SVM gets most, not all, right."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1.0, (classes, dim))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(0, 1.2, (n, dim)), y


def test_solver_switches_at_the_size_param():
    assert classifiers.solver("svc", 1000, 1000) == "libsvm"
    assert classifiers.solver("svc_fsrfer", 1001, 1000) == "liblinear"
    assert classifiers.solver("logreg", 10**6, 1000) == "lbfgs"


def test_libsvm_and_liblinear_fits_of_the_svm_agree():
    x, y = blobs(1500, seed=0)
    x_test, y_test = blobs(600, seed=1)
    exact = classifiers.make("svc", seed=0).fit(x, y).predict(x_test)
    linear = classifiers.make_liblinear("svc", seed=0).fit(x, y).predict(x_test)
    accuracy = (exact == y_test).mean(), (linear == y_test).mean()
    assert 0.6 < accuracy[0] < 0.96  # a set where the solvers could disagree
    assert abs(accuracy[0] - accuracy[1]) <= 0.03
    assert (exact == linear).mean() >= 0.9


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny assembled set and an untrained (random) net: its embeddings still separate the blobs."""
    root = tmp_path_factory.mktemp("classify")
    data = make_assembled(root / "assembled", n_per_class=(40, 8, 20))
    torch.manual_seed(0)
    model = build("baseline_cnn", num_classes=len(CLASSES), in_chans=1, image_size=32, width=0.125)
    meta = {"arch": "baseline_cnn", "options": {"width": 0.125}, "classes": CLASSES, "size": 32, "channels": 1,
            "mean": [110.0], "std": [30.0]}
    (root / "models").mkdir()
    checkpoint.save_model(root / "models" / "base.pt", model, meta)
    return root, data


def run(setup, tmp_path, libsvm_max_rows: int) -> dict:
    root, data = setup
    cfg = section("classify", classify.ClassifyParams, models=["base"], classifiers=["head", "svc", "svc_fsrfer"],
                  libsvm_max_rows=libsvm_max_rows, device="cpu", seed=0)
    out = tmp_path / str(libsvm_max_rows)
    results = classify.classify(cfg, data, root / "models", SCALES, "bicubic_aa", out / "c.json", out / "c.md",
                                out / "curves", out / "p.npz")
    assert json.loads((out / "c.json").read_text()) == results
    return results, np.load(out / "p.npz"), (out / "c.md").read_text()


def test_classify_states_the_solver_and_the_two_agree(setup, tmp_path):
    small, small_pred, small_md = run(setup, tmp_path, libsvm_max_rows=10**6)
    large, large_pred, large_md = run(setup, tmp_path, libsvm_max_rows=10)  # 120 training rows: liblinear
    for scale in ("hr", *SCALES):
        assert small["base"][scale]["svc"]["solver"] == "libsvm"
        assert large["base"][scale]["svc"]["solver"] == "liblinear"
        assert "solver" not in small["base"][scale]["head"]  # the network's own head has none
        assert abs(small["base"][scale]["svc"]["accuracy"] - large["base"][scale]["svc"]["accuracy"]) <= 0.1
        agree = (small_pred[f"base/{scale}/svc"] == large_pred[f"base/{scale}/svc"]).mean()
        assert agree >= 0.85, (scale, agree)
    assert "| base | svc | libsvm |" in small_md and "| base | svc | liblinear |" in large_md
    assert "| base | head | network |" in small_md


def test_embeddings_are_computed_once_per_split_and_scale(setup, tmp_path, monkeypatch):
    calls = []
    real = classify.Embedder.embed

    def spy(self, images, scale, super_resolve_hr):
        calls.append((len(images), scale))
        return real(self, images, scale, super_resolve_hr)

    monkeypatch.setattr(classify.Embedder, "embed", spy)
    run(setup, tmp_path, libsvm_max_rows=10**6)
    # test at hr, x2, x4 + train at hr, shared by svc and svc_fsrfer (a plain model): four passes
    assert sorted(calls) == sorted([(60, "hr"), (60, "x2"), (60, "x4"), (120, "hr")])
