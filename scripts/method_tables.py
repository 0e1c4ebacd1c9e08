"""docs/methods.md from the method records: one table per published method.

    python scripts/method_tables.py           # writes docs/methods.md
    python scripts/method_tables.py --check   # exits 1 with a diff when docs/methods.md is stale

A record (configs/records/<method>.yaml) says once what a published method's original code fixes:

    method: MAFER                     # the name the docs use
    title: "MAFER: ..."               # the section heading
    summary: ...                      # what the method is, which stages run it
    repos: {<key>: {repo: <owner>/<name>, commit: <40-hex sha read>}, ...}
    presets: [mafer-rafdb, ...]       # configs/<name>.yaml checked against this record (may be [])
    settings:
      - setting: step 2 optimiser     # the row's name
        code: what the original code does, in words
        source: ["<repo key>:<path>:<line or a-b>", ...]
        params: {<section.key>: <the published value>, ...}   # {} when no param carries it
        missing: ...                  # optional: the part no param reproduces (what mrfer does instead)
        deviations: {<preset>: why}   # optional: a preset that differs from `params` here, and why
        cpu_default: why              # required exactly when params.yaml differs from `params`
    notes: [...]                      # optional: reading notes, bullets under the table

Params are compared as the stages see them: every section of params.yaml (or of a preset merged
over it by scripts/apply_preset.py) through its schema (mrfer.sections), so a key that a section
takes from shared settings has its effective value; `dataset.<key>` is the entry of `datasets`
that `train_on` names (the dataset the method trains on). Floats match within a relative 1e-9; lists
and mappings match whole. The check functions return lists of problems; tests/test_methods.py
runs them.
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import logging
import math
import re
import sys
import tempfile
from pathlib import Path

import yaml
from ruamel.yaml.error import YAMLError

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "configs" / "records"
CONFIGS = ROOT / "configs"
PARAMS = ROOT / "params.yaml"
DOC = ROOT / "docs" / "methods.md"

RECORD_KEYS = {"method", "title", "summary", "repos", "presets", "settings", "notes"}
REQUIRED = RECORD_KEYS - {"notes"}
SETTING_KEYS = {"setting", "code", "source", "params", "missing", "deviations", "cpu_default"}
SOURCE = re.compile(r"^(?P<repo>[\w-]+):(?P<path>[^:]+):(?P<a>\d+)(?:-(?P<b>\d+))?$")
MISSING = object()  # a key the params do not hold

log = logging.getLogger(__name__)


def _apply_preset():
    spec = importlib.util.spec_from_file_location("apply_preset", ROOT / "scripts" / "apply_preset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_records(folder: Path = RECORDS) -> dict[str, dict]:
    """Every record in `folder`, by file stem, in name order."""
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))}


def effective_params(path: Path) -> dict:
    """Every section of a params file as the stages see it (schema-validated, shared keys filled in)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from mrfer import sections

    data = yaml.safe_load(path.read_text())
    values = {k: v for k, v in data.items() if not isinstance(v, dict)}   # top-level scalars: seed
    for name, section in sections.validate_all(path).items():
        values[name] = section.model_dump(by_alias=True)
        if name.startswith("datasets."):   # an entry of `datasets`, nested as the file has it
            values.setdefault("datasets", {})[name.split(".", 1)[1]] = values.pop(name)
    values["dataset"] = values["datasets"][data["train_on"]]   # `dataset.<key>`: the dataset trained on
    return values


def preset_params(preset: str, params: Path = PARAMS, configs: Path = CONFIGS) -> dict:
    """The preset merged over the params file (scripts/apply_preset.py's merge), as the stages see it."""
    apply_preset = _apply_preset()
    merged = apply_preset.merge(apply_preset.load(params), apply_preset.load(configs / f"{preset}.yaml"), preset)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(apply_preset.render(merged))
        return effective_params(path)


