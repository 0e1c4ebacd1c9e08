"""Write docs/results.md from the committed reports (reports/*.json and the CSVs beside them).

    python scripts/results_tables.py            # rewrite docs/results.md
    python scripts/results_tables.py --check    # exit 1, with a diff, when docs/results.md differs

Every number in docs/results.md comes from a report that `dvc repro` writes; none is typed by
hand. After `dvc repro` changes the reports, run this again and commit both (tests/test_docs.py
fails while they disagree).
"""
from __future__ import annotations

import argparse
import csv
import difflib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"
OUT = REPO / "docs" / "results.md"
COMMAND = "python scripts/results_tables.py"

# What each model of classify / the k-fold is; the numbers stay in the reports.
MODEL_NOTES = {
    "base": "MAFER step 2 from the face model (pretrain-base)",
    "multires": "MAFER step 2 from the cross-resolution model (multires-finetune)",
    "distill": "ours: distillation on the FER data, low-resolution augmentation kept (distill)",
    "base+fsr": "base with the FSR-FER generator on low-resolution feature maps (fsr-train)",
}
CLASSIFIER_NOTES = {
    "head": "the network's own head",
    "svc": "linear SVC on L2-normalised embeddings",
    "svc_fsrfer": "FSR-FER's published protocol",
    "logreg": "logistic regression on embeddings",
}


class ReportError(RuntimeError):
    """A report is missing or lacks what the tables need."""


