"""Scale: t-SNE subsamples above its size param, seeded, and says so on the plot."""
import numpy as np

from mrfer import config, plots
from params_fixture import REPO


class FakeTSNE:
    """Records the rows t-SNE is asked to embed (the real one takes seconds even on small sets)."""
    fitted: list = []

    def __init__(self, **kwargs):
        pass

    def fit_transform(self, features):
        FakeTSNE.fitted.append(np.array(features))
        return features[:, :2]


def test_tsne_subsamples_above_the_param_seeded_and_says_so(tmp_path, monkeypatch):
    import sklearn.manifold
    monkeypatch.setattr(sklearn.manifold, "TSNE", FakeTSNE)
    rng = np.random.default_rng(0)
    features = {"base": rng.normal(size=(1000, 8)), "multires": rng.normal(size=(1000, 8))}
    labels = rng.integers(0, 3, 1000)
    FakeTSNE.fitted = []
    title = plots.tsne_panels(features, labels, ["a", "b", "c"], tmp_path / "t.png", seed=3, max_points=300)
    assert "300 of 1000 faces (seed 3)" in title
    assert (tmp_path / "t.png").is_file()
    base, multires = FakeTSNE.fitted
    assert base.shape == (300, 8)
    shown = plots.tsne_subsample(1000, 300, seed=3)
    assert np.array_equal(base, features["base"][shown])  # the same faces in every panel
    assert np.array_equal(multires, features["multires"][shown])
    assert np.array_equal(shown, plots.tsne_subsample(1000, 300, seed=3))  # seeded
    assert not np.array_equal(shown, plots.tsne_subsample(1000, 300, seed=4))
    assert len(np.unique(shown)) == 300

    FakeTSNE.fitted = []
    title = plots.tsne_panels(features, labels, ["a", "b", "c"], tmp_path / "t.png", seed=3, max_points=1000)
    assert "subsample" not in title and FakeTSNE.fitted[0].shape == (1000, 8)


def test_plots_section_is_read_from_params_yaml():
    cfg = config.load_section(REPO / "params.yaml", "plots", plots.PlotsParams)
    assert cfg.tsne_max_points > 1


def test_splits_of_one_face_groups_are_stratified_and_linear_time():
    """FER2013-like sets (no subjects): StratifiedKFold's split, not StratifiedGroupKFold's 0.7 ms a group."""
    import time

    from mrfer.data import splits
    n = 60000
    labels = np.random.default_rng(0).integers(0, 7, n)
    groups = splits.groups_of([None] * n, [None] * n)
    start = time.perf_counter()
    held = splits.held_out(labels, groups, 0.2, seed=0)
    folds = splits.assign_folds(labels, groups, 5, "subject", seed=0)
    assert time.perf_counter() - start < 10  # StratifiedGroupKFold: ~80 s here
    assert abs(held.mean() - 0.2) < 0.01
    for k in range(7):  # stratified: every class held out in proportion
        assert abs(held[labels == k].mean() - 0.2) < 0.02
    assert np.array_equal(np.bincount(folds), [n // 5] * 5)
    few = splits.groups_of(["a", "a", "b", "b", "c", "c"], [None] * 6)  # real groups: kept together
    mask = splits.held_out(np.array([0, 1, 0, 1, 0, 1]), few, 0.34, seed=0)
    assert mask[0::2].tolist() == mask[1::2].tolist()
