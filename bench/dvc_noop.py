"""How long a no-op `dvc repro` takes, where the time goes, and how many files DVC tracks.

By default: the real default pipeline, in this checkout, which must be up to date (run
`make repro` first; `dvc status` clean): `--repeat` no-op `dvc repro` runs, a `dvc status`,
and one profiled run (`dvc repro --cprofile-dump`) broken down into DVC start-up, reading
dvc.yaml / dvc.lock / params.yaml, hashing directory outputs and deps, and the rest. With
`--tiny`: a throwaway copy of this repo with the tests' tiny params, one full `dvc repro`
(timed too), then the same no-op runs there.

Also counts the files DVC tracks per output (from dvc.lock), `dvc ls --dvc-only -R` entries
and cache objects: arrays are packed into a few `.npy` shards per split, so apart from the raw
dataset (one file per image, as distributed) the pipeline tracks tens of files, not thousands.

    python bench/dvc_noop.py                  # this checkout, after `make repro`
    python bench/dvc_noop.py --target assemble
    python bench/dvc_noop.py --tiny           # a tiny copy, whole pipeline
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from pipeline_repo import make_repo, run  # noqa: E402  (the tests' tiny-params repo copy)

TARGET_S = 2.0


CPU_S: list[float] = []  # CPU seconds (user + system) of each timed command, children included


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of one command; its CPU seconds go to CPU_S (wall time on a busy machine
    includes waiting for a core, CPU time does not)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = run(cmd, cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, result


def tracked_files(repo: Path) -> dict[str, int]:
    """Files per DVC-cached output, from dvc.lock (`nfiles` for folders, 1 for a file)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    counts = {}
    for stage in lock.get("stages", {}).values():
        for out in stage.get("outs", []):
            if str(out.get("md5", "")).endswith(".dir") or "nfiles" in out:
                counts[out["path"]] = int(out.get("nfiles", 0))
            else:
                counts[out["path"]] = 1
    return counts


# Where a profiled no-op spends its time: (label, function of DVC or its libraries, cumulative).
BREAKDOWN = [
    ("hash directories (walk + stat every file)", "dvc_data/hashfile/build.py", "_build_tree"),
    ("read YAML (dvc.yaml, dvc.lock, params.yaml)", "dvc/utils/serialize/_yaml.py", "parse_yaml"),
    ("collect stages from dvc.yaml", "dvc/repo/stage.py", "collect"),
    ("compare deps and outs (all)", "dvc/stage/__init__.py", "changed"),
]


def profile(repo: Path, targets: list[str]) -> dict:
    """Seconds per BREAKDOWN entry in one profiled no-op run, plus its total (profiling slows
    Python code about 2x, so read these as shares)."""
    import pstats
    dump = repo / ".dvc" / "tmp" / "noop.prof"
    run(["dvc", "repro", "--cprofile-dump", str(dump), *targets], repo)
    stats = pstats.Stats(str(dump)).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())
    out = {"profiled_total_s": round(total, 2)}
    for label, file, func in BREAKDOWN:
        # cumulative time of the outermost calls only (recursive entries count once)
        out[label] = round(max((ct for (f, _, fn), (_, _, _, ct, _) in stats.items()
                                if f.endswith(file) and fn == func), default=0.0), 2)
    dump.unlink()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="time a tiny copy instead of this checkout")
    parser.add_argument("--target", default=None, help="one stage (and its upstream) instead of the whole pipeline")
    parser.add_argument("--repeat", type=int, default=3, help="no-op runs to time (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the tiny copy and print its path")
    args = parser.parse_args()
    targets = [args.target] if args.target else []
    result: dict = {"target_s": TARGET_S}

    with tempfile.TemporaryDirectory(prefix="mrfer-dvc-noop-") as tmp:
        if not args.tiny:
            repo = ROOT
            status = run(["dvc", "status", *targets], repo).stdout
            if "up to date" not in status:
                print(f"this checkout is not up to date; run `make repro` first:\n{status}", file=sys.stderr)
                return 2
            result["where"] = "checkout"
        else:
            repo = Path(tempfile.mkdtemp(prefix="mrfer-dvc-noop-")) if args.keep else Path(tmp) / "mrfer"
            make_repo(repo)
            seconds, _ = timed(["dvc", "repro", *targets], repo)
            result["where"] = f"tiny copy ({repo})" if args.keep else "tiny copy"
            result["first_repro_s"] = round(seconds, 2)
        runs, cpu = [], []
        for _ in range(args.repeat):
            seconds, out = timed(["dvc", "repro", *targets], repo)
            if "Running stage" in out.stdout:
                print(f"not a no-op: a stage ran\n{out.stdout}", file=sys.stderr)
                return 1
            runs.append(seconds)
            cpu.append(CPU_S[-1])
        result["noop_repro_s"] = {"min": round(min(runs), 2), "median": round(statistics.median(runs), 2),
                                  "cpu_median": round(statistics.median(cpu), 2)}
        result["load_average"] = round(os.getloadavg()[0], 2)
        result["status_s"] = round(timed(["dvc", "status", *targets], repo)[0], 2)
        result["startup_s"] = round(timed(["dvc", "version"], repo)[0], 2)
        result["profile"] = profile(repo, targets)
        per_out = tracked_files(repo)
        listed = run(["dvc", "ls", "--dvc-only", "-R", "."], repo).stdout.split()
        objects = repo / ".dvc" / "cache" / "files" / "md5"
        result["dvc_tracked_files"] = sum(per_out.values())
        result["dvc_ls_entries"] = len(listed)
        result["cache_objects"] = sum(1 for p in objects.rglob("*") if p.is_file()) if objects.is_dir() else 0
        result["files_per_output"] = dict(sorted(per_out.items(), key=lambda kv: -kv[1]))

    noop = result["noop_repro_s"]
    print(f"no-op dvc repro: {noop['median']:.2f} s median, {noop['min']:.2f} s best of {args.repeat}, "
          f"{noop['cpu_median']:.2f} s CPU (target <= {TARGET_S:.0f} s: "
          f"{'ok' if noop['min'] <= TARGET_S else 'OVER'}; load average {result['load_average']}); "
          f"dvc status {result['status_s']:.2f} s")
    print(f"dvc start-up (dvc version): {result['startup_s']:.2f} s; one profiled no-op (seconds, profiled):")
    for label, seconds in result["profile"].items():
        print(f"  {seconds:6.2f}  {label}")
    print(f"DVC tracks {result['dvc_tracked_files']} files in {len(per_out)} outputs "
          f"({result['dvc_ls_entries']} `dvc ls` entries, {result['cache_objects']} cache objects):")
    for path, n in result["files_per_output"].items():
        print(f"  {n:6d}  {path}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
