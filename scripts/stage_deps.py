"""The code deps a dvc.yaml stage must list: its script's import closure (read with ast).

    python scripts/stage_deps.py stages/pretrain_base.py     print one stage's list
    python scripts/stage_deps.py --write                     rewrite every stage's code deps in dvc.yaml

`--write` keeps each stage's other deps (data, models) and every comment; tests/test_dvc_deps.py
compares the lists with dvc.yaml."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from import_graph import REPO, closure, relative  # noqa: E402

CODE_DIRS = ("mrfer/", "stages/")


def code_deps(script: str) -> list[str]:
    deps = relative(closure((REPO / script).resolve()))
    return sorted(deps, key=lambda d: (d != script, d))


def write_all(path: Path) -> list[str]:
    """Rewrite the code deps of every stage in `path`; the names of the stages that changed."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(path.read_text())
    changed = []
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        script = re.search(r"python (stages/\S+\.py)", body["cmd"]).group(1)
        others = [d for d in body["deps"] if not str(d).startswith(CODE_DIRS)]
        wanted = code_deps(script) + others
        if list(body["deps"]) != wanted:
            body["deps"].clear()
            body["deps"].extend(wanted)
            changed.append(name)
    with open(path, "w") as f:
        yaml.dump(doc, f)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scripts", nargs="*", help="stage scripts, e.g. stages/extract.py")
    parser.add_argument("--write", action="store_true", help="rewrite the code deps of every stage in dvc.yaml")
    args = parser.parse_args()
    if args.write:
        print("updated:", ", ".join(write_all(REPO / "dvc.yaml")) or "nothing")
    for script in args.scripts:
        print(f"# {script}\n" + "\n".join(f"      - {d}" for d in code_deps(script)))


if __name__ == "__main__":
    main()
