"""cross-eval: a model on another dataset, on the classes both have, and only where held out."""
import json

import numpy as np
import pytest
import torch

from assembled_fixture import CLASSES, make_assembled
from mrfer.data import lineage, shards
from mrfer.eval import cross_eval
from mrfer.nets import build, checkpoint
from params_fixture import section


def test_score_uses_the_classes_both_have_hand_checked():
    model_classes = ["angry", "happy", "neutral", "sad"]
    data_classes = ["angry", "disgust", "happy", "neutral"]
    shared = cross_eval.shared_classes(model_classes, {"classes": data_classes,
                                                       "present": ["angry", "disgust", "happy", "neutral"]})
    assert shared == ["angry", "happy", "neutral"]   # sad: not in the data; disgust: the model has no such class
    labels = np.array([0, 1, 2, 3, 3])   # angry, disgust (dropped), happy, neutral, neutral
    logits = torch.tensor([[5.0, 0, 0, 9],    # sad ignored -> angry: right
                           [0, 9, 0, 0],      # the disgust row is not scored
                           [0, 1, 2, 0],      # neutral for happy: wrong
                           [0, 0, 3, 0],      # neutral: right
                           [2, 1, 0, 0]])     # angry for neutral: wrong
    metrics = cross_eval.score(logits, labels, model_classes, data_classes, shared)
    assert metrics["n"] == 4 and metrics["accuracy"] == 0.5
    assert metrics["average_accuracy"] == round((1 + 0 + 0.5) / 3, 4)


def model_file(path, data, splits):
    stats = shards.read_stats(data)
    torch.manual_seed(0)
    model = build("baseline_cnn", num_classes=3, in_chans=1, image_size=32, width=0.125)
    checkpoint.save_model(path, model, {
        "arch": "baseline_cnn", "options": {"width": 0.125}, "classes": stats["classes"], "size": 32, "channels": 1,
        "mean": stats["mean"], "std": stats["std"], "params_hash": "t", "seed": 0, "stage": "pretrain_base",
        "lineage": lineage.to_meta(lineage.assembled(data, splits))})
    return model


def test_cross_eval_tests_held_out_pairs_and_leaves_out_the_rest(tmp_path):
    data = tmp_path / "assembled"
    make_assembled(data / "a", seed=0)
    make_assembled(data / "b", seed=3)
    models = tmp_path / "models"
    model = model_file(models / "base.pt", data / "a", ["train", "val"])
    model_file(models / "multires.pt", data / "b", ["test"])   # saw b's test faces: not held out from b
    cfg = section("cross_eval", cross_eval.CrossEvalParams, models=["base", "multires"], device="cpu")
    results = cross_eval.cross_eval(cfg, models, data, "a", ["a", "b"], ["x2"], "bicubic_aa", tmp_path / "r.json",
                                    tmp_path / "r.md", tmp_path / "curves")
    assert list(results["targets"]) == ["b"]   # never the dataset trained on
    assert results["targets"]["b"]["multires"] == {"skipped": "not held out: the model's lineage saw 24 of these faces"}
    entry = results["targets"]["b"]["base"]
    assert entry["splits"] == ["test"] and entry["classes"] == CLASSES
    x, y = shards.load_xy(data / "b", "test", "x2")
    mean, std = shards.read_stats(data / "a")["mean"], shards.read_stats(data / "a")["std"]
    with torch.no_grad():
        direct = model.eval()((torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean[0]) / std[0]).argmax(1).numpy()
    assert entry["metrics"]["x2"]["accuracy"] == round(float((direct == y).mean()), 4)
    assert json.loads((tmp_path / "r.json").read_text()) == results
    assert "left out: not held out" in (tmp_path / "r.md").read_text()
    header = (tmp_path / "curves" / "b.csv").read_text().splitlines()[0]
    assert header == "scale,resolution_px,accuracy_base"
