"""Faults that used to lose data or hide a failure, each as a user met it, and what happens now
(docs/faults.md): one line naming the file or key and exit 2, no half-written output, no lost
earlier result, no temp files left behind.

A full disk is a real one where the kernel lets an unprivileged test mount a small tmpfs in a
private mount namespace (`unshare -rm`, no root needed); the same faults are also simulated in
process, by a write that raises ENOSPC, so they are tested on every machine.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import yaml

from assembled_fixture import make_assembled
from mrfer import check, export, io, predict
from mrfer.__main__ import main
from mrfer.data import assemble, downsample
from mrfer.data.scales import DownsampleParams
from mrfer.errors import DatasetError, DivergedError, InputError, NoSpaceError, ParamsError
from mrfer.nets import build, checkpoint, weights
from mrfer.train import base
from params_fixture import raw_params, section

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["angry", "happy", "neutral"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def run_cli(argv: list[str], caplog) -> str:
    """`mrfer ARGV` in process: it must exit 2 with exactly one error line; that line."""
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    lines = errors_logged(caplog)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    return lines[0]


def temps(folder: Path) -> list[str]:
    """What atomic_path left in `folder`: its temp folders are named `.<name>.tmp<pid>-...`."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def save_model(path: Path, size: int = 32, channels: int = 1) -> Path:
    torch.manual_seed(0)
    model = build("baseline_cnn", num_classes=len(CLASSES), in_chans=channels, image_size=size, width=0.125)
    checkpoint.save_model(path, model, {"arch": "baseline_cnn", "options": {"width": 0.125}, "classes": CLASSES,
                                        "size": size, "channels": channels, "mean": [110.0] * channels,
                                        "std": [50.0] * channels, "params_hash": "test", "stage": "pretrain_base"})
    return path


# ------------------------------------------------------------------ a full disk

@functools.lru_cache(maxsize=None)
def tmpfs_allowed() -> bool:
    """Whether this kernel lets us mount a tmpfs in a private user + mount namespace."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt || "
                            "mount -t tmpfs -o size=16k tmpfs \"$TMPDIR\""], capture_output=True,
                           env={**os.environ, "TMPDIR": "/tmp"}, timeout=30)
    return probe.returncode == 0


def on_small_disk(disk: Path, kib: int, code: str, *args: str) -> dict:
    """Run Python `code` (sys.argv[1] is `disk`, then `args`) with a `kib` KiB tmpfs mounted at
    `disk`, in a private mount namespace; the JSON the code prints last."""
    disk.mkdir(exist_ok=True)
    script = 'mount -t tmpfs -o size="$1"k tmpfs "$2" && shift 2 && exec "$0" "$@"'
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, str(kib), str(disk), "-c", code,
                             str(disk), *args], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# Run a command on the small disk after writing an "earlier result" there; report what is left.
DRIVER = r"""
import json, os, subprocess, sys
disk, cmd = sys.argv[1], sys.argv[2:]
os.makedirs(f"{disk}/downsampled")
open(f"{disk}/downsampled/x2.npy", "w").write("earlier result")
run = subprocess.run(cmd, capture_output=True, text=True)
print(json.dumps({"rc": run.returncode, "stderr": run.stderr, "left": sorted(os.listdir(disk)),
                  "earlier": open(f"{disk}/downsampled/x2.npy").read()}))
