"""pretrain-base: train the base FER model at full resolution.

Writes models/base.pt (weights + metadata), reports/pretrain_base.json (validation metrics and
test metrics at every scale) and dvclive/pretrain_base (training curves). A killed run resumes
from models/resume/pretrain_base.pt when restarted with the same params.
Runs under `torchrun --nproc_per_node N stages/pretrain_base.py` for DDP.
"""
import argparse

from mrfer import cli, params
from mrfer.data import downsample
from mrfer.train import base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/assembled")
    parser.add_argument("--out", default="models/base.pt")
    parser.add_argument("--report", default="reports/pretrain_base.json")
    args = parser.parse_args()
    cfg = params.section(args.params, "pretrain_base", allowed=base.DEFAULTS)
    scales = params.section(args.params, "downsample", allowed=downsample.DEFAULTS)["scales"]
    base.fit_base(cfg, data=args.data, out=args.out, report=args.report, scales=scales)


if __name__ == "__main__":
    cli.run(main)
