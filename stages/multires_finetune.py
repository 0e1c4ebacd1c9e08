"""multires-finetune: MAFER's step 2 from the cross-resolution model (--cr models/cr.pt): a fresh
expression head, fine-tuned on the FER labels at full resolution exactly as pretrain-base
fine-tunes the face model. Writes the model file, a report (test metrics at every scale) and
dvclive curves. Runs under torchrun for DDP like pretrain-base.
"""
import argparse

from mrfer import cli, config
from mrfer.data.scales import DownsampleParams
from mrfer.train import multires


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="sections multires_finetune, downsample.scales")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled/<train_on>)")
    parser.add_argument("--cr", required=True, help="the cross-resolution model (models/cr.pt)")
    parser.add_argument("--out", required=True, help="model file to write (models/multires.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    parser.add_argument("--resume", required=True, help="per-epoch resume checkpoint (deleted when done)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "multires_finetune", multires.MultiresFinetuneParams)
    scales = config.load_section(args.params, "downsample", DownsampleParams).scales
    multires.fit_multires(cfg, data=args.data, cr=args.cr, out=args.out, report=args.report, scales=scales,
                          live_dir=args.live, resume=args.resume)


if __name__ == "__main__":
    cli.run(main)
