"""A throwaway copy of this repository (tracked files only) with its own git + DVC, for tests that
run the real pipeline. Never touches the developer's checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "synthesize": {"n_subjects": 12, "image_size": [96, 96], "frames": [4, 6],
                   "identities": {"subjects": 6, "images_per_subject": 8, "image_size": [64, 64]},
                   "fer_csv": {"subjects": 6, "images_per_class": 2, "image_size": [64, 64]}},
    "extract": {"size": 32},
    "downsample": {"scales": ["x2", "x4"]},
    "assemble": {"folds": 3},
    "face_pretrain": {"arch_options": {"width": 0.125}, "epochs": 2, "batch_size": 16},
    "cr_pretrain": {"epochs": 1, "batch_size": 16, "p_every": 10},
    "pretrain_base": {"arch_options": {"width": 0.125}, "epochs": 2, "batch_size": 32},
    "multires_finetune": {"epochs": 1, "batch_size": 32},
    "distill": {"step1_epochs": 1, "step2_epochs": 1, "batch_size": 32},
    "video_train": {"epochs": 2, "hidden": 16},
    "fsr_train": {"blocks": 1, "channels": 16, "pretrain_epochs": 1, "epochs": 1, "batch_size": 16},
    "kfold_test": {"train": {"epochs": 1, "batch_size": 32, "distill": {"step1_epochs": 1, "step2_epochs": 0}},
                   "folds": {"fold0": {"fold": 0}, "fold1": {"fold": 1}, "fold2": {"fold": 2}}},
}


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def deep_update(base: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("folds", "options", "datasets"):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def make_repo(dest: Path, params: dict | None = None) -> Path:
    """Copy the tracked files to `dest`, apply tiny params, `git init` + commit with a local identity."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        source = REPO / name
        if source.is_file() and not name.startswith(("reports/", "dvc.lock")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    values = yaml.safe_load((dest / "params.yaml").read_text())
    deep_update(values, params if params is not None else TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.name", "mrfer tests"], dest)
    run(["git", "config", "user.email", "tests@mrfer.invalid"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test repo"], dest)
    return dest
