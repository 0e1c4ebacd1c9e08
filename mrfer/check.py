"""`mrfer check`: every params section validated before any stage runs (`make repro` runs it first).

Why before: `dvc repro` deletes a stage's outputs before it runs the stage, so a stage that then
refuses a bad param has already lost its `cache: false` metrics and dvclive curves (git has them:
`git checkout -- reports/ dvclive/`). This command reads the whole params file the way the stages
do, section by section so one bad section does not hide the next, adds the cross-section checks
that need no data, prints one line per problem and exits 2 when there is any.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from mrfer import config, sections
from mrfer.data.scales import too_small
from mrfer.errors import ParamsError

log = logging.getLogger("mrfer")

RESUME_DIR = Path("models") / "resume"   # where dvc.yaml's training stages keep their resume checkpoints


def problems(path: str | os.PathLike) -> list[str]:
    """Every problem found in the params file at `path`, one line each (none: it is valid)."""
    found: list[str] = []

    def attempt(fn: Callable[..., Any], *args) -> Any:
        try:
            return fn(*args)
        except ParamsError as e:
            if str(e) not in found:
                found.append(str(e))
            return None

    data = attempt(config.read_params, path)
    if data is None:
        return found
    loaded = {name: attempt(config.load_section, path, name, sections.schema(name), data)
              for name in sections.SCHEMAS if name in data}
    attempt(sections.validate_all, path)   # what the per-section loads do not cover (unknown sections, seed, ...)
    found += cross_section(path, loaded)
    return found


def cross_section(path: str | os.PathLike, loaded: dict[str, Any]) -> list[str]:
    """The checks between sections that need no data (each stage repeats its own where it runs)."""
    out = []
    extract, downsample = loaded.get("extract"), loaded.get("downsample")
    if extract is not None and downsample is not None:
        size = extract.size   # faces are size x size
        kernel = downsample.kernel
        out += [f"{path}: downsample.scales: {p} (extract.size {size})"
                for p in filter(None, (too_small(size, size, s, kernel) for s in downsample.scales))]
        distill = loaded.get("distill")
        if distill is not None and distill.scales:
            out += [f"{path}: distill.scales: {p} (extract.size {size})"
                    for p in filter(None, (too_small(size, size, s, distill.kernel or kernel) for s in distill.scales))]
    kfold, assemble = loaded.get("kfold_test"), loaded.get("assemble")
    if kfold is not None and assemble is not None:
        out += [f"{path}: kfold_test.folds.{name}.fold = {fold.fold}: out of range, assemble.folds is {assemble.folds}"
                for name, fold in kfold.folds.items() if not 0 <= fold.fold < assemble.folds]
    return out


def leftover_checkpoints(root: Path) -> list[Path]:
    """Resume checkpoints an interrupted training stage left under `root`/models/resume."""
    folder = root / RESUME_DIR
    return sorted(folder.rglob("*.pt")) if folder.is_dir() else []


def check_command(args) -> None:
    found = problems(args.params)
    for line in found:
        log.error("%s", line)
    for checkpoint in leftover_checkpoints(Path(args.params).resolve().parent):
        log.info("%s (%.0f MB): left by an interrupted training stage; a run of that stage with the same params "
                 "resumes from it, and deletes it when done (docs/faults.md)", checkpoint,
                 checkpoint.stat().st_size / 1e6)
    if found:
        sys.exit(2)
    log.info("%s: every section valid", args.params)


def add_arguments(parser):
    parser.add_argument("--params", default="params.yaml", help="the params file (default params.yaml)")
    parser.set_defaults(func=check_command)
    return parser
