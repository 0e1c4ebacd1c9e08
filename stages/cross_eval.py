"""cross-eval: every trained model (trained on `train_on`) tested on every other dataset under
`datasets`, at full resolution and every downsample scale, on the classes both have.

Writes --report (JSON: per target dataset and model, the splits and classes tested and the
metrics per scale, or why a pair was left out), --table (Markdown) and --curves (one
accuracy-vs-resolution CSV per target dataset, for `dvc plots`).
"""
import argparse

from mrfer import cli, config
from mrfer.data.scales import DownsampleParams
from mrfer.eval import cross_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="sections cross_eval, datasets (names), "
                        "downsample.scales and .kernel")
    parser.add_argument("--models", required=True, help="folder of the trained models (models)")
    parser.add_argument("--data", required=True, help="folder of the assembled datasets, one per name (data/assembled)")
    parser.add_argument("--train-on", required=True, help="the dataset the models were trained on (${train_on})")
    parser.add_argument("--report", required=True, help="JSON to write (reports/cross_eval.json)")
    parser.add_argument("--table", required=True, help="Markdown table to write (reports/cross_eval.md)")
    parser.add_argument("--curves", required=True, help="folder of per-dataset CSVs to write (reports/cross_eval)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "cross_eval", cross_eval.CrossEvalParams)
    ds = config.load_section(args.params, "downsample", DownsampleParams)
    names = config.load_datasets(args.params)
    cross_eval.cross_eval(cfg, args.models, args.data, args.train_on, names, ds.scales, ds.kernel,
                          args.report, args.table, args.curves)


if __name__ == "__main__":
    cli.run(main)
