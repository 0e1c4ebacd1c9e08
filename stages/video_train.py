"""video-train: a clip classifier, per-frame embeddings of a pipeline CNN -> GRU.

Reads the raw dataset named by the `extract` section (every frame of each labelled sequence),
crops faces as extract does, splits clips by the subjects of data/assembled/*/manifest.csv,
trains a GRU over windows of frame embeddings (`video_train` section) and compares it with the
CNN's own head voting over the same test clips. Writes models/video.pt, reports/video.json and
dvclive/video_train.
"""
import argparse

from mrfer import cli, params
from mrfer.data import extract
from mrfer.train import video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/assembled", help="assembled data (its manifests give the split)")
    parser.add_argument("--out", default="models/video.pt")
    parser.add_argument("--report", default="reports/video.json")
    parser.add_argument("--live", default="dvclive/video_train", help="dvclive directory for the curves")
    args = parser.parse_args()
    cfg = params.section(args.params, "video_train", allowed=video.DEFAULTS)
    extract_cfg = params.section(args.params, "extract", allowed=extract.DEFAULTS)
    video.fit_video(cfg, extract_cfg, data=args.data, out=args.out, report=args.report, live_dir=args.live)


if __name__ == "__main__":
    cli.run(main)
