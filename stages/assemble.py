"""assemble: subject-independent train/val/test arrays at every scale, k folds, dataset mean/std.

Writes data/assembled/<split>/{hr,x2,...}.npy + manifest.csv, data/assembled/stats.json,
reports/assemble.json and a contact sheet of faces per class at HR, x4 and x8.
"""
import argparse

import numpy as np

from mrfer import cli, params, plots
from mrfer.data import assemble, downsample, extract, labels, shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--extracted", default="data/extracted")
    parser.add_argument("--downsampled", default="data/downsampled")
    parser.add_argument("--out", default="data/assembled")
    parser.add_argument("--report", default="reports/assemble.json")
    parser.add_argument("--contact-sheet", default="reports/contact_sheet.png")
    args = parser.parse_args()
    cfg = params.section(args.params, "assemble", allowed=assemble.DEFAULTS)
    scales = params.section(args.params, "downsample", allowed=downsample.DEFAULTS)["scales"]
    contempt = params.section(args.params, "extract", allowed=extract.DEFAULTS)["contempt"]
    classes = list(labels.class_names(contempt))
    assemble.assemble(cfg, classes, scales, args.extracted, args.downsampled, args.out, args.report)

    shown = ["hr"] + [s for s in ("x4", "x8") if s in scales]
    test = {s: shards.load_split(args.out, "test", s)[0] for s in shown}
    test_labels = np.array([r["label"] for r in shards.load_split(args.out, "test")[1]])
    plots.contact_sheet(test, test_labels, classes, args.contact_sheet, seed=cfg["seed"])


if __name__ == "__main__":
    cli.run(main)
