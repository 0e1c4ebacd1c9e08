"""plots: the figures people look at, in reports/plots/.

t-SNE of test embeddings per model, confusion matrices (counts and row-normalised) at full
resolution and at the lowest one, accuracy vs resolution, training curves (from dvclive), and
k-fold confusion summed over folds. Also the confusion CSVs that `dvc plots` draws.
"""
import argparse
import glob
import logging

from mrfer import cli, params, plots

RUNS = {"pretrain-base": "dvclive/pretrain_base/plots/metrics",
        "multires step 1 (cross-resolution)": "dvclive/multires_finetune/step1/plots/metrics",
        "multires step 2 (fine-tune)": "dvclive/multires_finetune/step2/plots/metrics",
        "fsr-train": "dvclive/fsr_train/plots/metrics"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--predictions", default="data/classify/predictions.npz")
    parser.add_argument("--curves", default="reports/accuracy_vs_resolution")
    parser.add_argument("--kfold", default="data/kfold/*/confusion.json", help="glob of fold confusion files")
    parser.add_argument("--out", default="reports/plots")
    args = parser.parse_args()
    seed = params.load(args.params).get("seed", 0)
    written = plots.render_reports(args.predictions, args.curves, RUNS, sorted(glob.glob(args.kfold)),
                                   args.out, seed=seed)
    logging.getLogger("mrfer").info("wrote %s", ", ".join(written))


if __name__ == "__main__":
    cli.run(main)
