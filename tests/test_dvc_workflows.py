"""The DVC workflows people use this repository through, run for real (DVC, git, remotes, an
SSH server) on tiny params in throwaway copies of the repo (`pipeline_repo.make_repo`).

One origin repo runs the data stages and `pretrain-base` once and pushes its outputs to its
default remote (the `storage` remote of .dvc/config: a folder beside the repo). The other tests
work in their own `git clone` of it, each with its own DVC cache pulled from that remote, so
they do not see each other's caches or run-caches (the run-cache test shares the origin's cache
on purpose). The checks of the checkout's own config need no pipeline run.
"""
from __future__ import annotations

import getpass
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline_repo import REPO, make_repo, run

# Files of this workflow that a copy made before they are committed would lack.
OWN_FILES = (".dvc/plots/offline.html",)
SSHD = Path("/usr/sbin/sshd")
UP_TO_DATE = "Data and pipelines are up to date."


def dvc(repo: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["dvc", *args], repo, **kwargs)


def git(repo: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["git", *args], repo, **kwargs)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def set_params(repo: Path, section: str, **values) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def workflow_repo(dest: Path) -> Path:
    """make_repo, plus this workflow's own files when the checkout has not committed them yet."""
    repo = make_repo(dest)
    missing = [name for name in OWN_FILES if (REPO / name).is_file() and not (repo / name).exists()]
    for name in missing:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    if missing:
        git(repo, "add", *missing)
        git(repo, "commit", "-qm", "workflow files")
    return repo


def lock_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def remote_objects(remote: Path) -> set[str]:
    root = remote / "files" / "md5"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A repo that ran the data stages + pretrain-base, committed, and pushed to its default
    remote, which needed no setup: `../mrfer-dvc-remote` beside the repo."""
    parent = tmp_path_factory.mktemp("origin")
    repo = workflow_repo(parent / "mrfer")
    out = dvc(repo, "repro", "pretrain-base")
    ran = ran_stages(out.stdout)
    assert set(ran) == {"synthesize", "extract@synthetic", "extract-identities", "face-pretrain", "downsample@synthetic",
                        "assemble@synthetic", "pretrain-base"} and ran[0] == "synthesize" and ran[-1] == "pretrain-base", ran
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data stages + pretrain-base")
    pushed = dvc(repo, "push")
    remote = parent / "mrfer-dvc-remote"
    return SimpleNamespace(repo=repo, remote=remote, push_output=pushed.stdout,
                           base_md5=lock_md5(repo, "pretrain-base", "models/base.pt"))


def clone(origin, dest: Path, pull: tuple[str, ...] | None = ()) -> Path:
    """`git clone` the origin, point its default remote at the origin's with `--local`, pull.

    `--allow-missing`: the origin ran only part of the pipeline, so the later stages' outputs
    have no hash in dvc.lock and a plain pull would fail on them."""
    repo = dest / "mrfer"
    run(["git", "clone", "-q", str(origin.repo), str(repo)], dest)
    git(repo, "config", "user.name", "mrfer tests")
    git(repo, "config", "user.email", "tests@mrfer.invalid")
    dvc(repo, "remote", "modify", "--local", "storage", "url", str(origin.remote))
    if pull is not None:
        dvc(repo, "pull", "--allow-missing", *pull)
    return repo


# ---------------------------------------------------------------- the checkout's own config


def test_default_remote_is_a_folder_beside_the_checkout():
    listed = dvc(REPO, "remote", "list").stdout.split()
    assert listed[:2] and listed[0] == "storage" and "(default)" in listed, listed
    assert Path(listed[1]) == REPO.parent / "mrfer-dvc-remote"
    origins = dvc(REPO, "config", "--list", "--show-origin").stdout
    assert any(line.split() == [".dvc/config", "core.remote=storage"] for line in origins.splitlines()), origins


def test_git_holds_no_dvc_cached_output_and_dvc_outputs_are_ignored():
    """Every output DVC caches is git-ignored and absent from git; every `cache: false` output
    (metrics, plots) is not ignored, so it is committed and `dvc metrics diff` can see it."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as dvc_repo:
        outs = [(out.def_path, out.use_cache) for stage in dvc_repo.index.stages for out in stage.outs]
    cached = sorted({path for path, use_cache in outs if use_cache})
    uncached = sorted({path for path, use_cache in outs if not use_cache})
    assert "models/base.pt" in cached and "data/assembled/synthetic" in cached
    assert "reports/pretrain_base.json" in uncached
    assert any(path.startswith("data/kfold/") for path in cached)  # foreach expanded
    ignored = set(run(["git", "check-ignore", "--no-index", *cached, *uncached], REPO,
                      check=False).stdout.split())
    assert sorted(set(cached) - ignored) == [], "cached DVC outputs missing from .gitignore"
    assert sorted(set(uncached) & ignored) == [], "cache: false outputs must be committed, not ignored"
    tracked = git(REPO, "ls-files", "-z").stdout.split("\0")
    in_git = [name for name in tracked for path in cached if name == path or name.startswith(path + "/")]
    assert in_git == [], f"files tracked by both git and DVC: {in_git}"


