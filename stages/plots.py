"""plots: the figures people look at.

t-SNE of test embeddings per model, confusion matrices (counts and row-normalised) at full
resolution and at the lowest one, accuracy vs resolution, training curves (from dvclive), k-fold
confusion summed over folds, and a contact sheet of test faces per class at three resolutions.
Also the confusion CSVs that `dvc plots` draws.
"""
import argparse
import logging
from pathlib import Path

from mrfer import cli, config, plots


def run_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="the shared seed and section plots")
    parser.add_argument("--predictions", required=True, help="classify's test predictions (.npz)")
    parser.add_argument("--curves", required=True, help="classify's accuracy-vs-resolution CSV folder")
    parser.add_argument("--kfold", required=True, help="folder of <fold>/confusion.json")
    parser.add_argument("--assembled", required=True, help="assembled data (contact sheet of test faces)")
    parser.add_argument("--live-run", type=run_arg, action="append", default=[], metavar="NAME=DIR",
                        help="a training-curve panel: its title and dvclive plots/metrics folder (repeatable)")
    parser.add_argument("--out", required=True, help="folder to write (PNGs + confusion CSVs)")
    args = parser.parse_args()
    seed = config.load_seed(args.params)
    cfg = config.load_section(args.params, "plots", plots.PlotsParams)
    confusions = sorted(str(p) for p in Path(args.kfold).glob("*/confusion.json"))
    written = plots.render_reports(args.predictions, args.curves, dict(args.live_run), confusions,
                                   args.assembled, args.out, seed=seed,
                                   tsne_max_points=cfg.tsne_max_points)
    logging.getLogger("mrfer").info("wrote %s", ", ".join(written))


if __name__ == "__main__":
    cli.run(main)
