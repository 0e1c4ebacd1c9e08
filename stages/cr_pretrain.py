"""cr-pretrain: MAFER's step 1, cross-resolution training of the face model on identity data.

Student and frozen teacher start from --face; identity cross-entropy on faces degraded with a
growing probability to 8..128 px, plus 0.1 x MSE to the teacher's features of the full-resolution
face (mrfer/train/cr.py). Writes the model file, a report and dvclive curves.
"""
import argparse

from mrfer import cli, config
from mrfer.train import cr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="section cr_pretrain")
    parser.add_argument("--data", required=True, help="identity faces (data/identities)")
    parser.add_argument("--face", required=True, help="the face model: student start and frozen teacher")
    parser.add_argument("--out", required=True, help="model file to write (models/cr.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    parser.add_argument("--resume", required=True, help="per-epoch resume checkpoint (deleted when done)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "cr_pretrain", cr.CrPretrainParams)
    cr.fit_cr(cfg, data=args.data, face=args.face, out=args.out, report=args.report, live_dir=args.live,
              resume=args.resume)


if __name__ == "__main__":
    cli.run(main)
