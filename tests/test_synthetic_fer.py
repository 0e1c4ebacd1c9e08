"""The second embedded FER set: FER2013's CSV, read by the real fer2013 reader, other people."""
from collections import Counter

from mrfer.data import datasets, labels, synthetic, synthetic_fer


def tiny(**overrides) -> synthetic.FerCsvParams:
    values = {"subjects": 3, "images_per_class": 2, "image_size": [64, 64], "difficulty": 0.6, "apex_intensity": 0.8}
    return synthetic.FerCsvParams(**{**values, **overrides})


def test_the_fer2013_reader_reads_it_with_every_class_and_split(tmp_path):
    summary = synthetic_fer.write_fer_csv(tmp_path / "fer", tiny(), seed=1)
    records, skips = datasets.read("fer2013", tmp_path / "fer", {})
    assert len(records) == summary["images"] == 3 * 2 * 7 and len(skips) == 0
    per_class = Counter(labels.CLASSES[r.label] for r in records)
    assert per_class == {c: 6 for c in labels.CLASSES}
    assert {r.split for r in records} == {"train", "val", "test"}   # Training / PublicTest / PrivateTest
    assert all(r.subject is None for r in records)   # FER2013 has no subjects
    assert (tmp_path / "fer" / "fer2013.csv").read_text().startswith("emotion,pixels,Usage\n")


def test_same_seed_same_bytes_other_seed_other_people(tmp_path):
    synthetic_fer.write_fer_csv(tmp_path / "a", tiny(), seed=1)
    synthetic_fer.write_fer_csv(tmp_path / "b", tiny(), seed=1)
    synthetic_fer.write_fer_csv(tmp_path / "c", tiny(), seed=2)
    a, b, c = ((tmp_path / n / "fer2013.csv").read_bytes() for n in "abc")
    assert a == b and a != c
