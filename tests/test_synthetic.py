"""The synthetic dataset: CK+'s exact layout and file formats, as folders and as CK+'s zips,
determinism (byte-identical zips), landmarks that match the drawing, expressions that move the
right landmarks, and atomic writing."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mrfer import config
from mrfer.data import synthetic
from mrfer.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_subjects": 3, "image_size": [64, 64], "frames": [3, 5], "labelled_fraction": 0.5, "seed": 7,
         "layout": "folders"}   # the layout tests walk the folders; the zips must extract to them


def repo_section() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["synthesize"]


def params(**overrides) -> synthetic.SynthesizeParams:
    """The repo's `synthesize` section (seed 1) updated by `overrides`, validated."""
    return synthetic.SynthesizeParams.model_validate({**repo_section(), "seed": 1, **overrides})


TINY = params(**SMALL)
NUMBER = r"\d\.\d{7}e[+-]\d{2}"
LANDMARK_LINE = re.compile(rf"   {NUMBER}   {NUMBER}\n")
EMOTION_FILE = re.compile(r"   [1-7]\.0000000e\+00\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiny") / "synthetic"
    summary = synthetic.synthesize(TINY, out)
    return out, summary


@pytest.fixture(scope="module")
def tiny_zips(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiny_zips") / "synthetic"
    summary = synthetic.synthesize(params(**{**SMALL, "layout": "zips"}), out)
    return out, summary


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def test_layout_and_file_names(tiny):
    root, summary = tiny
    assert sorted(p.name for p in root.iterdir()) == ["Emotion", "Landmarks", "cohn-kanade-images"]
    subjects = sorted(p.name for p in (root / "cohn-kanade-images").iterdir())
    assert len(subjects) == TINY.n_subjects
    assert all(re.fullmatch(r"S\d{3}", s) for s in subjects)
    for top in ("Emotion", "Landmarks"):
        assert sorted(p.name for p in (root / top).iterdir()) == subjects

    n_frames = 0
    for subject in subjects:
        sequences = sorted(p.name for p in (root / "cohn-kanade-images" / subject).iterdir())
        assert sequences == [f"{j:03d}" for j in range(1, len(sequences) + 1)]
        for seq in sequences:
            images = sorted(p.name for p in (root / "cohn-kanade-images" / subject / seq).iterdir())
            n = len(images)
            assert TINY.frames[0] <= n <= TINY.frames[1]
            assert images == [f"{subject}_{seq}_{t:08d}.png" for t in range(1, n + 1)]
            marks = sorted(p.name for p in (root / "Landmarks" / subject / seq).iterdir())
            assert marks == [f"{subject}_{seq}_{t:08d}_landmarks.txt" for t in range(1, n + 1)]
            n_frames += n
    assert n_frames == summary["frames"]


def test_images_are_8bit_grayscale(tiny):
    root, _ = tiny
    for path in sorted((root / "cohn-kanade-images").rglob("*.png"))[:10]:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        assert image.std() > 5   # a face, not a blank frame


def test_landmark_files_are_68_lines_in_ckplus_float_format(tiny):
    root, _ = tiny
    paths = sorted((root / "Landmarks").rglob("*_landmarks.txt"))
    assert paths
    for path in paths:
        lines = path.read_text().splitlines(keepends=True)
        assert len(lines) == 68
        assert all(LANDMARK_LINE.fullmatch(line) for line in lines), path
        points = np.loadtxt(path)
        assert points.shape == (68, 2)
        assert (points >= 0).all() and (points <= 63).all()


def test_emotion_files_name_the_last_frame_and_unlabelled_dirs_are_empty(tiny):
    root, summary = tiny
    labelled = unlabelled = 0
    counts = {name: 0 for name in summary["class_counts"]}
    for seq_dir in sorted((root / "Emotion").glob("S*/*")):
        subject, seq = seq_dir.parent.name, seq_dir.name
        last = len(list((root / "cohn-kanade-images" / subject / seq).iterdir()))
        found = list(seq_dir.iterdir())
        if not found:
            unlabelled += 1
            continue
        labelled += 1
        assert [p.name for p in found] == [f"{subject}_{seq}_{last:08d}_emotion.txt"]
        text = found[0].read_text()
        assert EMOTION_FILE.fullmatch(text), repr(text)
        counts[synthetic.CKPLUS[int(float(text))]] += 1
    assert labelled > 0 and unlabelled > 0
    assert labelled == summary["labelled_sequences"]
    assert labelled + unlabelled == summary["sequences"]
    assert counts == summary["class_counts"]


@pytest.mark.parametrize("layout", ["folders", "zips"])
def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tiny_zips, tmp_path, layout):
    root, _ = tiny if layout == "folders" else tiny_zips
    cfg = params(**{**SMALL, "layout": layout})
    again = tmp_path / "again"
    synthetic.synthesize(cfg, again, workers=2)
    assert files(again) == files(root)
    one_process = tmp_path / "one_process"
    synthetic.synthesize(cfg, one_process, workers=1)
    assert files(one_process) == files(root)
    other = tmp_path / "other"
    synthetic.synthesize(params(**{**SMALL, "seed": TINY.seed + 1, "layout": layout}), other)
    assert files(other) != files(root)


