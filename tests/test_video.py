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
from mrfer.errors import DatasetError, MissingInputError
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


def test_contiguous_windows_lie_inside_the_clip_with_the_window_length():
    gen = torch.Generator().manual_seed(0)
    lengths = np.array([3, 5, 20, 16] * 500)
    starts = clip_gru.train_starts(lengths, 5, gen)
    long = lengths >= 5
    assert (starts >= 0).all() and (starts[long] + 5 <= lengths[long]).all()
    assert (starts[~long] == 0).all()  # a short clip has one window: all of it, padded
    assert set(starts[lengths == 20].tolist()) == set(range(16))  # every start is drawn
    positions = clip_gru.train_positions([3, 20], 5, "contiguous", torch.Generator().manual_seed(1))
    assert positions[0].tolist() == [0, 1, 2, 2, 2]
    assert np.array_equal(np.diff(positions[1]), np.ones(4)) and positions[1][-1] < 20
    rows = [np.arange(100, 100 + n) for n in (3, 20)]
    index, true = clip_gru.window_batch(rows, [np.array([0, 1, 2, 2, 2]), np.arange(15, 20)])
    assert index.tolist() == [[100, 101, 102, 102, 102], [115, 116, 117, 118, 119]] and true.tolist() == [3, 5]


def test_spread_windows_are_sorted_distinct_frames_over_the_whole_clip():
    gen = torch.Generator().manual_seed(0)
    draws = [clip_gru.spread_positions(40, 16, gen) for _ in range(300)]
    for p in draws:
        assert len(p) == 16 and len(set(p.tolist())) == 16 and (np.diff(p) > 0).all()
        assert 0 <= p[0] and p[-1] <= 39
    assert sum(p[-1] == 39 for p in draws) > 0          # the apex (last frame) is reachable
    assert max(p[0] for p in draws) > 0                   # not always from the first frame
    assert sum(p[-1] - p[0] >= 30 for p in draws) > 150   # spread over the clip, not one contiguous run
    # one frame left out of 17: the other 16, in order
    one_out = clip_gru.spread_positions(17, 16, torch.Generator().manual_seed(3))
    assert len(set(range(17)) - set(one_out.tolist())) == 1 and (np.diff(one_out) > 0).all()
    # exact draw for a seed (torch.randperm's first 16 of 20, sorted): a regression pin
    seeded = clip_gru.train_positions([20, 5], 16, "spread", torch.Generator().manual_seed(7))
    assert seeded[0].tolist() == SPREAD_SEED7
    # a clip shorter than the window: every frame, then the last repeated (VGG_GRU/dataset.py)
    assert seeded[1].tolist() == [0, 1, 2, 3, 4] + [4] * 11
    with pytest.raises(ValueError, match="spread or contiguous"):
        clip_gru.train_positions([5], 4, "random", gen)


SPREAD_SEED7 = [0, 1, 2, 3, 4, 7, 8, 9, 11, 12, 14, 15, 16, 17, 18, 19]  # frames 5, 6, 10, 13 left out


def test_short_clips_pad_with_the_last_frame_and_keep_their_length():
    assert clip_gru.window_index(0, 3, 5).tolist() == [0, 1, 2, 2, 2]
    index, true = clip_gru.window_batch([np.array([7, 8, 9])], [clip_gru.window_index(0, 3, 5)])
    assert index.tolist() == [[7, 8, 9, 9, 9]] and true.tolist() == [3]


@pytest.mark.parametrize("length,window,stride,expected", [
    (20, 8, 4, [0, 4, 8, 12]), (21, 8, 4, [0, 4, 8, 12, 13]), (8, 8, 4, [0]), (5, 8, 4, [0]),
    (30, 16, 8, [0, 8, 14])])
def test_cover_test_windows_cover_the_clip_with_the_stride(length, window, stride, expected):
    starts = clip_gru.test_starts(length, window, stride, "cover")
    assert starts == expected
    covered = set()
    for s in starts:
        covered |= set(clip_gru.window_index(s, length, window).tolist())
    assert covered == set(range(length))
    assert min(starts[-1] + window, length) == length  # the last window ends on the last frame


