import pytest

from mrfer.data import labels


def test_canonical_order_is_fer2013s():
    assert labels.CLASSES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert labels.ALL_CLASSES[labels.CONTEMPT] == "contempt"
    assert labels.class_names("drop") == labels.CLASSES
    assert len(labels.class_names("keep")) == 8


@pytest.mark.parametrize("table,code,name", [
    (labels.CKPLUS, 1, "angry"), (labels.CKPLUS, 2, "contempt"), (labels.CKPLUS, 7, "surprise"),
    (labels.RAFDB, 1, "surprise"), (labels.RAFDB, 4, "happy"), (labels.RAFDB, 7, "neutral"),
    (labels.AFFECTNET, 0, "neutral"), (labels.AFFECTNET, 6, "angry"), (labels.AFFECTNET, 7, "contempt"),
    (labels.AFFWILD2, 4, "happy"), (labels.EXPW, 6, "neutral"), (labels.FER2013, 0, "angry"),
    (labels.JAFFE, "SU", "surprise"),
])
def test_dataset_codes_map_to_canonical(table, code, name):
    assert labels.ALL_CLASSES[labels.lookup(table, code)] == name


def test_no_label_codes_are_never_guessed():
    assert labels.lookup(labels.AFFECTNET, 8) is None
    assert labels.lookup(labels.AFFWILD2, -1) is None
    assert labels.lookup(labels.AFFWILD2, 7) is None
    assert labels.lookup(labels.RAFDB, 0) is None
    with pytest.raises(KeyError):
        labels.index("bored")
    with pytest.raises(ValueError, match="contempt"):
        labels.class_names("merge")


def test_aliases():
    assert labels.index("Happiness") == labels.index("happy") == 3
    assert labels.index(" Anger ") == 0
