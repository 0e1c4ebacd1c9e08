"""classify: every model x every scale -> sklearn classifier on embeddings + the net's own head.

Writes reports/classify.json (metrics), reports/classify.md (readable table),
reports/accuracy_vs_resolution/<model>.csv (plot data) and data/classify/predictions.npz
(test predictions and HR embeddings, for the plots stage).
"""
import argparse

from mrfer import cli, params
from mrfer.data import downsample
from mrfer.eval import classify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/assembled")
    parser.add_argument("--models", default="models")
    parser.add_argument("--report", default="reports/classify.json")
    parser.add_argument("--table", default="reports/classify.md")
    parser.add_argument("--curves", default="reports/accuracy_vs_resolution")
    parser.add_argument("--predictions", default="data/classify/predictions.npz")
    args = parser.parse_args()
    cfg = params.section(args.params, "classify", allowed=classify.DEFAULTS)
    scales = params.section(args.params, "downsample", allowed=downsample.DEFAULTS)["scales"]
    classify.classify(cfg, args.data, args.models, scales, args.report, args.table, args.curves, args.predictions)


if __name__ == "__main__":
    cli.run(main)
