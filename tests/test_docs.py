"""The documentation says what the code, dvc.yaml and the reports say: generated results are
current, the README stays short, links resolve, and the README's tables and graph name exactly
what dvc.yaml, requirements.txt and the reader registry hold."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
GENERATED_ELSEWHERE = {"methods.md"}   # scripts/method_tables.py writes it; its text is checked there
NARRATION = ("this session", "earlier session", "not lent", "earlier figures", "refactor check",
             "before this change", "no gpu has been lent")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section (up to the next `## `)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def first_cells(text: str, header: str) -> list[str]:
    """The first cell of every row of the table whose header row starts with `| header |`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip())
    return rows


def rows_by_first_cell(text: str, header: str) -> dict[str, str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out[line.split("|")[1].strip().strip("`")] = line
    return out


# ------------------------------------------------------------------ generated and short

def test_results_md_is_the_scripts_output():
    results_tables = load_script("results_tables")
    expected = results_tables.render()
    actual = (REPO / "docs" / "results.md").read_text()
    assert actual == expected, "docs/results.md is stale: run `python scripts/results_tables.py`"


def test_results_check_fails_on_a_stale_file(tmp_path, capsys):
    results_tables = load_script("results_tables")
    stale = tmp_path / "results.md"
    stale.write_text(results_tables.render().replace("## Data", "## Data (edited by hand)"))
    assert results_tables.main(["--check", "--out", str(stale)]) == 1
    assert "edited by hand" in capsys.readouterr().out
    assert results_tables.main(["--out", str(stale)]) == 0
    assert results_tables.main(["--check", "--out", str(stale)]) == 0


def test_readme_is_at_most_300_lines():
    n = len(README.read_text().splitlines())
    assert n <= 300, f"README.md has {n} lines: move detail to docs/"


@pytest.mark.parametrize("path", [README, *[d for d in DOCS if d.name not in GENERATED_ELSEWHERE]],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_docs_state_what_is_true_now(path):
    text = path.read_text().lower()
    found = [phrase for phrase in NARRATION if phrase in text]
    assert not found, f"{path.name} narrates earlier states ({found}): git history keeps them"


# ------------------------------------------------------------------ links

def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = without_code_blocks(path.read_text())
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def links(path: Path) -> list[str]:
    text = without_code_blocks(path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)   # code spans are not links
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    broken = []
    for target in links(path):
        if re.match(r"^[a-z]+:", target):   # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)}: links to nothing: {broken}"


# ------------------------------------------------------------------ the README against dvc.yaml

def dvc_stage_names() -> set[str]:
    return set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def test_stage_table_names_exactly_dvc_yamls_stages():
    named = [cell.strip("`").split("@")[0] for cell in first_cells(README.read_text(), "stage")]
    assert len(named) == len(set(named)), f"a stage is listed twice: {named}"
    assert set(named) == dvc_stage_names()


def resolve(value: str, params: dict) -> str:
    """`${a.b}` from params.yaml; a foreach variable (`${key}`) becomes `*`."""
    def lookup(match: re.Match) -> str:
        node = params
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                return "*"
            node = node[part]
        return str(node)
    return re.sub(r"\$\{([^}]+)\}", lookup, value)


def paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def overlap(out: str, dep: str) -> bool:
    return out == dep or out.startswith(dep.rstrip("/") + "/") or dep.startswith(out.rstrip("/") + "/")


def instances(stage: dict, params: dict) -> list[dict]:
    """The variables of each instance of a stage: one per `foreach` entry (key, item), else one."""
    if "foreach" not in stage:
        return [params]
    entries = resolve_node(stage["foreach"], params)
    return [{**params, "key": key, "item": item} for key, item in entries.items()]


def resolve_node(value: str, params: dict):
    node = params
    for part in value.strip("${}").split("."):
        node = node[part]
    return node


def dvc_edges() -> set[tuple[str, str]]:
    """(producer, consumer) for every stage whose dep is (inside) another stage's output."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    stages = {name: body.get("do", body) for name, body in raw.items()}
    outs = {name: [resolve(p, v) for v in instances(raw[name], params) for kind in ("outs", "metrics", "plots")
                   for p in paths(body.get(kind))] for name, body in stages.items()}
    deps = {name: [resolve(p, v) for v in instances(raw[name], params) for p in paths(body.get("deps"))]
            for name, body in stages.items()}
    return {(a, b) for a in stages for b in stages if a != b
            and any(overlap(o, d) for o in outs[a] for d in deps[b])}


def mermaid_edges(text: str) -> set[tuple[str, str]]:
    block = re.search(r"^```mermaid\n(.*?)^```", text, flags=re.M | re.S)
    assert block, "no mermaid graph"
    node = r"([\w-]+)(?:\[[^\]]*\])?"
    return {m.groups() for m in re.finditer(rf"^\s*{node}\s*-->\s*{node}\s*$", block.group(1), flags=re.M)}


def test_graph_has_exactly_dvc_yamls_edges():
    drawn, real = mermaid_edges(README.read_text()), dvc_edges()
    assert real, "no edges found in dvc.yaml"
    assert drawn == real, f"drawn but not in dvc.yaml: {sorted(drawn - real)}; in dvc.yaml, not drawn: {sorted(real - drawn)}"


# ------------------------------------------------------------------ the README against requirements and registries

def pinned() -> set[str]:
    names = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[=<>!~\[; ]", line)[0].lower())
    return names


def test_dependency_table_has_one_row_per_pinned_package():
    listed = [cell.strip("`").lower() for cell in first_cells(section(README.read_text(), "Dependencies"), "package")]
    assert len(listed) == len(set(listed)), f"a package is listed twice: {listed}"
    assert set(listed) == pinned()


def test_reader_tables_name_every_registered_reader_and_option():
    from mrfer.data import datasets

    registered = set(datasets.READERS)
    readme = [cell.strip("`") for cell in first_cells(section(README.read_text(), "Datasets"), "reader")]
    assert set(readme) == registered and len(readme) == len(registered)
    rows = rows_by_first_cell(section((REPO / "docs" / "datasets.md").read_text(), "Readers"), "reader")
    assert set(rows) == registered
    for name, row in rows.items():
        missing = [o for o in datasets.READERS[name].defaults if f"`{o}:" not in row]
        assert not missing, f"docs/datasets.md: reader {name}'s row does not name option(s) {missing}"
