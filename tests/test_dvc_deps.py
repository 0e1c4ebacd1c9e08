"""dvc.yaml deps are exactly what each stage's script imports (read with ast) plus its data, so
DVC re-runs a stage when, and only when, code it runs changes."""
from __future__ import annotations

import re

import pytest
import yaml

from import_graph import REPO, closure, relative

CODE_DIRS = ("mrfer", "stages")


def dvc_stages() -> dict[str, dict]:
    """Stage name -> body; a foreach stage appears once (its `do` template)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def script_of(body: dict) -> str:
    found = re.findall(r"python (stages/\S+\.py)", body["cmd"])
    assert len(found) == 1, f"one stage script per stage, found {found} in {body['cmd']!r}"
    return found[0]


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_code_deps_are_the_scripts_import_closure(name):
    body = dvc_stages()[name]
    code_deps = {d for d in body["deps"] if str(d).startswith(CODE_DIRS)}
    assert code_deps == relative(closure(REPO / script_of(body)))


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_code_deps_are_files_not_folders(name):
    for dep in dvc_stages()[name]["deps"]:
        if str(dep).startswith(CODE_DIRS):
            assert (REPO / dep).is_file(), f"{name}: dep {dep} is not a file"


def test_every_stage_script_is_a_stage():
    scripts = {script_of(body) for body in dvc_stages().values()}
    assert scripts == {str(p.relative_to(REPO)) for p in (REPO / "stages").glob("*.py")}


@pytest.mark.parametrize("module, only", [("mrfer/train/video.py", {"video-train"}),
                                          ("mrfer/train/fsr.py", {"fsr-train"}),
                                          ("mrfer/data/synthetic.py", {"synthesize"})])
def test_a_recipe_edit_reruns_only_its_stage(module, only):
    assert {name for name, body in dvc_stages().items() if module in body["deps"]} == only
