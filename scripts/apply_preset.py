"""Merge a preset (configs/<name>.yaml) into params.yaml.

    python scripts/apply_preset.py configs/mafer-rafdb.yaml            # rewrites params.yaml
    python scripts/apply_preset.py configs/mafer-rafdb.yaml --dry-run  # prints the result only

A preset has the shape of params.yaml, holding only what differs. Merge rule: every key given
in a preset section replaces that key's whole value (so `extract.options`, `arch_options`,
`augment` or `kfold_test.folds` come from the preset in full, never half-merged with the
old value); keys the preset does not name keep their value; a top-level scalar (`seed`)
replaces the old one; `datasets` is replaced whole (a preset names the datasets it runs on). A
training section may set any key it would take from `loop` (or
`finetune`): the preset's value then overrides the shared one for that stage only. Every section
must already exist in params.yaml and every key must be one of its schema's, and the merged file
must pass every section's schema (`mrfer.sections`), so a typo or a bad value fails here instead
of mid-pipeline.
Comments in params.yaml are kept.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError


class PresetError(ValueError):
    """The preset does not fit params.yaml."""


def _import_path() -> None:
    root = str(Path(__file__).resolve().parents[1])  # works without the editable install too
    if root not in sys.path:
        sys.path.insert(0, root)


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, key order and flow/block style
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    yaml.representer.add_representer(  # write null as `null`, as params.yaml does, not as nothing
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def load(path: Path):
    data = _yaml().load(path.read_text())
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of params sections at top level")
    return data


def merge(params: dict, preset: dict, where: str = "preset") -> dict:
    """Apply `preset` to `params` in place (see the module doc for the rule) and return it."""
    for name, section in preset.items():
        if name == "datasets":   # the preset's datasets are the workspace's: replaced whole
            params[name] = section
            continue
        if name not in params:
            raise PresetError(f"{where}: unknown section '{name}' (params.yaml has: {', '.join(params)})")
        if not isinstance(section, dict):
            if isinstance(params[name], dict):
                raise PresetError(f"{where}: section '{name}' must be a mapping")
            params[name] = section
            continue
        if params[name] is None:
            params[name] = {}
        target = params[name]
        if not isinstance(target, dict):
            raise PresetError(f"{where}: '{name}' is a single value in params.yaml, not a section")
        allowed = list(target) + [key for key in schema_keys(name) if key not in target]
        unknown = [key for key in section if key not in allowed]
        if unknown:  # a key neither the section nor its schema has is a typo
            raise PresetError(f"{where}: unknown key(s) in section '{name}': {', '.join(unknown)} "
                              f"(allowed: {', '.join(allowed)})")
        for key, value in section.items():
            target[key] = value
    return params


def schema_keys(name: str) -> list[str]:
    """The keys section `name` may hold: its schema's, those it takes from `loop` and the like included."""
    _import_path()
    from mrfer import sections

    if name not in sections.SCHEMAS:
        return []
    schema = sections.schema(name)
    return [field.alias or key for key, field in schema.model_fields.items()]


def validate(text: str, where: str) -> None:
    """Every section of the merged params through its schema: a bad value fails here, not mid-pipeline."""
    _import_path()
    from mrfer import sections
    from mrfer.errors import ParamsError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text)
        try:
            sections.validate_all(path)
        except ParamsError as e:
            raise PresetError(f"{where}: " + str(e).replace(f"{path}: ", "", 1)) from None


def render(data) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", type=Path, help="preset file, e.g. configs/mafer-rafdb.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file to update")
    parser.add_argument("--dry-run", action="store_true", help="print the merged params instead of writing them")
    args = parser.parse_args(argv)
    try:
        merged = render(merge(load(args.params), load(args.preset), where=str(args.preset)))
        validate(merged, str(args.preset))
    except (OSError, PresetError) as e:
        print(f"apply_preset: {e}", file=sys.stderr)
        return 2
    except YAMLError as e:
        print(f"apply_preset: {args.preset}: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(merged)
    else:
        tmp = args.params.with_name(args.params.name + ".tmp")
        tmp.write_text(merged)
        tmp.replace(args.params)
        print(f"{args.params}: applied {args.preset}; next: dvc repro (or dvc params diff to review)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
