"""fsr-train: FSR-FER feature super-resolution on a frozen FER model (LR/HR pairs at every scale).

Writes models/fsr.pt (generator + critic + metadata naming the FER model), reports/fsr_train.json
(test accuracy of the FER head on plain vs super-resolved features, and feature MSE to HR, per
scale) and dvclive/fsr_train. Runs on one device (under torchrun, rank 0 alone trains).
"""
import argparse

from mrfer import cli, params
from mrfer.data import downsample
from mrfer.train import fsr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/assembled")
    parser.add_argument("--fer-model", default=None,
                        help="the frozen FER model (default: fsr_train.fer_model, i.e. models/base.pt)")
    parser.add_argument("--out", default="models/fsr.pt")
    parser.add_argument("--report", default="reports/fsr_train.json")
    args = parser.parse_args()
    cfg = params.section(args.params, "fsr_train", allowed=fsr.DEFAULTS)
    ds = params.section(args.params, "downsample", allowed=downsample.DEFAULTS)
    fsr.fit_fsr(cfg, data=args.data, fer_model_path=args.fer_model or cfg["fer_model"], out=args.out, report=args.report,
                scales=ds["scales"])


if __name__ == "__main__":
    cli.run(main)