def test_zips_are_ckplus_as_distributed_and_extract_to_exactly_the_folders(tiny, tiny_zips, tmp_path):
    root, _ = tiny
    zips, summary = tiny_zips
    assert sorted(p.name for p in zips.iterdir()) == sorted(synthetic.ARCHIVES.values())
    for top, name in synthetic.ARCHIVES.items():
        with zipfile.ZipFile(zips / name) as zf:
            assert {n.split("/")[0] for n in zf.namelist()} == {top}
            zf.extractall(tmp_path / "extracted")
    assert files(tmp_path / "extracted") == files(root)
    assert folders(tmp_path / "extracted") == folders(root)   # empty Emotion folders too
    assert summary == tiny[1]


def test_zip_members_have_fixed_order_and_metadata(tiny_zips):
    zips, _ = tiny_zips
    for name in synthetic.ARCHIVES.values():
        with zipfile.ZipFile(zips / name) as zf:
            infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names) and len(set(names)) == len(names)   # each folder before its files
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0) and info.compress_type == zipfile.ZIP_STORED
            assert info.create_system == 3 and not info.extra and not info.comment
            assert info.external_attr >> 16 == (0o40755 if info.is_dir() else 0o100644)


def test_more_subjects_leave_earlier_subjects_unchanged(tmp_path):
    cfg = {**SMALL, "image_size": [48, 48], "frames": [2, 3]}
    synthetic.synthesize(params(**{**cfg, "n_subjects": 1}), tmp_path / "one")
    synthetic.synthesize(params(**{**cfg, "n_subjects": 2}), tmp_path / "two")
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(two) > len(one)
    assert {k: two[k] for k in one} == one


def subject(code: int, difficulty: float, size: int = 160, seed: int = 3):
    """Neutral and apex (image, pixel landmarks) of one sequence showing CK+ code `code`."""
    cfg = params(image_size=[size, size], difficulty=difficulty, seed=seed)
    _, ident, _ = synthetic.subject_plan(seed, 0, cfg.expression_rate, cfg.contempt_rate)
    frames = synthetic.sequence_frames(ident, code, 6, np.random.default_rng([seed, code]), cfg.image_size,
                                       cfg.difficulty, cfg.apex_intensity)
    return ident, frames[0], frames[-1]


@pytest.mark.parametrize("difficulty", [0.0, 1.0])
def test_landmarks_match_the_drawing(difficulty):
    ident, (image, pts), _ = subject(5, difficulty)
    face = np.zeros_like(image)
    cv2.fillPoly(face, [np.round(pts[0:17]).astype(np.int32)], 255)   # jaw line, closed over the eyes
    assert face.sum() > 0.1 * face.size * 255
    skin = np.median(image[face > 0])
    if difficulty == 0:   # no lighting change: the region inside the jaw is the subject's skin
        assert abs(skin - ident.skin) < 10
    # Pupils sit between the eye landmarks: much darker than the skin round them.
    for eye in (pts[36:42], pts[42:48]):
        x, y = np.round(eye.mean(0)).astype(int)
        assert image[y, x] < 0.6 * skin
    # The closed lips meet on a dark line where the inner-lip landmarks are.
    x, y = np.round(pts[[62, 66]].mean(0)).astype(int)
    assert image[y, x] < 0.85 * skin


