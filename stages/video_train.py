"""video-train: a clip classifier, per-frame CNN features -> GRU (`video_train.recipe`: vgg_gru, the
published VGG+GRU trained end to end, or mrfer_gru).

Reads the raw dataset named --dataset (its entry under `datasets`: reader, root, options; cropped as
the `extract` section says), every frame of each labelled sequence, splits the clips by the subjects of the assembled data's
manifests (--data), trains the recipe's GRU over windows of the backbone's frame features
(`video_train.cnn`: fer = --fer-model, face = --face-model) and compares it with the FER model's own
head voting over the same test clips. Writes the model file (--out), a metrics JSON (--report) and
dvclive curves (--live).
"""
import argparse
from pathlib import Path

from mrfer import cli, config
from mrfer.data.extract import ExtractParams
from mrfer.errors import ParamsError
from mrfer.train import video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="sections video_train, extract, datasets.<--dataset>")
    parser.add_argument("--dataset", required=True, help="the dataset of clips, a name under `datasets` (the one "
                        "the FER model trained on: ${train_on}); its sequences are read from its root")
    parser.add_argument("--raw", required=True, help="the folder holding every raw dataset (data/raw), DVC's dep: "
                        "the dataset's root must be inside it")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled/<train_on>): its manifests give the split")
    parser.add_argument("--fer-model", required=True,
                        help="the FER model (models/multires.pt): backbone with cnn: fer, and the frame-voting baseline")
    parser.add_argument("--face-model", required=True,
                        help="the face-recognition model (models/face.pt): backbone with cnn: face (read only then)")
    parser.add_argument("--out", required=True, help="model file to write (models/video.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "video_train", video.VideoTrainParams)
    extract_cfg = config.load_section(args.params, f"datasets.{args.dataset}", ExtractParams)
    if not Path(extract_cfg.root).resolve().is_relative_to(Path(args.raw).resolve()):
        raise ParamsError(f"{args.params}: datasets.{args.dataset}.root = {extract_cfg.root!r} is outside {args.raw}, "
                          f"which DVC tracks for video-train: put (or link) the dataset under {args.raw}")
    video.fit_video(cfg, extract_cfg, raw=extract_cfg.root, data=args.data, fer_model=args.fer_model,
                    face_model=args.face_model, out=args.out,
                    report=args.report, live_dir=args.live)


if __name__ == "__main__":
    cli.run(main)
