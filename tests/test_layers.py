"""Imports run one way: base -> data -> nets -> transforms/infer -> train -> eval -> stages,
predict, plots. A module may import its own layer or an earlier one, never a later one."""
from __future__ import annotations

import pytest

from import_graph import REPO, closure, direct_imports, relative

LAYERS = [
    ("base", ["mrfer/__init__.py", "mrfer/errors.py", "mrfer/io.py", "mrfer/config.py", "mrfer/metrics.py"]),
    ("data", ["mrfer/data/"]),
    ("nets", ["mrfer/nets/"]),
    ("transforms/infer", ["mrfer/transforms.py", "mrfer/infer.py", "mrfer/infer_fsr.py", "mrfer/infer_clips.py"]),
    ("train", ["mrfer/train/"]),
    ("eval", ["mrfer/eval/"]),
    ("apps", ["mrfer/plots.py", "mrfer/predict.py", "mrfer/export.py", "mrfer/cli.py", "mrfer/__main__.py", "mrfer/sections.py",
              "mrfer/check.py",
              "stages/"]),
]
MODULES = sorted(p for p in REPO.glob("mrfer/**/*.py")) + sorted(REPO.glob("stages/*.py"))


def layer(path) -> int:
    name = str(path.relative_to(REPO))
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or (p.endswith("/") and name.startswith(p)) for p in prefixes):
            return rank
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_only_its_own_or_earlier_layers(path):
    later = sorted(str(f.relative_to(REPO)) for f in direct_imports(path) if layer(f) > layer(path))
    assert not later, f"{path.relative_to(REPO)} ({LAYERS[layer(path)][0]}) imports later layers: {later}"


def test_model_registry_is_a_leaf():
    assert relative(direct_imports(REPO / "mrfer/nets/registry.py")) <= {"mrfer/__init__.py", "mrfer/nets/__init__.py"}


def test_predict_imports_no_training_code():
    trained = sorted(p for p in relative(closure(REPO / "mrfer/predict.py")) if p.startswith("mrfer/train/"))
    assert not trained


@pytest.mark.parametrize("package, leaf", [("mrfer/nets", "registry.py"), ("mrfer/data/datasets", "registry.py")])
def test_registry_package_imports_every_module(package, leaf):
    """Registration happens on import, so the package must name every module: otherwise a model
    or reader would be missing, and DVC would not see it as a dep."""
    init = REPO / package / "__init__.py"
    modules = {p for p in (REPO / package).glob("*.py") if p.name not in ("__init__.py",)}
    registering = {p for p in modules if "@register(" in p.read_text()}
    assert registering and registering <= set(direct_imports(init))
    assert relative(direct_imports(REPO / package / leaf)) <= {"mrfer/__init__.py", "mrfer/errors.py",
                                                               "mrfer/data/__init__.py", "mrfer/data/records.py",
                                                               f"{package}/__init__.py", "mrfer/nets/__init__.py"}