@pytest.mark.parametrize("length,expected", [(30, [0, 8]), (32, [0, 8, 16]), (16, [0]), (10, [0]), (23, [0])])
def test_full_test_windows_are_full_windows_every_stride(length, expected):
    """VGG_GRU/dataset.py load_test_data_label: i in range(0, n, 8) with i + 16 <= n; a clip
    shorter than 16 gives one window padded with its last frame."""
    assert clip_gru.test_starts(length, 16, 8, "full") == expected


# ---------------------------------------------------------------- scores and votes


class FirstFrameLogits(torch.nn.Module):
    """A stand-in GRU: a window's logits are its first frame's features."""

    def forward(self, x, lengths=None):
        return x[:, 0, :]


def softmax(v):
    e = np.exp(np.asarray(v, dtype=np.float64) - np.max(v))
    return e / e.sum()


def test_full_windows_with_logits_as_computed_by_hand():
    """Clip A: 20 frames, window 8, stride 4 -> full windows at 0, 4, 8, 12 (frames 12..19); its
    score is the softmax of the mean of those windows' logits. Clip B: 2 frames, one padded window."""
    feats = torch.zeros(22, 3)
    feats[0], feats[4], feats[8], feats[12] = (torch.tensor(v) for v in
                                               ([4.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 1.0]))
    feats[20] = torch.tensor([0.0, 3.0, 0.0])
    rows = [np.arange(20), np.array([20, 21])]
    scores = infer_clips.predict_clips(FirstFrameLogits(), feats, rows, 8, 4, "full", "logits")
    np.testing.assert_allclose(scores[0], softmax([1.0, 1.0, 0.25]), rtol=1e-6)  # (4+0+0+0)/4, (0+2+2+0)/4, 1/4
    np.testing.assert_allclose(scores[1], softmax([0.0, 3.0, 0.0]), rtol=1e-6)
    # probabilities instead: the mean of the windows' softmax, here another winner
    probs = infer_clips.predict_clips(FirstFrameLogits(), feats, rows, 8, 4, "full", "probabilities")
    expected = (softmax([4, 0, 0]) + 2 * softmax([0, 2, 0]) + softmax([0, 0, 1])) / 4
    np.testing.assert_allclose(probs[0], expected, rtol=1e-6)
    assert scores[0].argmax() == 0 and probs[0].argmax() == 1   # the switch changes the answer
    # cover adds the window at 12 .. 19 -> start 12 is already there; with 21 frames it adds 13
    feats21 = torch.cat([feats[:20], torch.tensor([[0.0, 0, 9.0]]), feats[20:]])
    rows21 = [np.arange(21)]
    feats21[13] = torch.tensor([0.0, 0.0, 9.0])
    full = infer_clips.predict_clips(FirstFrameLogits(), feats21, rows21, 8, 4, "full", "logits")
    cover = infer_clips.predict_clips(FirstFrameLogits(), feats21, rows21, 8, 4, "cover", "logits")
    np.testing.assert_allclose(full[0], scores[0], rtol=1e-6)
    np.testing.assert_allclose(cover[0], softmax([4 / 5, 4 / 5, 10 / 5]), rtol=1e-6)
    np.testing.assert_allclose(clip_gru.clip_mean([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 0, 1], 2),
                               [[0.55, 0.45], [0.6, 0.4]])
    with pytest.raises(ValueError, match="clip_score"):
        infer_clips.clip_scores(np.zeros((1, 3)), np.zeros(1, int), 1, "votes")


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
    # a face-recognition model (classes are identities), as face-pretrain writes models/face.pt
    face = build("vggface", num_classes=5, in_chans=1, image_size=32, width=1 / 64)
    checkpoint.save_model(root / "face.pt", face, {
        "arch": "vggface", "options": {"width": 1 / 64}, "classes": [f"id{i}" for i in range(5)], "size": 32,
        "channels": 1, "mean": [110.0], "std": [60.0], "params_hash": "tinyface0123"})
    return root


def repo_section(name: str) -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())[name]


