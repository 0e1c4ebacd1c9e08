"""pretrain-base: MAFER's step 2 from the face model: the base FER model at full resolution.

`pretrain_base.init` picks the start: face (--init, models/face.pt), scratch, imported (weights)
or any mrfer model file (transfer from another dataset).

Writes the model file (weights + metadata), a report (validation metrics and test metrics at
every scale) and dvclive training curves. A killed run resumes from the --resume checkpoint
when restarted with the same params. Runs under `torchrun --nproc_per_node N` for DDP.
"""
import argparse

from mrfer import cli, config
from mrfer.data.scales import DownsampleParams
from mrfer.train import base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="sections pretrain_base, downsample.scales")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled/<train_on>)")
    parser.add_argument("--init", required=True, help="the face model, the start when init is face (models/face.pt)")
    parser.add_argument("--out", required=True, help="model file to write (models/base.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    parser.add_argument("--resume", required=True, help="per-epoch resume checkpoint (deleted when done)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "pretrain_base", base.PretrainBaseParams)
    scales = config.load_section(args.params, "downsample", DownsampleParams).scales
    base.fit_base(cfg, data=args.data, out=args.out, report=args.report, scales=scales,
                  live_dir=args.live, resume=args.resume, init_file=args.init)


if __name__ == "__main__":
    cli.run(main)
