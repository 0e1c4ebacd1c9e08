"""extract-identities: crop the face-recognition set (MAFER's identity data) at the FER data's size.

Reads the dataset at `extract_identities.root` (VGGFace2 or CASIA-WebFace layout; the synthetic
default is written by `synthesize`) and writes --out/{train,val}/{hr.npy,manifest.csv} + stats.json,
and --report (counts, every skipped image with its reason).
"""
import argparse

from mrfer import cli, config
from mrfer.data import extract, identities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="section extract_identities, extract.size/color/detector")
    parser.add_argument("--out", required=True, help="folder to write (data/identities)")
    parser.add_argument("--report", required=True, help="report JSON to write (reports/extract_identities.json)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "extract_identities", identities.ExtractIdentitiesParams)
    fer = config.load_section(args.params, "extract", extract.CropParams)
    identities.extract_identities(cfg, fer.size, fer.color, fer.detector, args.out, args.report)


if __name__ == "__main__":
    cli.run(main)