def test_every_stage_can_use_the_run_cache():
    """DVC 3 skips saving run-cache for a stage with a plain `outs` entry that has `cache: false`
    (only metrics/plots may be uncached), and for persist/always_changed stages."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    blocked = []
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        if body.get("always_changed"):
            blocked.append(f"{name}: always_changed")
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                if (opts or {}).get("persist"):
                    blocked.append(f"{name}: {path} persist")
                if kind == "outs" and (opts or {}).get("cache") is False:
                    blocked.append(f"{name}: outs {path} cache: false (declare it under plots:/metrics:, "
                                   f"or let DVC cache it)")
    assert blocked == []


def test_python_bytecode_is_dvcignored():
    """Stage deps are source folders (mrfer/train, ...): __pycache__ written into them by an
    import must not change their hash, or `dvc repro` never becomes a no-op on a checkout."""
    out = dvc(REPO, "check-ignore", "mrfer/train/__pycache__/loop.cpython-311.pyc", check=False)
    assert out.returncode == 0, "add `__pycache__/` (and `*.pyc`) to .dvcignore"


# ---------------------------------------------------------------- remotes


def test_fresh_clone_pulls_everything_and_runs_nothing(origin, tmp_path):
    assert "pushed" in origin.push_output, origin.push_output
    assert remote_objects(origin.remote), "nothing reached the default remote beside the repo"

    repo = clone(origin, tmp_path, pull=None)
    assert not (repo / "models/base.pt").exists()
    assert "(default)" in dvc(repo, "remote", "list").stdout
    dvc(repo, "pull", "--allow-missing")
    assert md5(repo / "models/base.pt") == origin.base_md5
    status = dvc(repo, "status", "--with-deps", "pretrain-base").stdout
    assert UP_TO_DATE in status, status
    again = dvc(repo, "repro", "pretrain-base").stdout
    assert ran_stages(again) == [], again
    assert git(repo, "status", "--porcelain").stdout == ""  # .dvc/config.local stays out of git


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path, monkeypatch):
    """A real OpenSSH server as the current user on 127.0.0.1, with a throwaway host key and
    user key; HOME points at a folder whose known_hosts trusts exactly that host key."""
    if not SSHD.is_file():
        pytest.fail(f"{SSHD} not found: this test needs OpenSSH's server; run: sudo apt-get install -y "
                    "openssh-server (`make test` installs it where it can: scripts/test_setup.sh)")
    if importlib.util.find_spec("dvc_ssh") is None:
        pytest.fail("dvc-ssh is not installed in this environment: pip install dvc-ssh "
                    "(pinned in requirements.txt and requirements-remotes.txt)")
    keys = tmp_path / "sshd"
    keys.mkdir()
    for name in ("host_key", "user_key"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(keys / name)], keys)
    (keys / "authorized_keys").write_text((keys / "user_key.pub").read_text())
    port = _free_port()
    user = getpass.getuser()
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\nPidFile {keys / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nAllowUsers {user}\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir, as the service makes
    log = open(keys / "sshd.log", "w")
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(keys / "sshd_config")],
                              stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(8).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"sshd did not start:\n{(keys / 'sshd.log').read_text()}")
        time.sleep(0.1)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    host_key = (keys / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    monkeypatch.setenv("HOME", str(home))
    try:
        yield SimpleNamespace(port=port, user=user, keyfile=keys / "user_key", log=keys / "sshd.log")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def add_ssh_remote(repo: Path, server, path: Path) -> None:
    dvc(repo, "remote", "add", "--local", "ssh", f"ssh://127.0.0.1{path}")
    for key, value in (("port", server.port), ("user", server.user), ("keyfile", server.keyfile)):
        dvc(repo, "remote", "modify", "--local", "ssh", key, str(value))


def test_ssh_remote_push_then_pull_into_fresh_clone(origin, sshd, tmp_path):
    storage = tmp_path / "server-storage"
    add_ssh_remote(origin.repo, sshd, storage)
    # The packed training arrays and the model (the raw synthetic dataset is hundreds of small
    # files: over SFTP they would only make the test slow).
    targets = ("data/assembled/synthetic", "models/face.pt", "models/base.pt")
    try:
        pushed = dvc(origin.repo, "push", "-r", "ssh", *targets)
    except AssertionError as e:
        raise AssertionError(f"{e}\nsshd log:\n{sshd.log.read_text()[-2000:]}") from None
    on_server = remote_objects(storage)
    assert len(on_server) >= 3 and on_server <= remote_objects(origin.remote), pushed.stdout
    assert "Accepted publickey" in sshd.log.read_text()

    repo = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin.repo), str(repo)], tmp_path)
    shutil.copy2(origin.repo / ".dvc/config.local", repo / ".dvc/config.local")  # the same remote
    dvc(repo, "pull", "-r", "ssh", *targets)
    assert md5(repo / "models/base.pt") == origin.base_md5
    assert UP_TO_DATE in dvc(repo, "status", "pretrain-base").stdout
    assert ran_stages(dvc(repo, "repro", "--single-item", "pretrain-base").stdout) == []


# ---------------------------------------------------------------- branches, experiments, run-cache


def flat(data, prefix=""):
    if isinstance(data, dict):
        items = {}
        for key, value in data.items():
            items.update(flat(value, f"{prefix}{key}."))
        return items
    return {prefix[:-1]: data}


def test_branch_diff_reports_exactly_the_changed_params_and_metrics(origin, tmp_path):
    repo = clone(origin, tmp_path)
    git(repo, "checkout", "-q", "-b", "one-epoch")
    set_params(repo, "pretrain_base", epochs=1)
    assert ran_stages(dvc(repo, "repro", "pretrain-base").stdout) == ["pretrain-base"]
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pretrain_base.epochs: 1")

    params = json.loads(dvc(repo, "params", "diff", "main", "one-epoch", "--json").stdout)
    assert params == {"params.yaml": {"pretrain_base.epochs": {"old": 2, "new": 1, "diff": -1}}}

    metrics = json.loads(dvc(repo, "metrics", "diff", "main", "one-epoch", "--json").stdout)
    expected = {}
    for path in ("reports/synthesize.json", "reports/extract/synthetic.json", "reports/assemble/synthetic.json",
                 "reports/pretrain_base.json", "dvclive/pretrain_base/metrics.json"):
        old = flat(json.loads(git(repo, "show", f"main:{path}").stdout))
        new = flat(json.loads(git(repo, "show", f"one-epoch:{path}").stdout))
        changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        if changed:
            expected[path] = changed
    # data stages did not rerun; the training stage's report and its dvclive summary changed
    assert set(expected) == {"reports/pretrain_base.json", "dvclive/pretrain_base/metrics.json"}
    assert {path: set(keys) for path, keys in metrics.items()} == expected
    assert metrics["reports/pretrain_base.json"]["epochs_run"] == {"old": 2, "new": 1, "diff": -1}

    # The plots page (the offline template from .dvc/config) for both branches.
    page = tmp_path / "plots"
    dvc(repo, "plots", "diff", "main", "one-epoch", "-o", str(page))
    html = (page / "index.html").read_text()
    assert '"main"' in html and '"one-epoch"' in html and "vegaEmbed(" in html
    assert_offline(html)


def assert_offline(html: str) -> None:
    import re

    sources = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"' >]+)", html, flags=re.I)
    assert [s for s in sources if re.match(r"(https?:)?//", s)] == [], sources
    assert "{plot_divs}" not in html and "cdn.jsdelivr" not in html
    for library in ("vega", "vegaLite", "vegaEmbed"):  # the UMD globals the inlined builds define
        assert f".{library}=" in html or f".{library} =" in html, library


def test_dvc_default_plots_page_needs_a_cdn_so_the_template_is_set():
    """Why .dvc/plots/offline.html exists: DVC's own page loads vega from a CDN."""
    from dvc_render.vega import VegaRenderer

    assert "https://" in VegaRenderer.SCRIPTS
    template = (REPO / ".dvc/plots/offline.html").read_text()
    assert "{plot_divs}" in template and "{scripts}" not in template
    assert "University of Washington Interactive Data Lab" in template  # licence notice kept
    config = dvc(REPO, "config", "plots.html_template").stdout.strip()
    assert (REPO / ".dvc" / config).resolve() == (REPO / ".dvc/plots/offline.html").resolve()


