import logging

import numpy as np
import pytest

from mrfer.metrics import confusion, summarize, warn_if_collapsed


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


def test_collapse_is_recorded_and_warned(caplog):
    """A model answering one class for >= 90 % of the faces is flagged, with the class; below that it is not."""
    y_true = [0] * 10 + [1] * 5 + [2] * 5
    collapsed = summarize(y_true, [0] * 18 + [1, 2], 3)  # 18 of 20 = 90 %
    assert collapsed["collapsed"] is True and collapsed["collapsed_to"] == 0 and collapsed["collapsed_share"] == 0.9
    assert collapsed["accuracy"] == 0.55  # class 0's share (10 of 20) plus one lucky face
    fine = summarize(y_true, [0] * 17 + [1, 1, 2], 3)  # 85 %
    assert fine["collapsed"] is False and "collapsed_to" not in fine
    with caplog.at_level(logging.WARNING, logger="mrfer.metrics"):
        warn_if_collapsed(fine, "base at x8", ["angry", "happy", "sad"])
        assert not caplog.records
        warn_if_collapsed(collapsed, "base at x8", ["angry", "happy", "sad"])
    assert len(caplog.records) == 1
    assert "base at x8 predicts 'angry' for 90 % of 20 faces" in caplog.records[0].getMessage()