"""


def small_faces(path: Path, n: int = 200, size: int = 64) -> Path:
    np.save(path, np.random.default_rng(0).integers(0, 256, (n, size, size, 1), dtype=np.uint8))
    return path


def downsample_params(tmp_path: Path, scales: list[str]) -> Path:
    params = raw_params()
    params["downsample"] = {**params["downsample"], "scales": scales}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.skipif(not tmpfs_allowed(), reason="this kernel allows no unprivileged tmpfs mount (unshare -rm); "
                    "test_downsample_refuses_a_full_disk_in_one_line simulates the full disk instead")
def test_downsample_on_a_real_full_disk_says_so_and_leaves_no_temp_files(tmp_path):
    """Was: a SIGBUS, no message, its temp folder left behind to keep the disk full."""
    faces = small_faces(tmp_path / "faces.npy")             # 0.8 MB; 5 scales need 4 MB, the disk has 1 MB
    params = downsample_params(tmp_path, ["x2", "x3", "x4", "x6", "x8"])
    disk = tmp_path / "disk"
    out = on_small_disk(disk, 1024, DRIVER, sys.executable, str(REPO / "stages" / "downsample.py"),
                        "--params", str(params), "--faces", str(faces), "--out", str(disk / "downsampled"))
    assert out["rc"] == 2 and "Traceback" not in out["stderr"], out["stderr"]
    [line] = [x for x in out["stderr"].splitlines() if "ERROR" in x]
    assert re.search(rf"ERROR mrfer: {disk / 'downsampled'}: needs 4116480 bytes \(4\.12 MB\) but its device has "
                     r"\d+ bytes \(1\.0\d MB\) free: free some space", line), line
    assert out["left"] == ["downsampled"] and out["earlier"] == "earlier result"

    # the free-space check passed (another writer filled the disk after it): the blocks are
    # reserved before the map is written, so this is one line too, never a SIGBUS
    racing = ("import sys, mrfer.io, mrfer.data.downsample as d; from mrfer import cli\n"
              "mrfer.io.require_space = d.require_space = lambda *a: None\n"
              "from mrfer.data.scales import DownsampleParams\n"
              "cfg = DownsampleParams(scales=['x2', 'x3', 'x4'], kernel='bicubic_aa', chunk=64)\n"
              "cli.run(lambda: d.downsample(cfg, sys.argv[1], sys.argv[2]))\n")
    out = on_small_disk(disk, 1024, DRIVER, sys.executable, "-c", racing, str(faces), str(disk / "downsampled"))
    assert out["rc"] == 2 and "Traceback" not in out["stderr"], out["stderr"]
    [line] = [x for x in out["stderr"].splitlines() if "ERROR" in x]   # x2 fits; x3 finds the disk full
    assert re.search(rf"ERROR mrfer: {disk / 'downsampled' / 'x3.npy'}: needs 819328 bytes "
                     r"\(0\.82 MB\) but its device has \d+ bytes \(0\.\d\d MB\) free", line), line
    assert out["left"] == ["downsampled"] and out["earlier"] == "earlier result"


def test_downsample_refuses_a_full_disk_in_one_line(tmp_path, monkeypatch):
    faces = small_faces(tmp_path / "faces.npy", n=20)
    out_dir = tmp_path / "downsampled"
    out_dir.mkdir()
    (out_dir / "x2.npy").write_text("earlier result")
    cfg = DownsampleParams(scales=["x2", "x4"], kernel="bicubic_aa", chunk=8)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(NoSpaceError, match=rf"^{out_dir}: needs \d+ bytes \(0\.\d\d MB\) but its device has 1000 "
                                           r"bytes \(0\.00 MB\) free"):
        downsample.downsample(cfg, faces, out_dir)
    assert (out_dir / "x2.npy").read_text() == "earlier result" and temps(tmp_path) == []

    # enough free space by the count, but the blocks cannot be reserved (a race): one line too
    monkeypatch.setattr(shutil, "disk_usage", real)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(NoSpaceError, match=rf"^{out_dir / 'x2.npy'}: needs \d+ bytes .* free some space"):
        downsample.downsample(cfg, faces, out_dir)
    assert (out_dir / "x2.npy").read_text() == "earlier result" and temps(tmp_path) == []


def test_a_killed_runs_temp_folder_is_removed_by_the_next_run(tmp_path):
    """A SIGKILL (out of memory) runs no clean-up; the next write of the same output does it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".report.json.tmp{dead.pid}-abc"
    (stale / "report.json").parent.mkdir()
    (stale / "report.json").write_bytes(b"\0" * 1000)
    alive = tmp_path / f".report.json.tmp{os.getppid()}-xyz"   # a running process: its write goes on
    alive.mkdir()
    io.write_json(tmp_path / "report.json", {"ok": 1})
    assert json.loads((tmp_path / "report.json").read_text()) == {"ok": 1}
    assert not stale.exists() and alive.exists()