def exp_by_name(shown: list) -> dict:
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                found[rev.get("name") or exp.get("name")] = rev
    return found


def exp_metric(rev: dict, path: str) -> dict:
    return rev["data"]["metrics"][path]["data"]


def test_exp_run_set_param_changes_metrics(origin, tmp_path):
    repo = clone(origin, tmp_path)
    out = dvc(repo, "exp", "run", "pretrain-base", "-S", "pretrain_base.epochs=1", "-n", "one-epoch")
    assert ran_stages(out.stdout) == ["pretrain-base"], out.stdout
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    exp = exp_by_name(shown)["one-epoch"]
    baseline = next(c for c in shown if c.get("name") == "main" or c.get("rev") == git(
        repo, "rev-parse", "HEAD").stdout.strip())
    assert exp["data"]["params"]["params.yaml"]["data"]["pretrain_base"]["epochs"] == 1
    assert exp_metric(exp, "reports/pretrain_base.json")["epochs_run"] == 1
    assert exp_metric(baseline, "reports/pretrain_base.json")["epochs_run"] == 2
    assert exp_metric(exp, "reports/pretrain_base.json")["params_hash"] != \
        exp_metric(baseline, "reports/pretrain_base.json")["params_hash"]


def test_queued_experiments_run_in_parallel_workers(origin, tmp_path):
    repo = clone(origin, tmp_path)
    sweeps = {"test-0.3": "assemble.test_fraction=0.3", "val-0.3": "assemble.val_fraction=0.3"}
    for name, override in sweeps.items():
        dvc(repo, "exp", "run", "assemble@synthetic", "--queue", "-S", override, "-n", name)
    started = dvc(repo, "queue", "start", "-j", "2").stdout
    assert "2" in started, started
    deadline = time.monotonic() + 400
    try:
        while True:
            status = dvc(repo, "queue", "status").stdout
            rows = [line.split() for line in status.splitlines() if line.split()[1:2] and
                    line.split()[1] in sweeps]
            if len(rows) == 2 and all(row[-1] in ("Success", "Failed") for row in rows):
                break
            assert time.monotonic() < deadline, f"queue still busy:\n{status}"
            time.sleep(2)
    finally:
        dvc(repo, "queue", "stop", "--kill", check=False)
    assert all(row[-1] == "Success" for row in rows), status + dvc(repo, "queue", "logs", rows[0][1],
                                                                    check=False).stdout
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    exps = exp_by_name(shown)
    assert set(sweeps) <= set(exps), sorted(exps)
    baseline = json.loads((repo / "reports/assemble/synthetic.json").read_text())["splits"]
    test_exp = exp_metric(exps["test-0.3"], "reports/assemble/synthetic.json")["splits"]
    val_exp = exp_metric(exps["val-0.3"], "reports/assemble/synthetic.json")["splits"]
    assert test_exp["test"]["faces"] > baseline["test"]["faces"]
    assert val_exp["val"]["faces"] > baseline["val"]["faces"]