def tiny_cfg(vgg_gru: dict | None = None, mrfer_gru: dict | None = None, **overrides) -> video.VideoTrainParams:
    """The repo's video_train params, made small."""
    section = repo_section("video_train")
    values = {**section, "seed": 5, "window": 4, "stride": 2, "hidden": 16, "epochs": 3, **overrides,
              "vgg_gru": {**section["vgg_gru"], "batch_size": 2, **(vgg_gru or {})},
              "mrfer_gru": {**section["mrfer_gru"], "batch_size": 4, **(mrfer_gru or {})}}
    return video.VideoTrainParams.model_validate(values)


def mrfer_cfg(**mrfer_gru) -> video.VideoTrainParams:
    """This repo's earlier recipe, as it was."""
    return tiny_cfg(recipe="mrfer_gru", window_sampling="contiguous", test_windows="cover",
                    clip_score="probabilities", mrfer_gru=mrfer_gru)


def extract_values(root: str = "data/raw/tiny", **overrides) -> dict:
    """A `datasets` entry (reader, root, options) with the crop keys of `extract` filled in."""
    return {**repo_section("extract"), "reader": "ckplus", "root": root, "options": {"apex_frames": 3, "neutral_frames": 1},
            "size": 32, "color": "gray", "margin": 0.1, "contempt": "drop", "no_face": "skip", **overrides}


def stage_params(root: Path, **sections) -> dict:
    """A params file for the stage: the tiny set as the one dataset, its crop keys in `extract`."""
    entry = extract_values(str(root / "raw"))
    crop = {k: entry.pop(k) for k in list(entry) if k not in ("reader", "root", "options")}
    return {"datasets": {"tiny": entry}, "train_on": "tiny", "extract": crop, **sections}


def tiny_extract(**overrides) -> ExtractParams:
    return ExtractParams.model_validate(extract_values(**overrides))


def fit(root: Path, cfg, extract_cfg, out_dir: Path, name: str = "video", live_dir: str | None = None) -> dict:
    return video.fit_video(cfg, extract_cfg, raw=root / "raw", data=root / "assembled", fer_model=root / "cnn.pt",
                           face_model=root / "face.pt", out=out_dir / f"{name}.pt", report=out_dir / f"{name}.json",
                           live_dir=live_dir)


def test_repo_params_validate():
    cfg = config.load_section(REPO / "params.yaml", "video_train", video.VideoTrainParams)
    assert cfg.window >= 1 and cfg.stride >= 1
    with pytest.raises(ValueError, match="dropout"):
        tiny_cfg(vgg_gru={"dropout": 1.0})
    with pytest.raises(ValueError, match="window"):
        tiny_cfg(window=0)
    with pytest.raises(ValueError, match="clip_score"):
        tiny_cfg(clip_score="votes")


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


