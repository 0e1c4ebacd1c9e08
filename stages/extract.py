"""extract: read a raw FER dataset (any registered reader), crop and align every face.

Reads the dataset named --dataset: its entry under `datasets` (reader, root, options; params.yaml
holds the root once, dvc.yaml names it as a dep through `${item.root}`), cropped as the `extract`
section says. Writes --out/{faces.npy,manifest.csv}, --report (counts per
class, every skipped input with its reason, and a count of repeated images) and --duplicates
(every repeated image with the one it repeats; a header alone when the dataset has none or its
reader does not look for them). `--export-folders DIR` instead writes the
already extracted faces in --out as DIR/<class>/*.png for people to look at.
"""
import argparse

from mrfer import cli, config
from mrfer.data import extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="section extract")
    parser.add_argument("--dataset", help="a name under `datasets` (reader, root, options); required unless "
                        "--export-folders")
    parser.add_argument("--out", required=True, help="folder to write faces.npy + manifest.csv (data/extracted/<name>)")
    parser.add_argument("--report", help="extract report JSON to write (reports/extract/<name>.json); required "
                        "unless --export-folders")
    parser.add_argument("--duplicates", help="CSV of repeated images to write "
                        "(reports/extract/<name>_duplicates.csv); required unless --export-folders")
    parser.add_argument("--export-folders", metavar="DIR", help="export --out as class folders and exit")
    args = parser.parse_args()
    if args.export_folders:
        extract.export_folders(args.out, args.export_folders)
        return
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--report", args.report),
                                        ("--duplicates", args.duplicates)) if not value]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    cfg = config.load_section(args.params, f"datasets.{args.dataset}", extract.ExtractParams)
    extract.extract(cfg, out_dir=args.out, report_path=args.report, duplicates_path=args.duplicates)


if __name__ == "__main__":
    cli.run(main)