def face_frame(pts: np.ndarray) -> np.ndarray:
    """Landmarks in a head frame: origin between the eye corners, x along the eyes, unit = eye distance."""
    left, right = pts[[36, 39]].mean(0), pts[[42, 45]].mean(0)
    x = right - left
    scale = np.hypot(*x)
    x = x / scale
    y = np.array([-x[1], x[0]])
    centered = pts - (left + right) / 2
    return np.stack([centered @ x, centered @ y], 1) / scale


def apex_motion(code: int) -> tuple[np.ndarray, np.ndarray]:
    """Neutral and apex landmarks in the head frame (eye distance ~0.8 face half-widths)."""
    _, (_, neutral), (_, apex) = subject(code, 0.5)
    return face_frame(neutral), face_frame(apex)


def test_happy_pulls_lip_corners_up_and_out():
    n, a = apex_motion(5)
    assert (a[[48, 54], 1] < n[[48, 54], 1] - 0.03).all()
    assert a[54, 0] - a[48, 0] > n[54, 0] - n[48, 0] + 0.03


def test_surprise_opens_the_mouth_and_raises_the_brows():
    n, a = apex_motion(7)
    assert (a[66, 1] - a[62, 1]) > (n[66, 1] - n[62, 1]) + 0.05
    assert a[17:27, 1].mean() < n[17:27, 1].mean() - 0.03


def test_anger_lowers_and_draws_the_brows_together():
    n, a = apex_motion(1)
    assert a[17:27, 1].mean() > n[17:27, 1].mean() + 0.015
    assert a[22, 0] - a[21, 0] < n[22, 0] - n[21, 0] - 0.03


def test_sadness_depresses_lip_corners_and_contempt_is_one_sided():
    n, a = apex_motion(6)
    assert (a[[48, 54], 1] > n[[48, 54], 1] + 0.03).all()
    n, a = apex_motion(2)
    lift = n[[48, 54], 1] - a[[48, 54], 1]
    assert lift.max() > 0.02 and abs(lift.min()) < 0.005


def test_neutral_frame_does_not_depend_on_the_expression():
    # The first frame has intensity 0: the same landmarks whatever the sequence will become,
    # up to the per-frame head jitter (so compare in the head frame).
    neutral = [apex_motion(code)[0] for code in (1, 5, 7)]
    assert np.abs(neutral[0] - neutral[1]).max() < 1e-6
    assert np.abs(neutral[0] - neutral[2]).max() < 1e-6


@pytest.mark.parametrize("layout", ["folders", "zips"])
def test_failure_mid_write_leaves_no_output(tmp_path, monkeypatch, layout):
    render = synthetic.sequence_frames
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "sequence_frames", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.synthesize(params(**{**SMALL, "layout": layout}), tmp_path / "synthetic", workers=1)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_failure_in_a_worker_process_leaves_no_output(tmp_path, monkeypatch):
    def failing(ident, code, *args, **kwargs):
        raise RuntimeError(f"disk full at code {code}")

    monkeypatch.setattr(synthetic, "sequence_frames", failing)  # forked workers inherit it
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.synthesize(TINY, tmp_path / "synthetic", workers=2)
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_dataset(tmp_path, monkeypatch):
    out = tmp_path / "synthetic"
    cfg = {**SMALL, "n_subjects": 1, "image_size": [48, 48], "frames": [2, 2]}
    synthetic.synthesize(params(**cfg), out)
    before = files(out)

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(synthetic, "sequence_frames", failing)
    with pytest.raises(RuntimeError):
        synthetic.synthesize(params(**{**cfg, "seed": 99}), out)
    assert files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]


def write_params(path: Path, seed: int = 5, **overrides) -> Path:
    """A params file: the repo's synthesize section updated by `overrides`, and a top-level seed."""
    path.write_text(yaml.safe_dump({"seed": seed, "synthesize": {**repo_section(), **overrides}}))
    return path