def test_mrfer_gru_end_to_end_frozen(tiny, tmp_path):
    cfg = mrfer_cfg(lr=0.01)
    cfg = video.VideoTrainParams.model_validate({**cfg.model_dump(), "epochs": 8})
    report = fit(tiny, cfg, tiny_extract(), tmp_path, live_dir=str(tmp_path / "live"))
    check_report(report, 4, 8)
    assert report["recipe"] == "mrfer_gru" and report["freeze"] is True
    assert report["gru"]["accuracy"] >= 0.8  # the GRU learns the fixture's brightness cue; the untrained
    assert report["frame_mean"]["accuracy"] < 0.8  # CNN head's frame votes do not
    assert json.loads((tmp_path / "video.json").read_text()) == report
    assert (tmp_path / "live" / "plots" / "metrics" / "train_loss.tsv").is_file()
    payload = torch.load(tmp_path / "video.pt", weights_only=True)
    meta = payload["meta"]
    assert meta["cnn_params_hash"] == "tinycnn0123" and meta["window"] == 4 and meta["stride"] == 2
    assert meta["freeze"] is True and "cnn_state_dict" not in payload
    gru, encoder, meta = clip_gru.load_video(tmp_path / "video.pt")
    faces = np.random.default_rng(0).integers(0, 255, (7, 32, 32, 1), dtype=np.uint8)
    probs = infer_clips.score_clip(gru, encoder, meta, faces)
    assert probs.shape == (7,) and abs(probs.sum() - 1) < 1e-5
    # same seed, same everything (CPU)
    again = fit(tiny, cfg, tiny_extract(), tmp_path, name="video2")
    assert again == report
    a, b = checkpoint.load(tmp_path / "video.pt")["state_dict"], checkpoint.load(tmp_path / "video2.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vgg_gru_trains_end_to_end_and_carries_its_cnn(tiny, tmp_path):
    cfg = tiny_cfg(window=8, stride=4)
    assert cfg.recipe == "vgg_gru" and cfg.window_sampling == "spread" and cfg.clip_score == "logits"
    report = fit(tiny, cfg, tiny_extract(), tmp_path)
    check_report(report, 8, 3)
    assert report["recipe"] == "vgg_gru" and report["freeze"] is False and report["test_windows"] == "full"
    payload = checkpoint.load(tmp_path / "video.pt")
    original = checkpoint.load(tiny / "cnn.pt")["state_dict"]
    assert any(not torch.equal(payload["cnn_state_dict"][k], original[k]) for k in original
               if original[k].is_floating_point())
    gru, encoder, meta = clip_gru.load_video(tmp_path / "video.pt", cnn_path="/nonexistent.pt")  # not needed
    assert meta["freeze"] is False and gru.config["layout"] == "vgg_gru" and gru.config["dropout"] == 0.8
    assert isinstance(gru.gru, torch.nn.GRU) and gru.gru.hidden_size == 16 and gru.head.in_features == 16


def tiny_frames(cnn, finetune: bool, layer: str = "embedding"):
    faces = np.random.default_rng(1).integers(0, 255, (12, 32, 32, 1), dtype=np.uint8)
    encoder = clip_gru.FrameEncoder(cnn, layer)
    feats = video.infer(encoder, faces, [120.0], [50.0], what="features")
    return video.make_frames(faces, feats, encoder, ([120.0], [50.0]), 8, finetune), feats.shape[1]


@pytest.mark.parametrize("recipe", ["vgg_gru", "mrfer_gru"])
def test_gradients_reach_the_cnn_only_when_it_is_not_frozen(recipe):
    torch.manual_seed(0)
    cnn = build("baseline_cnn", num_classes=7, in_chans=1, image_size=32, width=0.125)
    cfg = tiny_cfg(recipe=recipe, mrfer_gru={"freeze": recipe == "mrfer_gru"})
    frames, dim = tiny_frames(cnn, finetune=video.resolve_recipe(cfg).finetune)
    model = clip_gru.ClipGRU(dim, 7, 16, dropout=0.8, layout=recipe)
    optim = video.make_optim(model, frames.encoder, cfg, False)
    before = [p.detach().clone() for p in cnn.parameters()]
    index, lengths = clip_gru.window_batch([np.arange(6), np.arange(6, 12)], [np.arange(4), np.array([0, 2, 3, 5])])
    video.train_step(model, frames, index, lengths, torch.tensor([1, 2]), optim, False)
    changed = any(not torch.equal(a, b) for a, b in zip(before, cnn.parameters()))
    grads = [p.grad for p in cnn.parameters()]
    if recipe == "vgg_gru":   # end to end: the CNN takes a gradient and one SGD step moves it
        assert changed and any(g is not None and g.abs().sum() > 0 for g in grads)
        assert isinstance(optim.optimizer, torch.optim.SGD)
        assert optim.optimizer.defaults["momentum"] == cfg.vgg_gru.momentum
    else:                     # frozen: no gradient, no change
        assert not changed and all(g is None for g in grads)
    assert all(p.grad is not None for p in model.gru.parameters())


def test_vgg_gru_layout_is_gru_dropout_mean_linear():
    torch.manual_seed(0)
    model = clip_gru.ClipGRU(6, 3, 5, dropout=0.8, layout="vgg_gru").eval()
    x = torch.randn(2, 4, 6)
    out, _ = model.gru(x)
    torch.testing.assert_close(model(x), model.head(out.mean(1)))
    model.set_input_stats(torch.randn(10, 6) * 9)   # the published layout never scales its input
    torch.testing.assert_close(model(x), model.head(out.mean(1)))


def test_fc6_frame_layer_is_vggface_conv_fc6_relu():
    torch.manual_seed(0)
    net = build("vggface", num_classes=7, in_chans=1, image_size=32, width=1 / 64).eval()
    x = torch.randn(3, 1, 32, 32)
    fc6 = clip_gru.FrameEncoder(net, "fc6").features(x)
    by_hand = torch.relu(net.body[32](net.body[31](net.body[:31](x))))
    torch.testing.assert_close(fc6, by_hand)
    assert fc6.shape == (3, net.embedding_dim)
    with pytest.raises(ValueError, match="needs a vggface CNN"):
        clip_gru.FrameEncoder(build("baseline_cnn", num_classes=7, in_chans=1, image_size=32, width=0.125), "fc6")


def test_face_backbone_with_fc6_and_fer_frame_votes(tiny, tmp_path):
    cfg = tiny_cfg(cnn="face", epochs=2, vgg_gru={"frame_layer": "fc6"})
    report = fit(tiny, cfg, tiny_extract(), tmp_path)
    check_report(report, 4, 2)
    assert report["cnn"] == "face" and report["frame_layer"] == "fc6"
    assert report["cnn_params_hash"] == "tinyface0123" and report["fer_params_hash"] == "tinycnn0123"
    # the frame-voting baseline is the FER model's, whatever the backbone
    fer_only = fit(tiny, tiny_cfg(epochs=2), tiny_extract(), tmp_path, name="fer")
    assert report["frame_mean"] == fer_only["frame_mean"] and report["frame_majority"] == fer_only["frame_majority"]
    gru, encoder, meta = clip_gru.load_video(tmp_path / "video.pt")
    assert meta["cnn_role"] == "face" and encoder.layer == "fc6" and meta["cnn_meta"]["classes"][0] == "id0"
    faces = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 1), dtype=np.uint8)
    assert infer_clips.score_clip(gru, encoder, meta, faces).shape == (7,)


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
    with pytest.raises(MissingInputError, match="face.pt: checkpoint not found"):
        video.fit_video(tiny_cfg(cnn="face"), tiny_extract(), raw=tiny / "raw", data=tiny / "assembled",
                        fer_model=tiny / "cnn.pt", face_model=tmp_path / "face.pt", out=tmp_path / "v.pt",
                        report=tmp_path / "v.json", live_dir=None)
    assert not (tmp_path / "v.pt").exists()


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
    return ["--data", str(root / "assembled"), "--dataset", "tiny", "--raw", str(root), "--fer-model", str(root / "cnn.pt"),
            "--face-model", str(root / "face.pt"), "--out", str(out_dir / "video.pt"),
            "--report", str(out_dir / "video_train.json"), "--live", str(out_dir / "live")]