def test_extract_cuts_its_array_in_place_to_the_bytes_np_save_writes(tmp_path):
    """extract reserves room for every record, then keeps the faces found: no second copy on disk."""
    faces = io.create_npy(tmp_path / "faces.npy", (1000, 8, 8, 1))
    faces[:] = np.arange(faces.size, dtype=np.int64).reshape(faces.shape) % 251
    kept = np.array(faces[:997])
    faces.flush()
    del faces
    io.shrink_npy(tmp_path / "faces.npy", 997)
    np.save(tmp_path / "expected.npy", kept)
    assert (tmp_path / "faces.npy").read_bytes() == (tmp_path / "expected.npy").read_bytes()


# ------------------------------------------------------------------ one class, a NaN loss

def one_class(data: Path) -> Path:
    """The assembled fixture with every training face relabelled as class 0."""
    manifest = data / "train" / "manifest.csv"
    lines = manifest.read_text().splitlines()
    header = lines[0].split(",")
    at, name = header.index("label"), header.index("class")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[at], row[name] = "0", CLASSES[0]
    manifest.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    return data


def test_assemble_refuses_a_training_split_of_one_class():
    labels = np.zeros(40, dtype=int)
    with pytest.raises(DatasetError, match=r"^dataset ck \(data/extracted/ck/manifest\.csv\): its training split has "
                                           r"1 class\(es\) \(angry: 40; every other class 0\); expression recognition "
                                           r"needs at least 2: check datasets\.ck\.root"):
        assemble.check_classes("ck", labels, CLASSES, Path("data/extracted/ck"))
    assemble.check_classes("ck", np.array([0, 2, 2]), CLASSES, Path("data/extracted/ck"))   # two classes: fine


def test_a_nan_loss_stops_training_with_one_line_and_no_model(tmp_path):
    """Was: class_weighted on one class gave that class weight 0, a NaN loss, exit 0 and a NaN model."""
    data = one_class(make_assembled(tmp_path / "assembled"))
    cfg = section("pretrain_base", base.PretrainBaseParams, seed=3, init="scratch", arch_options={"width": 0.125},
                  epochs=2, batch_size=16, class_weighted=True)
    with pytest.raises(DivergedError, match=r"^pretrain-base epoch 1/2: the training loss is nan by face 16; likely "
                                            r"causes: lr too high, a class weight of 0"):
        base.fit_base(cfg, data, tmp_path / "base.pt", tmp_path / "base.json", ["x2"], live_dir=None,
                      resume=tmp_path / "resume.pt")
    assert not (tmp_path / "base.pt").exists() and not (tmp_path / "base.json").exists()


# ------------------------------------------------------------------ a huge image to predict

