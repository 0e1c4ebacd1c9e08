"""kfold-test (one fold): fine-tune each chosen model on the fold's training part, test it on the
held-out fold at every scale. dvc.yaml runs one instance per fold (`foreach`), so each fold is
cached on its own; `--aggregate` writes reports/kfold.json (mean ± std over the folds listed in
params).
"""
import argparse

from mrfer import cli, params
from mrfer.data import assemble, downsample
from mrfer.errors import ParamsError
from mrfer.train import kfold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--fold", help="key of the fold under kfold_test.folds (e.g. fold0)")
    parser.add_argument("--aggregate", action="store_true", help="aggregate the fold reports into --out")
    parser.add_argument("--data", default="data/assembled")
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", default="reports/kfold.json")
    args = parser.parse_args()
    section = params.section(args.params, "kfold_test", allowed={"train": {}, "folds": {}})
    folds = section["folds"] or {}
    if args.aggregate:
        kfold.aggregate([f"reports/kfold/{key}.json" for key in folds], args.out)
        return
    if args.fold not in folds:
        raise ParamsError(f"{args.params}: no fold {args.fold!r} under kfold_test.folds ({', '.join(folds)})")
    overrides = folds[args.fold] or {}
    cfg = {**kfold.TRAIN_DEFAULTS, **(section["train"] or {}), **overrides, "seed": section["seed"]}
    unknown = set(cfg) - set(kfold.TRAIN_DEFAULTS) - {"seed", "fold"}
    if unknown:
        raise ParamsError(f"{args.params}: unknown kfold_test key(s) {sorted(unknown)}")
    ds = params.section(args.params, "downsample", allowed=downsample.DEFAULTS)
    n_folds = params.section(args.params, "assemble", allowed=assemble.DEFAULTS)["folds"]
    kfold.run_fold(cfg, int(cfg["fold"]), args.data, args.models, ds["scales"], ds["kernel"], n_folds,
                   report=f"reports/kfold/{args.fold}.json", confusion_out=f"data/kfold/{args.fold}/confusion.json")


if __name__ == "__main__":
    cli.run(main)
