"""kfold-aggregate: mean ± std over the fold reports of every entry of `kfold_test.folds`."""
import argparse
from pathlib import Path

from mrfer import cli, config
from mrfer.eval import aggregate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="section kfold_test.folds (which folds)")
    parser.add_argument("--reports", required=True, help="folder of the fold reports, <fold>.json")
    parser.add_argument("--out", required=True, help="aggregate JSON to write")
    args = parser.parse_args()
    folds = config.load_section(args.params, "kfold_test", aggregate.KfoldFolds).folds
    aggregate.aggregate([Path(args.reports) / f"{key}.json" for key in folds], args.out)


if __name__ == "__main__":
    cli.run(main)
