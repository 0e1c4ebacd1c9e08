"""fsr-train: FSR-FER feature super-resolution on a frozen FER model (LR/HR pairs at every scale).

Writes the FSR file (generator + critic + metadata naming the FER model), a report (test
accuracy of the FER head on plain vs super-resolved features, and feature MSE to HR, per scale)
and dvclive training curves. Runs on one device (under torchrun, rank 0 alone trains).
"""
import argparse

from mrfer import cli, config
from mrfer.data.scales import DownsampleParams
from mrfer.train import fsr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="sections fsr_train, downsample.scales")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled/<train_on>)")
    parser.add_argument("--fer-model", required=True, help="the frozen FER model file (models/base.pt)")
    parser.add_argument("--out", required=True, help="FSR file to write (models/fsr.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "fsr_train", fsr.FsrTrainParams)
    scales = config.load_section(args.params, "downsample", DownsampleParams).scales
    fsr.fit_fsr(cfg, data=args.data, fer_model_path=args.fer_model, out=args.out, report=args.report,
                scales=scales, live_dir=args.live)


if __name__ == "__main__":
    cli.run(main)
