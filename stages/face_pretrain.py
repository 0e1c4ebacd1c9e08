"""face-pretrain: MAFER's base network, a face-recognition model trained on identity labels.

Trains on --data (data/identities, from extract-identities) or, with `face_pretrain.init:
imported` and `epochs: 0`, takes an imported VGGFace2 model as it is. Writes the model file
(identity classes), a report and dvclive curves.
"""
import argparse

from mrfer import cli, config
from mrfer.train import face


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="section face_pretrain")
    parser.add_argument("--data", required=True, help="identity faces (data/identities)")
    parser.add_argument("--out", required=True, help="model file to write (models/face.pt)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory for the training curves")
    parser.add_argument("--resume", required=True, help="per-epoch resume checkpoint (deleted when done)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "face_pretrain", face.FacePretrainParams)
    face.fit_face(cfg, data=args.data, out=args.out, report=args.report, live_dir=args.live, resume=args.resume)


if __name__ == "__main__":
    cli.run(main)