def test_repo_params_validate_and_the_shared_seed_fills_the_section():
    cfg = config.load_section(ROOT / "params.yaml", "synthesize", synthetic.SynthesizeParams)
    assert cfg.seed == yaml.safe_load((ROOT / "params.yaml").read_text())["seed"]
    assert cfg.difficulty == repo_section()["difficulty"]
    assert cfg.layout == "zips"   # DVC tracks three files, not ~10k


@pytest.mark.parametrize("overrides, message", [
    ({"frames": [1, 3]}, r"synthesize\.frames = \[1, 3\]: must be \[min, max\] with 2 <= min <= max"),
    ({"frames": [5, 3]}, r"synthesize\.frames = \[5, 3\]"),
    ({"difficulty": 2}, r"synthesize\.difficulty = 2: .*less than or equal to 1"),
    ({"image_size": [16, 64]}, r"synthesize\.image_size\.0 = 16: .*greater than or equal to 32"),
    ({"n_subjects": 0}, r"synthesize\.n_subjects = 0"),
    ({"labelled_fraction": "most"}, r"synthesize\.labelled_fraction = 'most'"),
    ({"difficulty": None}, r"synthesize\.difficulty = None"),
    ({"layout": "tar"}, r"synthesize\.layout = 'tar': .*'zips' or 'folders'"),
])
def test_bad_params_are_refused(tmp_path, overrides, message):
    path = write_params(tmp_path / "params.yaml", **overrides)
    with pytest.raises(ParamsError, match=rf"^{path}: {message}"):
        config.load_section(path, "synthesize", synthetic.SynthesizeParams)


def test_bad_params_stop_the_stage_before_any_output(tmp_path):
    path = write_params(tmp_path / "params.yaml", frames=[1, 3])
    result = subprocess.run([sys.executable, "stages/synthesize.py", "--params", str(path), "--out",
                             str(tmp_path / "x"), "--identities", str(tmp_path / "ids"), "--fer-csv",
                             str(tmp_path / "fer"), "--report", str(tmp_path / "r.json")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}: synthesize.frames = [1, 3]" in result.stderr
    assert not any((tmp_path / n).exists() for n in ("x", "ids", "fer"))


def members(archive: Path, suffix: str) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        return [n for n in zf.namelist() if n.endswith(suffix)]


def test_stage_script_writes_dataset_and_report(tmp_path):
    section = {k: v for k, v in SMALL.items() if k not in ("seed", "layout")}   # the repo's layout: zips
    identities = {"subjects": 2, "images_per_subject": 3, "image_size": [64, 64]}
    fer_csv = {"subjects": 2, "images_per_class": 1, "image_size": [64, 64], "difficulty": 0.6, "apex_intensity": 0.8}
    path = write_params(tmp_path / "params.yaml", seed=5, **{**section, "n_subjects": 2, "identities": identities,
                                                             "fer_csv": fer_csv})
    out, report = tmp_path / "data" / "synthetic", tmp_path / "reports" / "synthesize.json"
    ids = tmp_path / "data" / "identities"
    subprocess.run([sys.executable, "stages/synthesize.py", "--params", str(path), "--out", str(out),
                    "--identities", str(ids), "--fer-csv", str(tmp_path / "data" / "fer"), "--report", str(report)],
                   cwd=ROOT, check=True, capture_output=True)
    summary = json.loads(report.read_text())
    assert summary["identities"] == {"identities": 2, "images": 6}
    assert summary["fer_csv"]["images"] == 2 * 7 and (tmp_path / "data" / "fer" / "fer2013.csv").is_file()
    assert len(list((ids / "train").glob("n*/*.jpg"))) == 6
    assert summary["seed"] == 5 and summary["subjects"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(synthetic.ARCHIVES.values())
    assert summary["frames"] == len(members(out / "extended-cohn-kanade-images.zip", ".png"))
    assert sum(summary["class_counts"].values()) == summary["labelled_sequences"]
    assert len(members(out / "Emotion_labels.zip", "_emotion.txt")) == summary["labelled_sequences"]


def test_stage_script_help():
    result = subprocess.run([sys.executable, "stages/synthesize.py", "--help"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert "--params" in result.stdout and "--out" in result.stdout and "--report" in result.stdout
    result = subprocess.run([sys.executable, "stages/synthesize.py"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "--out" in result.stderr and "--report" in result.stderr
