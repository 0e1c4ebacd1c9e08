"""video-train: clips from sequences, windows, votes, the subject split, the params schema, and a
tiny end-to-end run."""
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ckplus_fixture import write_sequence, zip_ckplus
from mrfer import cli, config, infer_clips
from mrfer.data import clips, datasets, labels
from mrfer.data.extract import ExtractParams
from mrfer.data.records import Record, SkipLog
from mrfer.errors import DatasetError
from mrfer.data.shards import MANIFEST_FIELDS, write_manifest
from mrfer.nets import build
from mrfer.nets import checkpoint, clip_gru
from mrfer.train import video

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- CK+ every frame


@pytest.mark.parametrize("layout", ["folders", "zips"])
def test_ckplus_all_frames_carry_the_sequence_emotion(tmp_path, layout):
    write_sequence(tmp_path, "S005", "001", 6, 3.0)   # disgust
    write_sequence(tmp_path, "S005", "002", 4, 2.0)   # contempt
    write_sequence(tmp_path, "S006", "001", 5, None)  # unlabelled: never a clip
    if layout == "zips":   # CK+ as distributed
        tmp_path = zip_ckplus(tmp_path, tmp_path / "zips")
    records, skips = datasets.read("ckplus", tmp_path, {"frames": "all"})
    by_seq = {}
    for r in records:
        by_seq.setdefault(r.sequence, []).append((r.frame, labels.ALL_CLASSES[r.label]))
    assert by_seq == {"S005/001": [(i, "disgust") for i in range(1, 7)],
                      "S005/002": [(i, "contempt") for i in range(1, 5)]}
    assert skips.reasons() == {"unlabelled sequence": 1}
    apex, _ = datasets.read("ckplus", tmp_path)  # the default is unchanged
    assert [(r.frame, r.label) for r in apex if r.sequence == "S005/001"] == [(1, 6), (4, 1), (5, 1), (6, 1)]
    with pytest.raises(DatasetError, match="frames must be one of"):
        datasets.read("ckplus", tmp_path, {"frames": "some"})


def test_reader_options_add_frames_all_only_where_the_reader_has_it():
    assert clips.reader_options("ckplus", {"apex_frames": 2}, None) == {"apex_frames": 2, "frames": "all"}
    assert clips.reader_options("ckplus", {"apex_frames": 2}, {"frames": "apex"}) == {"apex_frames": 2,
                                                                                       "frames": "apex"}
    assert clips.reader_options("afew", {"max_frames": 16}, None) == {"max_frames": 16}
    assert clips.reader_options("afew", {"max_frames": 16}, {"max_frames": 0}) == {"max_frames": 0}


# ---------------------------------------------------------------- windows


def test_train_windows_lie_inside_the_clip_with_the_window_length():
    gen = torch.Generator().manual_seed(0)
    lengths = np.array([3, 5, 20, 16] * 500)
    starts = clip_gru.train_starts(lengths, 5, gen)
    long = lengths >= 5
    assert (starts >= 0).all() and (starts[long] + 5 <= lengths[long]).all()
    assert (starts[~long] == 0).all()  # a short clip has one window: all of it, padded
    assert set(starts[lengths == 20].tolist()) == set(range(16))  # every start is drawn
    rows = [np.arange(100, 100 + n) for n in (3, 20)]
    index, true = clip_gru.window_batch(rows, [0, 15], 5)
    assert index.shape == (2, 5)
    assert index[1].tolist() == [115, 116, 117, 118, 119] and true[1] == 5


def test_short_clips_pad_with_the_last_frame_and_keep_their_length():
    assert clip_gru.window_index(0, 3, 5).tolist() == [0, 1, 2, 2, 2]
    assert clip_gru.true_length(0, 3, 5) == 3
    index, true = clip_gru.window_batch([np.array([7, 8, 9])], [0], 5)
    assert index.tolist() == [[7, 8, 9, 9, 9]] and true.tolist() == [3]


