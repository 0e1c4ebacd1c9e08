"""kfold-test (one fold): fine-tune each chosen model on the fold's training part, test it on the
held-out fold at every scale. dvc.yaml runs one instance per entry of `kfold_test.folds`
(`foreach`), so each fold is cached on its own; kfold-aggregate then takes mean ± std.
"""
import argparse

from mrfer import cli, config
from mrfer.data import assemble, downsample
from mrfer.errors import ParamsError
from mrfer.train import kfold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="sections kfold_test, assemble.folds, downsample.scales, downsample.kernel")
    parser.add_argument("--fold", required=True, help="key of the fold under kfold_test.folds (e.g. fold0)")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled)")
    parser.add_argument("--models", required=True, help="folder holding <model>.pt for every kfold_test.train.models entry")
    parser.add_argument("--report", required=True, help="the fold's metrics JSON to write")
    parser.add_argument("--confusion", required=True, help="the fold's confusion matrices JSON to write (for plots)")
    args = parser.parse_args()
    section = config.load_section(args.params, "kfold_test", kfold.KfoldTestParams)
    if args.fold not in section.folds:
        raise ParamsError(f"{args.params}: no fold {args.fold!r} under kfold_test.folds ({', '.join(section.folds)})")
    ds = config.load_section(args.params, "downsample", downsample.DownsampleParams)
    n_folds = config.load_section(args.params, "assemble", assemble.AssembleParams).folds
    kfold.run_fold(section.train, section.seed, section.folds[args.fold].fold, args.data, args.models, ds.scales,
                   ds.kernel, n_folds, report=args.report, confusion_out=args.confusion)


if __name__ == "__main__":
    cli.run(main)
