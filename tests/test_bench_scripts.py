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