def png_header_only_cost(path: Path, side: int) -> Path:
    """A valid gray PNG of side x side black pixels: a few hundred KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(1)
    rows = bytes(side + 1) * 500   # filter byte + pixels, 500 rows at a time
    body = b"".join(z.compress(rows) for _ in range(side // 500)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_a_huge_image_is_refused_from_its_header(tmp_path, monkeypatch, caplog):
    """Was: a 20,000 x 20,000 PNG of 400 KB took over 7 GB and kept growing."""
    model = save_model(tmp_path / "base.pt")
    huge = png_header_only_cost(tmp_path / "huge.png", 20_000)    # over PIL's own bomb limit too
    large = png_header_only_cost(tmp_path / "large.png", 8_000)   # 64 MP: under PIL's limit, over ours

    def never(*args, **kwargs):
        raise AssertionError("decoded a refused image")
    monkeypatch.setattr(cv2, "imread", never)
    for image, size in ((huge, "400 megapixels"), (large, "8000 x 8000 = 64 megapixels")):
        line = run_cli(["predict", str(image), "--model", str(model), "--given-box", "--device", "cpu",
                        "--out", str(tmp_path / "out")], caplog)
        assert line.startswith(f"{image}: {size}, over the 50-megapixel limit") and "downscale" in line
    assert not (tmp_path / "out").exists()

    # in a folder, it is listed as unreadable and the other images go on
    monkeypatch.undo()
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.move(large, folder / "large.png")
    cv2.imwrite(str(folder / "face.png"), np.full((40, 40), 128, np.uint8))
    report = predict.predict_command(predict.build_parser().parse_args(
        [str(folder), "--model", str(model), "--given-box", "--device", "cpu", "--out", str(tmp_path / "out")]))
    assert [r["file"] for r in report["faces"]] == [str(folder / "face.png")]
    assert [r["file"] for r in report["unreadable"]] == [str(folder / "large.png")]
    assert "64 megapixels" in report["unreadable"][0]["error"]


# ------------------------------------------------------------------ params checked before dvc repro

def test_mrfer_check_prints_one_line_per_problem_before_any_stage_runs(tmp_path):
    """Was: under dvc repro a stage refused a bad param after DVC had deleted its metrics."""
    params = raw_params()
    params["downsample"]["scales"] = ["x2", "x1000"]
    params["pretrain_base"]["epochs"] = "ten"
    params["export"]["opset"] = 5
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    (tmp_path / "models" / "resume").mkdir(parents=True)
    (tmp_path / "models" / "resume" / "pretrain_base.pt").write_bytes(b"\0" * 2_000_000)
    result = subprocess.run([sys.executable, "-m", "mrfer", "check", "--params", str(bad)], capture_output=True,
                            text=True, env=ENV, cwd=REPO, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line.split("ERROR mrfer: ", 1)[1] for line in result.stderr.splitlines() if "ERROR" in line]
    assert errors == [
        f"{bad}: pretrain_base.epochs = 'ten': Input should be a valid integer, unable to parse string as an integer",
        f"{bad}: export.opset = 5: Input should be greater than or equal to 13",
        f"{bad}: downsample.scales: 'x1000' gives 1x1 px faces from 64x64 px ones; the low-resolution side must be "
        "at least 4 px (extract.size 64)"]
    assert "pretrain_base.pt (2 MB): left by an interrupted training stage" in result.stderr

    good = subprocess.run([sys.executable, "-m", "mrfer", "check"], capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=300)
    assert good.returncode == 0, good.stderr
    assert check.problems(REPO / "params.yaml") == []


def test_make_repro_checks_the_params_first():
    plan = subprocess.run(["make", "-n", "repro"], capture_output=True, text=True, cwd=REPO, timeout=60).stdout
    lines = plan.splitlines()
    first_check = next(i for i, line in enumerate(lines) if "-m mrfer check" in line)
    assert first_check < next(i for i, line in enumerate(lines) if "dvc repro" in line)


# ------------------------------------------------------------------ imported weights that are not weights

def test_a_truncated_or_onnx_weight_file_is_named_in_one_line(tmp_path):
    """Was: a raw UnpicklingError traceback (pretrain_base.weights with init: imported)."""
    model = build("resnet18", num_classes=3, in_chans=3, image_size=32)
    whole = tmp_path / "whole.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, whole)
    truncated = tmp_path / "resnet18.pth"
    truncated.write_bytes(whole.read_bytes()[:700])
    with pytest.raises(InputError, match=rf"^{truncated}: not a weight file mrfer reads: a damaged or truncated "
                                         r"torch \(zip\) file: its end is missing; expected a torch state dict"):
        weights.import_weights(model, "torchvision", truncated)
    onnx_file = tmp_path / "resnet18.onnx"
    export_model = save_model(tmp_path / "base.pt")
    export.export_onnx(export_model, onnx_file, 17)
    with pytest.raises(InputError, match=rf"^{onnx_file}: not a weight file mrfer reads: an ONNX model"):
        weights.import_weights(model, "torchvision", onnx_file)
    with pytest.raises(InputError, match=rf"^{onnx_file}: an ONNX model, not a torch checkpoint"):
        checkpoint.load(onnx_file)   # pretrain_base.init: <a model file> given an ONNX file
    (tmp_path / "cut.pkl").write_bytes(b"\x80\x02}q\x00(X\x01")
    with pytest.raises(InputError, match=r"cut\.pkl: not a weight file mrfer reads: a truncated pickle"):
        weights.read_weight_file(tmp_path / "cut.pkl")


# ------------------------------------------------------------------ no space for a model or an export

@pytest.mark.skipif(not tmpfs_allowed(), reason="this kernel allows no unprivileged tmpfs mount (unshare -rm); "
                    "test_checkpoint_and_export_refuse_a_full_disk_in_one_line simulates the full disk instead")
def test_checkpoint_and_export_on_a_real_full_disk(tmp_path):
    model = save_model(tmp_path / "base.pt")
    code = r"""
