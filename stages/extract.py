"""extract: read a raw FER dataset (any registered reader), crop and align every face.

Writes data/extracted/{faces.npy,manifest.csv} and reports/extract.json (counts per class and
every skipped input with its reason). `--export-folders DIR` instead writes the extracted faces
as DIR/<class>/*.png for people to look at.
"""
import argparse

from mrfer import cli, params
from mrfer.data import extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/extracted")
    parser.add_argument("--report", default="reports/extract.json")
    parser.add_argument("--export-folders", metavar="DIR", help="export data/extracted as class folders and exit")
    args = parser.parse_args()
    if args.export_folders:
        extract.export_folders(args.out, args.export_folders)
        return
    cfg = params.section(args.params, "extract", allowed=extract.DEFAULTS)
    extract.extract(cfg, out_dir=args.out, report_path=args.report)


if __name__ == "__main__":
    cli.run(main)