def test_run_cache_restores_a_params_set_that_already_ran(origin, tmp_path):
    """Switching params back to a set already run restores the outputs (model, `cache: false`
    metrics and training curves) from the run-cache instead of training again. The clone
    shares the origin's cache (`dvc cache dir --local`, the one-machine shared-cache setup), so
    the origin's own run of the committed params counts too."""
    repo = clone(origin, tmp_path, pull=None)
    dvc(repo, "cache", "dir", "--local", str(origin.repo / ".dvc/cache"))
    dvc(repo, "checkout", "--allow-missing")
    report = (repo / "reports/pretrain_base.json").read_bytes()
    curves_dir = repo / "dvclive/pretrain_base/plots/metrics"
    curves = {p.name: p.read_bytes() for p in curves_dir.iterdir()}
    assert json.loads(report)["epochs_run"] == 2

    set_params(repo, "pretrain_base", epochs=1)
    first = dvc(repo, "repro", "pretrain-base").stdout
    assert ran_stages(first) == ["pretrain-base"], first
    one_epoch_md5 = md5(repo / "models/base.pt")
    assert one_epoch_md5 != origin.base_md5
    assert json.loads((repo / "reports/pretrain_base.json").read_text())["epochs_run"] == 1

    set_params(repo, "pretrain_base", epochs=2)
    back = dvc(repo, "repro", "pretrain-base").stdout
    assert ran_stages(back) == [] and "Stage 'pretrain-base' is cached - skipping run" in back, back
    assert md5(repo / "models/base.pt") == origin.base_md5
    assert (repo / "reports/pretrain_base.json").read_bytes() == report
    assert {p.name: p.read_bytes() for p in curves_dir.iterdir()} == curves
    # Exactly the committed state again: a file the stage writes but dvc.yaml does not declare
    # is not restored and stays from the other run.
    changed = git(repo, "status", "--porcelain").stdout

    set_params(repo, "pretrain_base", epochs=1)
    again = dvc(repo, "repro", "pretrain-base").stdout
    assert ran_stages(again) == [] and "is cached - skipping run" in again, again
    assert md5(repo / "models/base.pt") == one_epoch_md5
    assert changed == "", f"written by pretrain-base but not declared in dvc.yaml:\n{changed}"