@pytest.mark.parametrize("length,window,stride,expected", [
    (20, 8, 4, [0, 4, 8, 12]), (21, 8, 4, [0, 4, 8, 12, 13]), (8, 8, 4, [0]), (5, 8, 4, [0]),
    (30, 16, 8, [0, 8, 14])])
def test_test_windows_cover_the_clip_with_the_stride(length, window, stride, expected):
    starts = clip_gru.test_starts(length, window, stride)
    assert starts == expected
    covered = set()
    for s in starts:
        covered |= set(clip_gru.window_index(s, length, window).tolist())
    assert covered == set(range(length))
    assert min(starts[-1] + window, length) == length  # the last window ends on the last frame


# ---------------------------------------------------------------- scores and votes


class FirstFrameLogits(torch.nn.Module):
    """A stand-in GRU: a window's logits are its first frame's features."""

    def forward(self, x, lengths=None):
        return x[:, 0, :]


def test_clip_score_is_the_mean_of_window_probabilities():
    feats = torch.zeros(12, 3)
    feats[0] = torch.tensor([2.0, 0.0, 0.0])
    feats[4] = torch.tensor([0.0, 0.0, 1.0])
    feats[10] = torch.tensor([0.0, 3.0, 0.0])
    # clip A: rows 0..11, window 8, stride 4 -> windows start at 0 and 4; clip B: rows 10, 11 (padded)
    scores = infer_clips.predict_clips(FirstFrameLogits(), feats, [np.arange(12), np.array([10, 11])], 8, 4)
    expected_a = (torch.softmax(feats[0], 0) + torch.softmax(feats[4], 0)).numpy() / 2
    np.testing.assert_allclose(scores[0], expected_a, rtol=1e-6)
    np.testing.assert_allclose(scores[1], torch.softmax(feats[10], 0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(clip_gru.clip_mean([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 0, 1], 2),
                               [[0.55, 0.45], [0.6, 0.4]])


def test_majority_and_mean_voting_differ_as_computed_by_hand():
    probs = np.array([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.0, 0.9, 0.1],   # clip 0
                      [0.5, 0.3, 0.2], [0.1, 0.8, 0.1],                    # clip 1: a 1-1 tie
                      [0.1, 0.1, 0.8]])                                    # clip 2
    owner = np.array([0, 0, 0, 1, 1, 2])
    assert clip_gru.clip_mean(probs, owner, 3).argmax(1).tolist() == [1, 1, 2]
    assert clip_gru.majority_vote(probs, owner, 3).tolist() == [0, 1, 2]  # tie -> higher mean probability
    with pytest.raises(ValueError, match="no rows"):
        clip_gru.clip_mean(probs, owner, 4)


# ---------------------------------------------------------------- clips and the split


def record(sequence, frame, label, subject=None, split=None):
    return Record(image=np.zeros((8, 8), np.uint8), label=label, source=f"{sequence}#{frame}",
                  subject=subject, split=split, sequence=sequence, frame=frame)


def write_manifests(root: Path, subjects: dict[str, list[str]], sequences: dict[str, list[str]] | None = None):
    for split in ("train", "val", "test"):
        rows = [{"source": f"{s}.png", "label": 0, "class": "angry", "subject": s, "sequence": f"{s}/001",
                 "frame": 1} for s in subjects.get(split, [])]
        rows += [{"source": f"{q}.png", "label": 0, "class": "angry", "subject": None, "sequence": q,
                  "frame": 1} for q in (sequences or {}).get(split, [])]
        (root / split).mkdir(parents=True, exist_ok=True)
        write_manifest(root / split / "manifest.csv", rows, MANIFEST_FIELDS)
    return root


def test_clips_group_by_sequence_order_by_frame_and_cut_at_label_changes():
    records = [record("S1/001", 3, 4, "S1"), record("S1/001", 1, 4, "S1"), record("S1/001", 2, 4, "S1"),
               record("vid", 1, 6), record("vid", 11, 6), record("vid", 21, 3), record("vid", 31, 3),
               record("S1/002", 1, 7, "S1"),  # contempt, dropped with 7 classes
               Record(image=np.zeros((8, 8), np.uint8), label=0, source="img.png")]
    skips = SkipLog()
    grouped = clips.group_clips(records, 7, skips)
    assert [(c.id, c.label, [r.frame for r in c.records]) for c in grouped] == [
        ("S1/001", 4, [1, 2, 3]), ("vid@1", 6, [1, 11]), ("vid@21", 3, [21, 31])]
    assert skips.reasons() == {"not a clip": 1, "contempt dropped": 1}
    assert len(clips.group_clips(records, 8, SkipLog())) == 4  # contempt kept as an 8th class


def test_clip_split_follows_the_assembled_subjects(tmp_path):
    data = write_manifests(tmp_path, {"train": ["S1", "S2"], "val": ["S3"], "test": ["S4", "S5"]},
                           {"test": ["clipA"]})
    records = [record(f"{s}/{q:03d}", f, 0, s) for s in ("S1", "S2", "S3", "S4", "S5", "S9")
               for q in (1, 2) for f in (1, 2)]
    records += [record("clipA", 1, 2), record("clipB", 1, 2, split="val"), record("clipC", 1, 2)]
    skips = SkipLog()
    by_split = clips.assign_clip_splits(clips.group_clips(records, 7, SkipLog()),
                                        clips.manifest_groups(data), skips)
    subjects = {name: {c.subject for c in members if c.subject} for name, members in by_split.items()}
    assert subjects == {"train": {"S1", "S2"}, "val": {"S3"}, "test": {"S4", "S5"}}
    assert not (subjects["train"] & subjects["test"]) and not (subjects["train"] & subjects["val"])
    assert [c.id for c in by_split["test"] if c.subject is None] == ["clipA"]  # its sequence group
    assert [c.id for c in by_split["val"] if c.subject is None] == ["clipB"]   # the dataset's own split
    assert sorted(item["source"] for item in skips.items) == ["S9/001", "S9/002", "clipC"]
    assert all(item["reason"].startswith("not in the assembled data") for item in skips.items)


# ---------------------------------------------------------------- end to end


CODES = (1.0, 5.0, 7.0)  # angry, happy, surprise
BRIGHTNESS = {1.0: -0.35, 5.0: 0.0, 7.0: 0.35}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CK+ tree, manifests consistent with it, and a tiny (untrained) CNN checkpoint."""
    root = tmp_path_factory.mktemp("video")
    raw = root / "raw"
    for k in range(1, 7):
        for q, code in enumerate(CODES, start=1):
            for path in write_sequence(raw, f"S{k:03d}", f"{q:03d}", 3 + (k + q) % 4, code, size=64):
                # a learnable cue: the face is darker or brighter by class, more so towards the apex
                image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
                frame = int(path.stem[-8:])
                gain = 1 + BRIGHTNESS[code] * frame / 6
                cv2.imwrite(str(path), np.clip(image * gain, 0, 255).astype(np.uint8))
    write_sequence(raw, "S001", "004", 4, 2.0, size=64)  # contempt: dropped
    write_sequence(raw, "S009", "001", 4, 5.0, size=64)  # a subject assemble never saw
    write_manifests(root / "assembled", {"train": ["S001", "S002", "S003"], "val": ["S004"],
                                    "test": ["S005", "S006"]})
    torch.manual_seed(0)
    cnn = build("baseline_cnn", num_classes=7, in_chans=1, image_size=32, width=0.125)
    checkpoint.save_model(root / "cnn.pt", cnn, {
        "arch": "baseline_cnn", "options": {"width": 0.125}, "classes": list(labels.CLASSES), "size": 32,
        "channels": 1, "mean": [120.0], "std": [50.0], "params_hash": "tinycnn0123"})
    return root


def repo_section(name: str) -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())[name]


def tiny_cfg(**overrides) -> video.VideoTrainParams:
    """The repo's video_train params, made small."""
    values = {**repo_section("video_train"), "seed": 5, "window": 4, "stride": 2, "hidden": 16, "epochs": 3,
              "batch_size": 4, **overrides}
    return video.VideoTrainParams.model_validate(values)


def extract_values(**overrides) -> dict:
    return {**repo_section("extract"), "dataset": "ckplus", "options": {"apex_frames": 3, "neutral_frames": 1},
            "size": 32, "color": "gray", "margin": 0.1, "contempt": "drop", "no_face": "skip", **overrides}


def tiny_extract(**overrides) -> ExtractParams:
    return ExtractParams.model_validate(extract_values(**overrides))


def fit(root: Path, cfg, extract_cfg, out_dir: Path, name: str = "video", live_dir: str | None = None) -> dict:
    return video.fit_video(cfg, extract_cfg, raw=root / "raw", data=root / "assembled", cnn=root / "cnn.pt",
                           out=out_dir / f"{name}.pt", report=out_dir / f"{name}.json", live_dir=live_dir)


def test_repo_params_validate():
    cfg = config.load_section(REPO / "params.yaml", "video_train", video.VideoTrainParams)
    assert cfg.window >= 1 and cfg.stride >= 1
    with pytest.raises(ValueError, match="dropout"):
        tiny_cfg(dropout=1.0)
    with pytest.raises(ValueError, match="window"):
        tiny_cfg(window=0)


def check_report(report: dict, window: int, epochs: int):
    for key in ("gru", "frame_mean", "frame_majority"):
        m = report[key]
        assert {"accuracy", "average_accuracy", "macro_f1", "n", "collapsed"} <= set(m)
        assert set(m) - {"collapsed_to", "collapsed_share"} == {"accuracy", "average_accuracy", "macro_f1", "n", "collapsed"}
        assert m["n"] == 6 and all(0.0 <= m[k] <= 1.0 for k in ("accuracy", "average_accuracy", "macro_f1"))
    assert report["clips"] == {"train": 9, "val": 3, "test": 6}
    assert report["frames"]["test"] == sum(3 + (k + q) % 4 for k in (5, 6) for q in (1, 2, 3))
    assert report["skipped_clips_by_reason"] == {"contempt dropped": 1, "not in the assembled data": 1}
    assert {item["source"] for item in report["skips"]} == {"S001/004", "S009/001"}
    assert report["test_clips_padded"] == (6 if window >= 6 else sum(3 + (k + q) % 4 < window
                                                                     for k in (5, 6) for q in (1, 2, 3)))
    assert 3 <= report["clip_length"]["min"] <= report["clip_length"]["max"] <= 6
    assert 1 <= report["best_epoch"] <= report["epochs_run"] == epochs


def test_video_train_end_to_end_frozen(tiny, tmp_path):
    cfg = tiny_cfg(epochs=8, lr=0.01)
    report = fit(tiny, cfg, tiny_extract(), tmp_path, live_dir=str(tmp_path / "live"))
    check_report(report, 4, 8)
    assert report["gru"]["accuracy"] >= 0.8  # the GRU learns the fixture's brightness cue; the untrained
    assert report["frame_mean"]["accuracy"] < 0.8  # CNN head's frame votes do not
    assert json.loads((tmp_path / "video.json").read_text()) == report
    assert (tmp_path / "live" / "plots" / "metrics" / "train_loss.tsv").is_file()
    payload = torch.load(tmp_path / "video.pt", weights_only=True)
    meta = payload["meta"]
    assert meta["cnn_params_hash"] == "tinycnn0123" and meta["window"] == 4 and meta["stride"] == 2
    assert meta["freeze"] is True and "cnn_state_dict" not in payload
    gru, cnn, meta = clip_gru.load_video(tmp_path / "video.pt")
    faces = np.random.default_rng(0).integers(0, 255, (7, 32, 32, 1), dtype=np.uint8)
    probs = infer_clips.score_clip(gru, cnn, meta, faces)
    assert probs.shape == (7,) and abs(probs.sum() - 1) < 1e-5
    # same seed, same everything (CPU)
    again = fit(tiny, cfg, tiny_extract(), tmp_path, name="video2")
    assert again == report
    a, b = checkpoint.load(tmp_path / "video.pt")["state_dict"], checkpoint.load(tmp_path / "video2.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_video_train_fine_tuned_carries_its_cnn(tiny, tmp_path):
    cfg = tiny_cfg(freeze=False, layers=2, mask_padding=True, window=8, stride=4)
    report = fit(tiny, cfg, tiny_extract(), tmp_path)
    check_report(report, 8, 3)
    payload = checkpoint.load(tmp_path / "video.pt")
    original = checkpoint.load(tiny / "cnn.pt")["state_dict"]
    assert any(not torch.equal(payload["cnn_state_dict"][k], original[k]) for k in original
               if original[k].is_floating_point())
    gru, cnn, meta = clip_gru.load_video(tmp_path / "video.pt", cnn_path="/nonexistent.pt")  # not needed
    assert meta["freeze"] is False and gru.config["layers"] == 2


def test_clips_from_ckplus_zips_are_the_clips_from_its_folders(tiny, tmp_path):
    zips = zip_ckplus(tiny / "raw", tmp_path / "raw")
    options = clips.reader_options("ckplus", tiny_extract().options, None)
    a = clips.load_clips(tiny_extract(), tiny / "raw", tiny / "assembled", options, 7)
    b = clips.load_clips(tiny_extract(), zips, tiny / "assembled", options, 7)
    assert np.array_equal(a.faces, b.faces) and len(a.faces) > 0
    assert [(c.id, c.label, c.rows.tolist()) for c in a.clips] == [(c.id, c.label, c.rows.tolist()) for c in b.clips]
    assert a.clip_skips.items == b.clip_skips.items


def test_mismatched_cnn_and_wrong_cnn_file_are_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="takes 32 px"):
        fit(tiny, tiny_cfg(), tiny_extract(size=48), tmp_path)
    with pytest.raises(ValueError, match="classes"):
        fit(tiny, tiny_cfg(), tiny_extract(contempt="keep"), tmp_path)


def run_stage(monkeypatch, *argv):
    """stages/video_train.py in this process (a subprocess would re-import torch: seconds); its exit code."""
    spec = importlib.util.spec_from_file_location("video_train_stage", REPO / "stages" / "video_train.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.setattr(sys, "argv", ["video_train.py", *argv])
    try:
        cli.run(stage.main)
    except SystemExit as e:
        return e.code
    return 0


def stage_args(root: Path, out_dir: Path) -> list[str]:
    return ["--data", str(root / "assembled"), "--raw", str(root / "raw"), "--cnn", str(root / "cnn.pt"),
            "--out", str(out_dir / "video.pt"), "--report", str(out_dir / "video_train.json"),
            "--live", str(out_dir / "live")]


def test_stage_script_help_and_bad_key(tiny, tmp_path, monkeypatch, capsys, caplog):
    assert run_stage(monkeypatch, "--help") == 0
    help_text = capsys.readouterr().out
    assert "--params" in help_text and "video-train" in help_text
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"seed": 1, "extract": extract_values(),
                                           "video_train": {"windw": 4}}))
    assert run_stage(monkeypatch, "--params", str(params_file), *stage_args(tiny, tmp_path)) == 2
    assert "video_train.windw is not a key of this section" in caplog.text
    assert not (tmp_path / "video.pt").exists()


def test_stage_script_runs_and_reads_every_video_key(tiny, tmp_path, monkeypatch):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"seed": 5, "extract": extract_values(),
                                           "video_train": tiny_cfg(epochs=2).model_dump()}))
    assert run_stage(monkeypatch, "--params", str(params_file), *stage_args(tiny, tmp_path)) == 0
    report = json.loads((tmp_path / "video_train.json").read_text())
    check_report(report, 4, 2)
    assert (tmp_path / "video.pt").is_file() and (tmp_path / "live" / "metrics.json").is_file()
    # the raw root is --raw, so extract.root is loaded and not read; every other key is read
    trace = config.trace()
    unread = {k for k in set(trace["loaded"]) - set(trace["read"]) if k.startswith(("video_train.", "extract."))}
    assert unread == {"extract.root"}
