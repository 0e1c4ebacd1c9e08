"""synthesize: write the embedded synthetic face dataset in CK+'s on-disk layout.

Subjects with neutral -> apex expression sequences, Emotion files for part of them and 68-point
landmarks for every frame, so `dvc repro` runs end to end with no download.
"""
import argparse
import logging

from mrfer import cli, params
from mrfer.data import synthetic
from mrfer.io import write_json

log = logging.getLogger("synthesize")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file with a `synthesize` section")
    parser.add_argument("--out", default="data/raw/synthetic", help="dataset root to (re)write")
    parser.add_argument("--report", default="reports/synthesize.json", help="summary JSON")
    args = parser.parse_args()

    cfg = params.section(args.params, "synthesize", allowed=synthetic.DEFAULTS)
    summary = synthetic.synthesize(cfg, args.out, progress=True)
    write_json(args.report, summary)
    log.info("summary written to %s", args.report)


if __name__ == "__main__":
    cli.run(main)