def lookup(params: dict, key: str):
    value = params
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def same(a, b) -> bool:
    """Equal values: numbers within a relative 1e-9, lists and mappings whole."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return type(a) is type(b) and a == b


def differing(setting: dict, params: dict) -> dict:
    """{key: the params' value} for each of the setting's keys where `params` differs from the record."""
    return {key: lookup(params, key) for key, value in setting["params"].items()
            if not same(lookup(params, key), value)}


# ---------------------------------------------------------------- checks: each returns problems


def check_format(name: str, record, configs: Path = CONFIGS) -> list[str]:
    """The record's fields; every repo pins a 40-hex commit; every source names a repo key; every
    preset named exists; deviations name presets of the record."""
    if not isinstance(record, dict):
        return [f"{name}: a record is a mapping"]
    problems = [f"{name}: no '{key}'" for key in sorted(REQUIRED - record.keys())]
    problems += [f"{name}: unknown field '{key}'" for key in sorted(record.keys() - RECORD_KEYS)]
    repos = record.get("repos") or {}
    for key, repo in repos.items():
        if not isinstance(repo, dict) or not re.fullmatch(r"[0-9a-f]{40}", str(repo.get("commit", ""))):
            problems.append(f"{name}: repo '{key}' does not pin a 40-hex commit")
    presets = record.get("presets") or []
    problems += [f"{name}: preset {p}: no configs/{p}.yaml" for p in presets if not (configs / f"{p}.yaml").is_file()]
    for setting in record.get("settings") or []:
        problems += check_setting_format(name, setting, repos, presets)
    return problems


def check_setting_format(name: str, setting, repos: dict, presets: list) -> list[str]:
    if not isinstance(setting, dict) or not setting.get("setting"):
        return [f"{name}: a setting without a name: {setting!r:.80}"]
    where = f"{name}, setting '{setting['setting']}'"
    problems = [f"{where}: no '{key}'" for key in ("code", "source", "params") if key not in setting]
    problems += [f"{where}: unknown field '{key}'" for key in sorted(setting.keys() - SETTING_KEYS)]
    if not isinstance(setting.get("params", {}), dict):
        problems.append(f"{where}: params is a mapping of <section.key>: <value>")
    sources = setting.get("source") or []
    if not sources:
        problems.append(f"{where}: no source")
    for source in sources:
        match = SOURCE.match(str(source))
        if not match:
            problems.append(f"{where}: source {source!r} is not <repo key>:<path>:<line or a-b>")
        elif match["repo"] not in repos:
            problems.append(f"{where}: source {source!r} names no repo of the record ({', '.join(repos)})")
    problems += [f"{where}: deviation for {p}, which is not one of the record's presets"
                 for p in setting.get("deviations") or {} if p not in presets]
    return problems


def check_keys(name: str, record: dict, params: dict) -> list[str]:
    """Every params key a record names exists in params.yaml."""
    return [f"{name}, setting '{s['setting']}': {key} is not a params.yaml key"
            for s in record["settings"] for key in s["params"] if lookup(params, key) is MISSING]


def check_cpu_defaults(name: str, record: dict, params: dict) -> list[str]:
    """params.yaml holds the record's values unless `cpu_default` says why; a reason for values
    that are the record's is stale."""
    problems = []
    for s in record["settings"]:
        diff = {k: v for k, v in differing(s, params).items() if v is not MISSING}
        where = f"{name}, setting '{s['setting']}': params.yaml"
        if diff and not s.get("cpu_default"):
            problems += [f"{where}: {key} is {fmt(value)}, the record says {fmt(s['params'][key])}, "
                         f"and no cpu_default says why" for key, value in diff.items()]
        elif not diff and s.get("cpu_default"):
            problems.append(f"{where} holds the record's values: the cpu_default reason is stale")
    return problems


def preset_values(records: dict, params: Path = PARAMS, configs: Path = CONFIGS) -> dict:
    """{preset: its merged params as the stages see them, or why they could not be made} for
    every preset a record names."""
    values = {}
    for preset in sorted({p for r in records.values() for p in r.get("presets") or []}):
        try:
            values[preset] = preset_params(preset, params, configs)
        except (ValueError, OSError, YAMLError) as e:   # PresetError, ParamsError: a problem to report
            log.warning("preset %s: %s", preset, e)
            values[preset] = f"does not merge into {params.name}: {e}"
    return values


def check_presets(name: str, record: dict, presets: dict) -> list[str]:
    """Each preset of the record holds the record's values on every setting, unless a deviation
    says why; a deviation for a preset that holds them is stale."""
    problems = []
    for preset in record["presets"]:
        merged = presets[preset]
        if isinstance(merged, str):
            problems.append(f"{name}: preset {preset} {merged}")
            continue
        for s in record["settings"]:
            diff = {k: v for k, v in differing(s, merged).items() if v is not MISSING}
            where = f"{name}: preset {preset}, setting '{s['setting']}'"
            deviation = (s.get("deviations") or {}).get(preset)
            if diff and not deviation:
                problems += [f"{where}: {key} is {fmt(value)}, the record says {fmt(s['params'][key])}"
                             for key, value in diff.items()]
            elif not diff and deviation:
                problems.append(f"{where}: holds the record's values, so its deviation is stale")
    return problems


def problems(records: dict, params: dict, presets: dict, configs: Path = CONFIGS) -> list[str]:
    found = []
    for name, record in records.items():
        malformed = check_format(name, record, configs)
        found += malformed or [*check_keys(name, record, params), *check_cpu_defaults(name, record, params),
                               *check_presets(name, record, presets)]
    return found


# ---------------------------------------------------------------- the document

HEADER = """# Published methods: the code, the presets, the CPU default

Generated by `python scripts/method_tables.py` from the method records (`configs/records/*.yaml`),
the presets they name (`configs/<preset>.yaml`, merged over `params.yaml` as
`scripts/apply_preset.py` merges them) and `params.yaml`. Do not edit it by hand: edit a record
and rerun the script. `tests/test_methods.py` fails when this file is not what the script writes,
and when a preset or `params.yaml` differs from a record without a stated reason.

In each table, **the code** is what the original code does, with its source lines at the commit
read, then (→) the params that carry it at the published value. A preset column says "same" when
the preset, merged over `params.yaml`, holds those values; otherwise it gives the preset's values
and why. **The CPU default** is `params.yaml` as it is: "same", or its values and why. "—": no
param carries the setting. **Missing**: the part of the published setting no param reproduces.
"""


def fmt(value) -> str:
    """A value as YAML's flow style writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def values_cell(values: dict) -> str:
    return "; ".join(f"`{key}: {fmt(value)}`" for key, value in values.items())


def link(source: str, repos: dict) -> str:
    m = SOURCE.match(source)
    repo = repos[m["repo"]]
    lines = f"L{m['a']}" + (f"-L{m['b']}" if m["b"] else "")
    return f"[{source}](https://github.com/{repo['repo']}/blob/{repo['commit']}/{m['path']}#{lines})"


def code_cell(s: dict, repos: dict) -> str:
    text = f"{cell(s['code'])} ({', '.join(link(src, repos) for src in s['source'])})"
    if s["params"]:
        text += f"<br>→ {values_cell(s['params'])}"
    if s.get("missing"):
        text += f"<br>**Missing:** {cell(s['missing'])}"
    return text


def compared_cell(s: dict, values: dict, why: str | None, label: str) -> str:
    """'same', or the differing values and why (`label`: 'deviation' for a preset)."""
    if not s["params"]:
        return "—"
    diff = differing(s, values)
    if not diff:
        return "same"
    return values_cell(diff) + (f" — {label}{cell(why)}" if why else "")


def render_method(name: str, record: dict, params: dict, presets: dict) -> str:
    repos = record["repos"]
    code = ", ".join(f"{key}: [{r['repo']}@{r['commit'][:7]}](https://github.com/{r['repo']}/tree/{r['commit']})"
                     for key, r in repos.items())
    named = ", ".join(f"`configs/{p}.yaml`" for p in record["presets"]) or "none"
    lines = [f"## {record['title']}", "", cell(record["summary"]), "",
             f"Record: `configs/records/{name}.yaml`. Code read: {code}. Presets: {named}.", "",
             "| setting | the code (source) | " + " | ".join(f"`{p}`" for p in record["presets"])
             + (" | " if record["presets"] else "") + "the CPU default |",
             "|" + "---|" * (3 + len(record["presets"]))]
    for s in record["settings"]:
        deviations = s.get("deviations") or {}
        row = [cell(s["setting"]), code_cell(s, repos),
               *(compared_cell(s, presets[p], deviations.get(p), "deviation: ") for p in record["presets"]),
               compared_cell(s, params, s.get("cpu_default"), "")]
        lines.append("| " + " | ".join(row) + " |")
    if record.get("notes"):
        lines += ["", "Notes on the original code:", "", *(f"- {cell(note)}" for note in record["notes"])]
    return "\n".join(lines) + "\n"


def render(records: dict, params: dict, presets: dict) -> str:
    index = "Methods: " + ", ".join(f"{r['method']} (`configs/records/{n}.yaml`)" for n, r in records.items()) + "."
    return "\n".join([HEADER, index, "", *(render_method(n, r, params, presets) for n, r in records.items())])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help=f"exit 1 with a diff when {DOC.name} is stale")
    args = parser.parse_args(argv)
    records, params = load_records(), effective_params(PARAMS)
    presets = preset_values(records)
    found = problems(records, params, presets)
    if found:
        print("method_tables: the records do not hold:\n  " + "\n  ".join(found), file=sys.stderr)
        return 2
    text = render(records, params, presets)
    if args.check:
        old = DOC.read_text() if DOC.exists() else ""
        diff = list(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(DOC), "generated"))
        sys.stdout.writelines(diff)
        return 1 if diff else 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
