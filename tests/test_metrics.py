import numpy as np
import pytest

from mrfer.metrics import confusion, summarize


def test_hand_made_example_with_known_answers():
    # class 0: 3 of 4 right; class 1: 1 of 2 right; class 2: 0 of 1; class 3 absent.
    y_true = [0, 0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 0]
    m = summarize(y_true, y_pred, n_classes=4)
    assert m["accuracy"] == round(4 / 7, 4)
    assert m["average_accuracy"] == round((3 / 4 + 1 / 2 + 0) / 3, 4)
    # F1: class0 p=3/5 r=3/4 -> 2/3; class1 p=1/2 r=1/2 -> 1/2; class2 -> 0
    assert m["macro_f1"] == round((2 / 3 + 1 / 2 + 0) / 3, 4)
    assert m["n"] == 7
    cm = confusion(y_true, y_pred, 4)
    assert cm.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="3 labels but 2"):
        summarize([0, 1, 2], [0, 1], 3)
    with pytest.raises(ValueError, match="no samples"):
        summarize([], [], 3)
