"""synthesize: write the embedded synthetic face dataset in CK+'s on-disk layout.

Subjects with neutral -> apex expression sequences, Emotion files for part of them and 68-point
landmarks for every frame, so `dvc repro` runs end to end with no download. Written as CK+'s
zips (extended-cohn-kanade-images.zip, Emotion_labels.zip, Landmarks.zip) or, with
`synthesize.layout: folders`, as the folders they extract to; the ckplus reader reads both.

--identities gets a face-recognition set of other people in VGGFace2's layout (train/<id>/*.jpg +
bb_landmark CSVs), for MAFER's face-recognition and cross-resolution steps; --fer-csv a second FER
set of yet other people in FER2013's CSV layout, for the cross-dataset evaluation.
"""
import argparse
import logging

from mrfer import cli, config
from mrfer.data import synthetic, synthetic_fer, synthetic_identities
from mrfer.io import atomic_path, write_json

log = logging.getLogger("synthesize")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="section synthesize (+ the shared seed)")
    parser.add_argument("--out", required=True, help="dataset folder to (re)write (data/raw/synthetic): the zips or folders")
    parser.add_argument("--identities", required=True, help="face-recognition set to (re)write (data/raw/identities)")
    parser.add_argument("--fer-csv", required=True, help="second FER set to (re)write, FER2013's CSV layout "
                        "(data/raw/synthetic_fer)")
    parser.add_argument("--report", required=True, help="summary JSON to write (reports/synthesize.json)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "synthesize", synthetic.SynthesizeParams)
    summary = synthetic.synthesize(cfg, args.out, progress=True)
    with atomic_path(args.identities) as tmp:
        summary["identities"] = synthetic_identities.write_identities(tmp, cfg.identities, cfg.seed, cfg.difficulty)
    log.info("identity set: %(identities)d identities, %(images)d images", summary["identities"])
    summary["fer_csv"] = synthetic_fer.write_fer_csv(args.fer_csv, cfg.fer_csv, cfg.seed)
    log.info("FER2013-layout set: %(subjects)d people, %(images)d images", summary["fer_csv"])
    write_json(args.report, summary)
    log.info("summary written to %s", args.report)


if __name__ == "__main__":
    cli.run(main)
