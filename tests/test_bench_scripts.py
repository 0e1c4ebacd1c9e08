"""The benchmarks are ready to run where no GPU is here: bench/gpu.sh parses, every script it
calls exists and accepts every flag it passes (checked against each script's own --help)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU_SH = REPO / "bench" / "gpu.sh"


def gpu_sh_calls() -> list[list[str]]:
    """The `$PY bench/<script>.py ...` lines of gpu.sh, split into words."""
    lines = GPU_SH.read_text().splitlines()
    return [shlex.split(line)[1:] for line in lines if re.match(r"^\$PY bench/\S+\.py", line)]


def test_gpu_sh_parses():
    result = subprocess.run(["bash", "-n", str(GPU_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(gpu_sh_calls()) >= 4


@pytest.mark.parametrize("call", gpu_sh_calls(), ids=lambda c: " ".join(c[:3]))
def test_gpu_sh_flags_exist_in_each_script(call):
    script = REPO / call[0]
    assert script.is_file(), script
    help_text = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout
    for flag in (w for w in call[1:] if w.startswith("--")):
        assert flag in help_text, f"{call[0]} does not accept {flag}"


def fake_run(root: Path, hr: float, x4: float, minutes: int) -> Path:
    """A run folder as bench/real_faces.py reads it: reports (classify, pretrain_base, cross_eval,
    classify's resolution CSV) and a log with a training stage's first and last INFO lines."""
    import json
    entry = lambda a: {"accuracy": a, "average_accuracy": a / 2, "macro_f1": a, "n": 10, "collapsed": False}  # noqa: E731
    reports = root / "reports"
    (reports / "accuracy_vs_resolution").mkdir(parents=True)
    (reports / "accuracy_vs_resolution" / "base.csv").write_text("scale,resolution_px,accuracy\nhr,48,0\nx4,12,0\n")
    (reports / "classify.json").write_text(json.dumps({"base": {"hr": {"head": entry(hr)}, "x4": {"head": entry(x4)}}}))
    (reports / "pretrain_base.json").write_text(json.dumps({"test": {"hr": entry(hr), "x4": entry(x4)}}))
    (reports / "cross_eval.json").write_text(json.dumps({"trained_on": "a", "scales": ["hr", "x4"], "targets": {
        "b": {"base": {"classes": ["happy", "sad"], "metrics": {"hr": entry(hr), "x4": entry(x4)}}}}}))
    (root / "log.txt").write_text("Running stage 'pretrain-base':\n"
                                  "10:00:00 INFO mrfer.train.loop: pretrain-base epoch 1: {}\n"
                                  f"10:{minutes:02d}:30 INFO mrfer.train.base: base test accuracy per scale: {{}}\n"
                                  "Running stage 'classify':\n11:00:00 INFO mrfer.eval.classify: done\n")
    return root


def test_real_faces_tables_read_run_folders(tmp_path):
    a, b = fake_run(tmp_path / "a", 0.5, 0.25, 6), fake_run(tmp_path / "b", 0.625, 0.375, 12)
    script = [sys.executable, str(REPO / "bench" / "real_faces.py")]
    out = subprocess.run(script + ["classify", str(a)], capture_output=True, text=True, check=True).stdout
    assert "| model | hr (48 px) | x4 (12 px) |" in out and "| base | 50.0 / 25.0 | 25.0 / 12.5 |" in out
    out = subprocess.run(script + ["compare", f"w1={a}", f"w2={b}"], capture_output=True, text=True, check=True).stdout
    assert "| w1 | 50.0 / 25.0 | 25.0 / 12.5 | 6.5 min |" in out and "| w2 | 62.5 / 31.2 | 37.5 / 18.8 | 12.5 min |" in out
    out = subprocess.run(script + ["cross-eval", str(a)], capture_output=True, text=True, check=True).stdout
    assert "| b | base | 2 | 50.0 / 25.0 | 25.0 / 12.5 |" in out
    missing = subprocess.run(script + ["classify", str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 2 and "classify.json is missing" in missing.stderr
