"""distill: our cross-resolution recipe (not MAFER's): distillation from the frozen FER base on the
FER data (step 1), then a FER fine-tune with the low-resolution augmentation kept (step 2).

Writes the model file, a report (test metrics at every scale) and dvclive curves under
<live>/step1 and <live>/step2. Runs under torchrun for DDP like pretrain-base.
"""
import argparse

from mrfer import cli, config
from mrfer.data.scales import DownsampleParams
from mrfer.train import distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="sections distill, downsample.scales, downsample.kernel")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled/<train_on>)")
    parser.add_argument("--base", required=True, help="the base model: student start and frozen teacher")
    parser.add_argument("--out", required=True, help="model file to write (models/distill.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    parser.add_argument("--resume-dir", required=True, help="folder of the per-epoch resume checkpoints")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "distill", distill.DistillParams)
    ds = config.load_section(args.params, "downsample", DownsampleParams)
    distill.fit_distill(cfg, data=args.data, base=args.base, out=args.out, report=args.report,
                          scales=ds.scales, kernel=ds.kernel, live_dir=args.live, resume_dir=args.resume_dir)


if __name__ == "__main__":
    cli.run(main)