import json, os, sys, torch
from mrfer import export
from mrfer.nets import checkpoint
disk, model = sys.argv[1], sys.argv[2]
out = {}
for name, write in (("ckpt.pt", lambda p: checkpoint.save(p, {"w": torch.zeros(100_000)})),
                    ("base.onnx", lambda p: export.export_onnx(model, p, 17))):
    open(f"{disk}/{name}", "w").write("earlier result")
    try:
        write(f"{disk}/{name}")
        out[name] = "written"
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"
    out[name + " after"] = open(f"{disk}/{name}").read()
out["left"] = sorted(os.listdir(disk))
print(json.dumps(out))
"""
    disk = tmp_path / "disk"
    out = on_small_disk(disk, 8, code, str(model))
    for name in ("ckpt.pt", "base.onnx"):
        assert out[name] == (f"NoSpaceError: {disk / name}: no space left on device; the partial output was removed "
                             f"and any earlier {name} is unchanged: free some space and run again")
        assert out[name + " after"] == "earlier result"
    assert out["left"] == ["base.onnx", "ckpt.pt"]


def test_checkpoint_and_export_refuse_a_full_disk_in_one_line(tmp_path, monkeypatch):
    """Was: a raw OSError, or torch's `enforce fail at inline_container.cc`."""
    model = save_model(tmp_path / "base.pt")

    def save_part(payload, f):   # the disk fills up mid-write
        f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    def write_part(self, data):
        with open(self, "wb") as f:
            f.write(data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    cases = (("ckpt.pt", lambda p: checkpoint.save(p, {"w": torch.zeros(1000)}), (torch, "save", save_part)),
             ("base.onnx", lambda p: export.export_onnx(model, p, 17), (Path, "write_bytes", write_part)))
    for name, write, patch in cases:
        target = tmp_path / name
        target.write_text("earlier result")
        monkeypatch.setattr(*patch)
        with pytest.raises(NoSpaceError, match=rf"^{target}: no space left on device; the partial output was "
                                               rf"removed and any earlier {name} is unchanged"):
            write(target)
        monkeypatch.undo()
        assert target.read_text() == "earlier result" and temps(tmp_path) == []


# ------------------------------------------------------------------ a scale too small for the faces

def test_a_scale_that_leaves_a_pixel_is_refused(tmp_path):
    """Was: `downsample.scales: [x1000]` on 64 px faces wrote flat faces without a word."""
    faces = small_faces(tmp_path / "faces.npy", n=4)
    cfg = DownsampleParams(scales=["x2", "x1000"], kernel="bicubic_aa", chunk=8)
    with pytest.raises(ParamsError, match=r"^downsample.scales: 'x1000' gives 1x1 px faces from 64x64 px ones; the "
                                          r"low-resolution side must be at least 4 px"):
        downsample.downsample(cfg, faces, tmp_path / "downsampled")
    assert not (tmp_path / "downsampled").exists()
    ok = DownsampleParams(scales=["x16", "4px"], kernel="matlab", chunk=8)   # 4 px: the smallest allowed
    assert downsample.downsample(ok, faces, tmp_path / "downsampled") == {"x16": (4, 4), "4px": (4, 4)}


# ------------------------------------------------------------------ a tampered ONNX file

def tampered(source: Path, dest: Path, **values: str) -> Path:
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        key = prop.key.removeprefix(export.PREFIX)
        if key in values:
            prop.value = values[key]
    onnx.save(proto, str(dest))
    return dest


def test_tampered_onnx_metadata_is_named_and_leaves_no_output_folder(tmp_path, caplog):
    """Was: a ValueError/IndexError traceback and an empty annotated/ folder."""
    good = tmp_path / "base.onnx"
    export.export_onnx(save_model(tmp_path / "base.pt"), good, 17)
    cases = {
        "mean_text": ({"mean": json.dumps(["a"])}, r"metadata mrfer\.mean = \[\"a\"\]: expected 1 number\(s\), one per "
                                                   r"channel"),
        "mean_not_json": ({"mean": "one hundred"}, r"metadata mrfer\.mean = 'one hundred' is not JSON"),
        "classes": ({"classes": json.dumps(["angry", "happy", "neutral", "sad"])},
                    r"metadata mrfer\.classes = \[.*\]: expected distinct class names, one per logit \(the graph has 3\)"),
        "size": ({"size": json.dumps(48)}, r"metadata mrfer\.size = 48: expected the side of the graph's input"),
        "std": ({"std": json.dumps([0])}, r"metadata mrfer\.std = \[0\]: expected 1 positive number"),
    }
    for name, (values, message) in cases.items():
        path = tampered(good, tmp_path / f"{name}.onnx", **values)
        with pytest.raises(InputError, match=rf"^{path}: {message}"):
            export.load_onnx(path)
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((40, 40), 128, np.uint8))
    line = run_cli(["predict", str(face), "--model", str(tmp_path / "classes.onnx"), "--given-box",
                    "--out", str(tmp_path / "out")], caplog)
    assert line.startswith(f"{tmp_path / 'classes.onnx'}: metadata mrfer.classes")
    assert not (tmp_path / "out").exists()

    # a single unreadable image: one line, and no empty output folders either
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    line = run_cli(["predict", str(corrupt), "--model", str(good), "--given-box", "--out", str(tmp_path / "out")],
                   caplog)
    assert str(corrupt) in line and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ determinism and the thread count

@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_same_seed_and_thread_count_give_identical_weights_and_the_count_is_recorded(tmp_path, two_threads):
    data = make_assembled(tmp_path / "assembled")
    cfg = section("pretrain_base", base.PretrainBaseParams, seed=3, init="scratch", arch_options={"width": 0.125},
                  epochs=2, batch_size=16)
    runs = []
    for name in ("a", "b"):
        base.fit_base(cfg, data, tmp_path / name / "base.pt", tmp_path / name / "base.json", ["x2"], live_dir=None,
                      resume=tmp_path / name / "resume.pt")
        runs.append(checkpoint.load(tmp_path / name / "base.pt"))
    a, b = runs
    assert a["meta"]["versions"]["torch_threads"] == b["meta"]["versions"]["torch_threads"] == "2"
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert (tmp_path / "a" / "base.pt").read_bytes() == (tmp_path / "b" / "base.pt").read_bytes()
