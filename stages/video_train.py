"""video-train: a clip classifier, per-frame embeddings of a pipeline CNN -> GRU.

Reads the raw dataset at --raw with the reader and crop settings of the `extract` section (every
frame of each labelled sequence), splits the clips by the subjects of the assembled data's
manifests (--data), trains a GRU over windows of the --cnn model's frame embeddings (`video_train`
section) and compares it with that CNN's own head voting over the same test clips. Writes the
model file (--out), a metrics JSON (--report) and dvclive curves (--live).
"""
import argparse

from mrfer import cli, config
from mrfer.data.extract import ExtractParams
from mrfer.train import video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="sections video_train, extract")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled): its manifests give the split")
    parser.add_argument("--raw", required=True, help="the raw dataset's folder (data/raw/synthetic)")
    parser.add_argument("--cnn", required=True, help="the pipeline CNN that embeds every frame (models/multires.pt)")
    parser.add_argument("--out", required=True, help="model file to write (models/video.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "video_train", video.VideoTrainParams)
    extract_cfg = config.load_section(args.params, "extract", ExtractParams)
    video.fit_video(cfg, extract_cfg, raw=args.raw, data=args.data, cnn=args.cnn, out=args.out,
                    report=args.report, live_dir=args.live)


if __name__ == "__main__":
    cli.run(main)
