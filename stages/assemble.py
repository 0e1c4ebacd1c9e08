"""assemble: subject-independent train/val/test arrays, k folds, dataset mean/std.

Writes --out/<split>/{hr,x2,...}.npy + manifest.csv (train at hr only unless
assemble.train_scales), --out/stats.json (with downsample.kernel) and --report.
"""
import argparse

from mrfer import cli, config
from mrfer.data import assemble, extract, labels
from mrfer.data.scales import DownsampleParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="section assemble (+ the shared seed), downsample.scales and .kernel, extract.contempt")
    parser.add_argument("--dataset", required=True, help="the dataset's name under `datasets` (recorded in stats.json)")
    parser.add_argument("--extracted", required=True, help="extracted faces + manifest (data/extracted/<name>)")
    parser.add_argument("--downsampled", required=True, help="low-resolution arrays (data/downsampled/<name>)")
    parser.add_argument("--out", required=True, help="folder to write (data/assembled/<name>)")
    parser.add_argument("--report", required=True, help="assemble report JSON to write (reports/assemble/<name>.json)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "assemble", assemble.AssembleParams)
    low = config.load_section(args.params, "downsample", DownsampleParams)
    contempt = config.load_section(args.params, "extract", extract.CropParams).contempt
    classes = list(labels.class_names(contempt))
    assemble.assemble(cfg, args.dataset, classes, low.scales, low.kernel, args.extracted, args.downsampled, args.out, args.report)


if __name__ == "__main__":
    cli.run(main)
