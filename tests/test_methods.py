"""Each published method's record (configs/records/*.yaml) against the presets it names and
params.yaml, and docs/methods.md against what scripts/method_tables.py writes from them."""
from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("method_tables", REPO / "scripts" / "method_tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)

RECORDS = tables.load_records()


@pytest.fixture(scope="module")
def params() -> dict:
    return tables.effective_params(tables.PARAMS)


@pytest.fixture(scope="module")
def presets() -> dict:
    return tables.preset_values(RECORDS)


def test_there_are_records():
    assert RECORDS, f"no records in {tables.RECORDS}"


@pytest.mark.parametrize("name", RECORDS)
def test_record_is_well_formed(name):
    """Fields, 40-hex commits, every source naming a repo of the record, presets that exist."""
    assert tables.check_format(name, RECORDS[name]) == []


@pytest.mark.parametrize("name", RECORDS)
def test_params_yaml_holds_the_record_or_says_why(name, params):
    record = RECORDS[name]
    assert tables.check_keys(name, record, params) == []
    assert tables.check_cpu_defaults(name, record, params) == []


@pytest.mark.parametrize("name", RECORDS)
def test_presets_hold_the_record_or_say_why(name, presets):
    assert tables.check_presets(name, RECORDS[name], presets) == []


def test_docs_methods_md_is_what_the_script_writes(params, presets):
    assert tables.DOC.read_text() == tables.render(RECORDS, params, presets), \
        "docs/methods.md is stale: run python scripts/method_tables.py"


def test_check_mode_exits_1_with_a_diff(tmp_path, monkeypatch, capsys):
    doc = tmp_path / "methods.md"
    doc.write_text(tables.DOC.read_text().replace("| setting |", "| settings |", 1))
    monkeypatch.setattr(tables, "DOC", doc)
    assert tables.main(["--check"]) == 1
    assert "-| settings |" in capsys.readouterr().out
    assert tables.main([]) == 0 and tables.main(["--check"]) == 0


def repo_copy(tmp_path: Path) -> tuple[Path, Path]:
    """params.yaml and the presets, copied: (params file, configs folder)."""
    configs = tmp_path / "configs"
    configs.mkdir()
    for preset in tables.CONFIGS.glob("*.yaml"):
        shutil.copy(preset, configs)
    shutil.copy(tables.PARAMS, tmp_path / "params.yaml")
    return tmp_path / "params.yaml", configs


def pinned_float(doc: dict, settings: list[dict], skip) -> tuple[dict, str, str, float] | None:
    """The first setting, key and value a record pins to a non-zero float that `doc` (a preset or
    params file) sets itself (section.key) and `skip(setting)` does not rule out."""
    for s in settings:
        for key, value in s["params"].items():
            section, _, name = key.partition(".")
            if (not skip(s) and isinstance(value, float) and value and "." not in name
                    and name in (doc.get(section) or {})):
                return s, section, name, value
    return None


def rewrite(path: Path, section: str, key: str, value) -> None:
    apply_preset = tables._apply_preset()
    data = apply_preset.load(path)
    data[section][key] = value
    path.write_text(apply_preset.render(data))


def test_a_preset_value_off_the_record_is_reported(tmp_path):
    params, configs = repo_copy(tmp_path)
    for name, record in RECORDS.items():
        for preset in record["presets"]:
            doc = yaml.safe_load((configs / f"{preset}.yaml").read_text())
            found = pinned_float(doc, record["settings"], lambda s: preset in (s.get("deviations") or {}))
            if found:
                break
        else:
            continue
        break
    else:
        pytest.skip("no record pins a float that one of its presets sets")
    setting, section, key, value = found
    rewrite(configs / f"{preset}.yaml", section, key, value / 2)
    problems = tables.check_presets(name, record, tables.preset_values({name: record}, params, configs))
    print("\n".join(problems))
    assert len(problems) == 1
    assert f"preset {preset}" in problems[0] and f"'{setting['setting']}'" in problems[0]
    assert f"{section}.{key} is {value / 2}" in problems[0]


def test_a_params_yaml_value_off_the_record_is_reported(tmp_path):
    params, _ = repo_copy(tmp_path)
    doc = yaml.safe_load(params.read_text())
    for name, record in RECORDS.items():
        found = pinned_float(doc, record["settings"], lambda s: bool(s.get("cpu_default")))
        if found:
            break
    else:
        pytest.skip("no record pins a float that params.yaml holds without a cpu_default")
    setting, section, key, value = found
    rewrite(params, section, key, value / 2)
    problems = tables.check_cpu_defaults(name, record, tables.effective_params(params))
    print("\n".join(problems))
    assert len(problems) == 1
    assert "params.yaml" in problems[0] and f"'{setting['setting']}'" in problems[0]
    assert f"{section}.{key} is {value / 2}" in problems[0] and "no cpu_default" in problems[0]


def test_stale_reasons_and_bad_records_are_reported(params, presets):
    name, record = next((n, r) for n, r in RECORDS.items() if r["presets"])
    bad = copy.deepcopy(record)
    preset = bad["presets"][0]
    agreed = next(s for s in bad["settings"] if s["params"] and not tables.differing(s, params))
    agreed["cpu_default"] = "a reason for nothing"
    assert tables.check_cpu_defaults(name, bad, params) == [
        f"{name}, setting '{agreed['setting']}': params.yaml holds the record's values: the cpu_default reason is stale"]
    held = next(s for s in bad["settings"] if s["params"] and not tables.differing(s, presets[preset]))
    held.setdefault("deviations", {})[preset] = "a reason for nothing"
    assert tables.check_presets(name, bad, presets) == [
        f"{name}: preset {preset}, setting '{held['setting']}': holds the record's values, so its deviation is stale"]

    bad["settings"][0]["params"]["pretrain_base.no_such_key"] = 1
    bad["settings"][0]["source"].append("nowhere:x.py:1")
    next(iter(bad["repos"].values()))["commit"] = "main"
    assert tables.check_keys(name, bad, params) == [
        f"{name}, setting '{bad['settings'][0]['setting']}': pretrain_base.no_such_key is not a params.yaml key"]
    problems = tables.check_format(name, bad)
    assert any("does not pin a 40-hex commit" in p for p in problems)
    assert any("'nowhere:x.py:1' names no repo of the record" in p for p in problems)


def test_values_compare_within_a_relative_1e9():
    assert tables.same(0.1, 0.1 * (1 + 1e-12)) and not tables.same(0.1, 0.1001)
    assert tables.same([1, 2.0], (1.0, 2)) and not tables.same([1, 2], [1, 2, 3])
    assert tables.same({"a": [1e-4]}, {"a": [0.0001]}) and not tables.same({"a": 1}, {"a": 1, "b": 2})
    assert not tables.same(True, 1) and not tables.same(None, 0) and not tables.same("1", 1)