def load(reports: Path, name: str) -> dict:
    path = reports / name
    if not path.is_file():
        raise ReportError(f"{path} is missing: run `dvc repro` (or `dvc pull`) first")
    return json.loads(path.read_text())


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def pair(entry: dict) -> str:
    """Overall / average (mean per-class) accuracy in %; a collapsed entry is marked."""
    mark = " ⚠" if entry.get("collapsed") else ""
    return f"{pct(entry['accuracy'])} / {pct(entry['average_accuracy'])}{mark}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def resolutions(reports: Path) -> dict[str, str]:
    """scale -> its column label, e.g. 'x4 (16 px)', from classify's accuracy-vs-resolution CSVs."""
    px: dict[str, str] = {}
    for path in sorted((reports / "accuracy_vs_resolution").glob("*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                px.setdefault(row["scale"], row["resolution_px"])
    return px


def scale_label(scale: str, px: dict[str, str]) -> str:
    return f"{scale} ({px[scale]} px)" if scale in px else scale


def trained_on(reports: Path) -> str:
    """The dataset the models were trained on (cross-eval's report names it)."""
    return load(reports, "cross_eval.json")["trained_on"]


def data_section(reports: Path) -> list[str]:
    name = trained_on(reports)
    synth, extract = load(reports, "synthesize.json"), load(reports, f"extract/{name}.json")
    ident, assemble = load(reports, "extract_identities.json"), load(reports, f"assemble/{name}.json")
    rows = [[split, str(s["faces"]), str(s["subjects"])] for split, s in assemble["splits"].items()]
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(extract["skipped_by_reason"].items())) or "none"
    out = ["## Data", "",
           f"`synthesize` wrote {synth['subjects']} subjects and {synth['sequences']} sequences "
           f"({synth['labelled_sequences']} labelled) in CK+'s layout, and a face-recognition set of "
           f"{synth['identities']['identities']} identities ({synth['identities']['images']} images). "
           f"`extract@{name}` (reader `{extract['reader']}`) kept {extract['faces']} faces of {extract['subjects']} subjects "
           f"and skipped {extract['skipped']} inputs ({skipped}); `extract-identities` kept "
           f"{ident['faces']} faces of {ident['identities']} identities ({ident['train']} train, "
           f"{ident['val']} val). `assemble@{name}` split the FER faces by subject "
           f"(subject-independent: {str(assemble['subject_independent']).lower()}; "
           f"kernel `{assemble['kernel']}`; scales {', '.join(assemble['scales'])}):", ""]
    return out + table(["split", "faces", "subjects"], rows) + [""]


def classify_section(reports: Path, px: dict[str, str], classes: list[str]) -> list[str]:
    results = load(reports, "classify.json")
    models = list(results)
    scales = list(results[models[0]])
    header = ["model"] + [scale_label(s, px) for s in scales]
    head_rows = [[m] + [pair(results[m][s]["head"]) for s in scales] for m in models]
    out = ["## Test accuracy by resolution (`classify`)", "",
           "Overall / average (mean per-class) accuracy in %, on the test split, through each "
           "network's own head. ⚠ marks a collapsed entry (one class predicted for most faces; "
           "its accuracy is mostly that class's share). Every classifier's row is in "
           "[`reports/classify.md`](../reports/classify.md); the curves are in "
           "[`reports/plots/`](../reports/plots/).", ""]
    out += [f"- `{m}`: {MODEL_NOTES[m]}" for m in models if m in MODEL_NOTES] + [""]
    out += table(header, head_rows) + [""]

    fsr = [m for m in models if m.endswith("+fsr") and "svc_fsrfer" in results[m][scales[0]]]
    if fsr:
        rows = []
        for m in fsr:
            plain = m.removesuffix("+fsr")
            for name in (plain, m):
                if name in results:
                    rows.append([f"{name} (`svc_fsrfer`)"] + [pair(results[name][s]["svc_fsrfer"]) for s in scales])
        out += ["Under FSR-FER's published classifier protocol (`svc_fsrfer`: a linear SVC with "
                "probabilities on the L2-normalised embedding. On a `+fsr` model every face goes "
                "through the generator and the SVC is fitted as `classify.fsrfer_fit` says; on a plain "
                "model it is fitted on the HR training embeddings):", ""]
        out += table(["model"] + [scale_label(s, px) for s in scales], rows) + [""]

    collapsed = []
    for m in models:
        for s in scales:
            for c, entry in results[m][s].items():
                if entry.get("collapsed"):
                    collapsed.append([m, scale_label(s, px), c, classes[entry["collapsed_to"]],
                                      pct(entry["collapsed_share"])])
    if collapsed:
        out += ["Collapsed entries (`collapsed: true` in `reports/classify.json`):", ""]
        out += table(["model", "scale", "classifier", "class predicted", "share of faces (%)"], collapsed) + [""]
    return out


def training_section(reports: Path) -> list[str]:
    rows = []
    for stage, name in (("face-pretrain", "face_pretrain.json"), ("cr-pretrain", "cr_pretrain.json"),
                        ("pretrain-base", "pretrain_base.json"), ("multires-finetune", "multires_finetune.json")):
        r = load(reports, name)
        what = (f"identities at {r['val_at_resolution']} px" if "val_at_resolution" in r else
                "identities" if "identities" in r else "expressions")
        rows.append([stage, str(r["epochs_run"]), what, pct(r["val"]["val_accuracy"])])
    distill = load(reports, "distill.json")
    for step, val in distill["val"].items():
        rows.append([f"distill {step}", str(val["epoch"]), "expressions at every scale",
                     pct(val["val_accuracy"])])
    out = ["## Training (validation split)", "",
           "The validation accuracy of each training stage's last epoch (its report's `val`); a stage "
           "with `restore_best` keeps its best validation epoch's weights.", ""]
    return out + table(["stage", "epochs run", "validated on", "val accuracy, last epoch (%)"], rows) + [""]


def kfold_section(reports: Path, px: dict[str, str]) -> list[str]:
    k = load(reports, "kfold.json")
    models = [m for m in k if m not in ("folds", "protocol", "starts")]
    scales = list(k[models[0]])
    rows = [[m, k["starts"].get(m, "")]
            + [f"{pct(k[m][s]['accuracy_mean'])} ± {pct(k[m][s]['accuracy_std'])}" for s in scales]
            for m in models]
    out = [f"## {k['folds']}-fold cross-validation (`kfold-test`, `kfold-aggregate`)", "",
           f"Protocol `{k['protocol']}`. Accuracy in %, mean ± standard deviation over the folds "
           "(`reports/kfold.json`). No model a fold starts from saw a face of that fold's test part.", ""]
    return out + table(["model", "trained from"] + [scale_label(s, px) for s in scales], rows) + [""]


def video_section(reports: Path) -> list[str]:
    v = load(reports, "video_train.json")
    rows = [[name, pair(v[key])] for name, key in (("GRU over frame windows", "gru"),
                                                    ("FER head, mean of the frames' probabilities", "frame_mean"),
                                                    ("FER head, majority of the frames' labels", "frame_majority"))]
    out = ["## Video clips (`video-train`)", "",
           f"Recipe `{v['recipe']}` (CNN: `{v['cnn']}`, frame layer `{v['frame_layer']}`), "
           f"{v['epochs_run']} epochs, epoch {v['best_epoch']} kept. Test clips: {v['clips']['test']} "
           f"({v['frames']['test']} frames; clip length {v['clip_length']['min']}–{v['clip_length']['max']} "
           f"frames, window {v['window']}: {v['test_clips_padded']} clips padded).", ""]
    return out + table(["clip classifier", "accuracy / average accuracy (%)"], rows) + [""]


def export_section(reports: Path) -> list[str]:
    e = load(reports, "export.json")
    rows = [[m, f"`{r['onnx']}`", str(r["opset"]), f"{r['max_abs_diff']:.1e}", pct(r["accuracy_torch"]),
             pct(r["accuracy_onnx"]), str(r["labels_differ"])] for m, r in e.items()]
    faces = {r["faces"] for r in e.values()}
    out = ["## ONNX export (`export`)", "",
           f"onnxruntime (CPU) against torch on the {', '.join(map(str, sorted(faces)))} test faces.", ""]
    return out + table(["model", "file", "opset", "max \\|onnxruntime − torch\\| logit", "accuracy torch (%)",
                        "accuracy onnxruntime (%)", "labels that differ"], rows) + [""]


def cross_eval_section(reports: Path, px: dict[str, str]) -> list[str]:
    """Every model on every other dataset (reports/cross_eval.json)."""
    report = load(reports, "cross_eval.json")
    scales = report["scales"]
    out = ["## Cross-dataset", "",
           f"Every model trained on `{report['trained_on']}`, tested by `cross-eval` on each other dataset "
           "of the workspace: accuracy / average accuracy (%) over the classes both have "
           "(`reports/cross_eval.json`; * = collapsed onto one class).", ""]
    rows = []
    for target, by_model in report["targets"].items():
        data = load(reports, f"assemble/{target}.json")
        for name, entry in by_model.items():
            if "skipped" in entry:
                rows.append([name, target, "-", *([entry["skipped"]] + [""] * (len(scales) - 1))])
                continue
            cells = [f"{100 * m['accuracy']:.1f} / {100 * m['average_accuracy']:.1f}{' *' if m['collapsed'] else ''}"
                     for m in (entry["metrics"][s] for s in scales)]
            faces = sum(data["splits"][s]["faces"] for s in entry["splits"])
            rows.append([name, f"{target} ({'+'.join(entry['splits'])}, {faces} faces)",
                         str(len(entry["classes"])), *cells])
    return out + table(["model", "tested on", "classes", *(scale_label(s, px) for s in scales)], rows) + [""]


def render(reports: Path = REPORTS) -> str:
    assemble = load(reports, f"assemble/{trained_on(reports)}.json")
    px = resolutions(reports)
    lines = ["# Results on the synthetic default", "",
             f"<!-- Generated by `{COMMAND}` from reports/; do not edit by hand. -->",
             f"Generated by `{COMMAND}` from the reports `dvc repro` commits under "
             "[`reports/`](../reports/); edit the script, not this file. The settings are "
             "[`params.yaml`](../params.yaml)'s; the machine and library versions that made a model "
             "are in its file's metadata.", ""]
    lines += data_section(reports)
    lines += classify_section(reports, px, assemble["classes"])
    lines += cross_eval_section(reports, px)
    lines += kfold_section(reports, px)
    lines += training_section(reports)
    lines += video_section(reports)
    lines += export_section(reports)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff when the file differs")
    parser.add_argument("--reports", type=Path, default=REPORTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        text = render(args.reports)
    except (ReportError, KeyError) as e:
        print(f"ERROR results_tables: {e}", file=sys.stderr)
        return 2
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                   str(args.out), f"{COMMAND} output"))
        print(f"{args.out} is stale: run `{COMMAND}`", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
