"""kfold-test (one fold): per recipe, fine-tune its starting model on the fold's training part,
test it on the held-out fold at every scale. base starts from --face, multires from --cr (models
that never saw a FER face), distill from the fold's own base. dvc.yaml runs one instance per entry
of `kfold_test.folds` (`foreach`), so each fold is cached on its own; kfold-aggregate then takes
mean ± std.
"""
import argparse

from mrfer import cli, config
from mrfer.data import assemble
from mrfer.data.scales import DownsampleParams
from mrfer.errors import ParamsError
from mrfer.train import kfold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="sections kfold_test, loop, finetune, distill, assemble.folds, downsample.scales/kernel")
    parser.add_argument("--fold", required=True, help="key of the fold under kfold_test.folds (e.g. fold0)")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled/<train_on>)")
    parser.add_argument("--face", required=True, help="the face model, base's start (models/face.pt)")
    parser.add_argument("--cr", required=True, help="the cross-resolution model, multires's start (models/cr.pt)")
    parser.add_argument("--report", required=True, help="the fold's metrics JSON to write")
    parser.add_argument("--confusion", required=True, help="the fold's confusion matrices JSON to write (for plots)")
    args = parser.parse_args()
    section = config.load_section(args.params, "kfold_test", kfold.KfoldTestParams)
    if args.fold not in section.folds:
        raise ParamsError(f"{args.params}: no fold {args.fold!r} under kfold_test.folds ({', '.join(section.folds)})")
    ds = config.load_section(args.params, "downsample", DownsampleParams)
    n_folds = config.load_section(args.params, "assemble", assemble.AssembleParams).folds
    files = kfold.FoldFiles(args.data, args.face, args.cr, args.report, args.confusion)
    kfold.run_fold(section.train, section.seed, section.folds[args.fold].fold, files, ds, n_folds)

if __name__ == "__main__":
    cli.run(main)
