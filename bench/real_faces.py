"""Tables for docs/real-faces.md from runs on real faces (never committed: their data is not ours).

Each RUN is a folder holding what one run left: `reports/` (copied from the workspace after
`dvc repro`), `time.txt` (`start ... ` / `end ... wall_s N ...`) and optionally `log.txt` (the
`dvc repro` output, whose INFO lines time each training stage).

    python bench/real_faces.py classify RUN                  # every model x scale (classify's heads)
    python bench/real_faces.py compare --stage pretrain_base NAME=RUN [NAME=RUN ...]
    python bench/real_faces.py cross-eval RUN                # the run's models on the other datasets

The tables print overall / average (mean per-class) accuracy in % on the test split, as
scripts/results_tables.py does for the committed synthetic reports.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from results_tables import ReportError, load, pair, resolutions, scale_label, table  # noqa: E402

STAGE_START = re.compile(r"^Running stage '([^']+)'", re.M)
CLOCK = re.compile(r"(?:^|\r)(\d\d:\d\d:\d\d) INFO ", re.M)   # a progress bar's \r may precede a log line


def stage_minutes(run: Path) -> dict[str, float]:
    """Minutes from the first to the last logged line of each stage in the run's `dvc repro`
    output (its epoch rows and its test line): a close lower bound of the stage's wall time."""
    log = run / "log.txt"
    text = log.read_text(errors="replace") if log.is_file() else ""
    starts = list(STAGE_START.finditer(text))
    minutes = {}
    for start, end in zip(starts, starts[1:] + [None]):
        clocks = [dt.datetime.strptime(c, "%H:%M:%S") for c in
                  CLOCK.findall(text, start.end(), end.start() if end else len(text))]
        if clocks:
            minutes[start.group(1)] = (clocks[-1] - clocks[0]).total_seconds() % 86400 / 60
    return minutes


def classify_table(run: Path) -> list[str]:
    results = load(run / "reports", "classify.json")
    px = resolutions(run / "reports")
    scales = list(next(iter(results.values())))
    rows = [[model] + [pair(results[model][s]["head"]) for s in scales] for model in results]
    return table(["model"] + [scale_label(s, px) for s in scales], rows)


def compare_table(runs: dict[str, Path], stage: str) -> list[str]:
    reports = {name: load(run / "reports", f"{stage}.json") for name, run in runs.items()}
    first = next(iter(runs.values()))
    px = resolutions(first / "reports")
    scales = list(next(iter(reports.values()))["test"])
    dvc_stage = stage.replace("_", "-")   # a report is named for its params section, the dvc stage with dashes
    rows = []
    for name, report in reports.items():
        minutes = stage_minutes(runs[name]).get(dvc_stage)
        rows.append([name] + [pair(report["test"][s]) for s in scales]
                    + [f"{minutes:.1f} min" if minutes is not None else "?"])
    return table(["run"] + [scale_label(s, px) for s in scales] + [f"{dvc_stage} wall"], rows)


def cross_eval_table(run: Path) -> list[str]:
    report = load(run / "reports", "cross_eval.json")
    px = resolutions(run / "reports")
    rows = []
    for target, models in report["targets"].items():
        for model, entry in models.items():
            rows.append([target, model, str(len(entry["classes"]))]
                        + [pair(entry["metrics"][s]) for s in report["scales"]])
    return table(["tested on", "model", "classes"] + [scale_label(s, px) for s in report["scales"]], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("classify", help="every model x scale of one run").add_argument("run", type=Path)
    sub.add_parser("cross-eval", help="one run's models on its other datasets").add_argument("run", type=Path)
    compare = sub.add_parser("compare", help="one stage's test accuracy per scale across runs")
    compare.add_argument("--stage", default="pretrain_base")
    compare.add_argument("runs", nargs="+", metavar="NAME=RUN")
    args = parser.parse_args(argv)
    try:
        if args.what == "classify":
            lines = classify_table(args.run)
        elif args.what == "cross-eval":
            lines = cross_eval_table(args.run)
        else:
            runs = dict(item.split("=", 1) for item in args.runs)
            lines = compare_table({name: Path(path) for name, path in runs.items()}, args.stage)
    except (ReportError, KeyError, ValueError) as e:
        print(f"ERROR real_faces: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
