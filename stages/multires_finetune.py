"""multires-finetune: MAFER's cross-resolution step + FER fine-tune, from the base model.

Writes models/multires.pt, reports/multires_finetune.json (test metrics at every scale) and
dvclive/multires_finetune/step{1,2}. Runs under torchrun for DDP like pretrain-base.
"""
import argparse

from mrfer import cli, params
from mrfer.data import downsample
from mrfer.train import multires


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/assembled")
    parser.add_argument("--base", default="models/base.pt")
    parser.add_argument("--out", default="models/multires.pt")
    parser.add_argument("--report", default="reports/multires_finetune.json")
    args = parser.parse_args()
    cfg = params.section(args.params, "multires_finetune", allowed=multires.DEFAULTS)
    ds = params.section(args.params, "downsample", allowed=downsample.DEFAULTS)
    multires.fit_multires(cfg, data=args.data, base=args.base, out=args.out, report=args.report,
                          scales=ds["scales"], kernel=ds["kernel"])


if __name__ == "__main__":
    cli.run(main)