def test_stage_script_help_and_bad_key(tiny, tmp_path, monkeypatch, capsys, caplog):
    assert run_stage(monkeypatch, "--help") == 0
    help_text = capsys.readouterr().out
    assert "--params" in help_text and "video-train" in help_text and "--face-model" in help_text
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(stage_params(tiny, seed=1, video_train={"windw": 4})))
    assert run_stage(monkeypatch, "--params", str(params_file), *stage_args(tiny, tmp_path)) == 2
    assert "video_train.windw is not a key of this section" in caplog.text
    assert not (tmp_path / "video.pt").exists()


@pytest.mark.parametrize("recipe", ["vgg_gru", "mrfer_gru"])
def test_stage_script_runs_and_reads_every_video_key(tiny, tmp_path, monkeypatch, recipe):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(stage_params(tiny, seed=5,
                                                       video_train=tiny_cfg(recipe=recipe, epochs=2).model_dump())))
    assert run_stage(monkeypatch, "--params", str(params_file), *stage_args(tiny, tmp_path)) == 0
    report = json.loads((tmp_path / "video_train.json").read_text())
    check_report(report, 4, 2)
    assert report["recipe"] == recipe
    assert (tmp_path / "video.pt").is_file() and (tmp_path / "live" / "metrics.json").is_file()
    # every key is read (the dataset's root too), both recipes' sub-sections included, whichever runs
    trace = config.trace()
    unread = {k for k in set(trace["loaded"]) - set(trace["read"])
              if k.startswith(("video_train.", "extract.", "datasets."))}
    assert unread == set() and "datasets.tiny.root" in trace["read"]
