"""classify: every model x every scale -> the net's own head and sklearn classifiers on embeddings.

Writes the metrics JSON, a readable Markdown table, one accuracy-vs-resolution CSV per model
(plot data) and the test predictions + HR embeddings (for the plots stage).
"""
import argparse

from mrfer import cli, config
from mrfer.data.scales import DownsampleParams
from mrfer.eval import classify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="sections classify, downsample.scales, downsample.kernel")
    parser.add_argument("--data", required=True, help="assembled data (data/assembled/<train_on>)")
    parser.add_argument("--models", required=True, help="folder holding <model>.pt (and fsr.pt for +fsr)")
    parser.add_argument("--report", required=True, help="metrics JSON to write")
    parser.add_argument("--table", required=True, help="Markdown table to write")
    parser.add_argument("--curves", required=True, help="folder to write, one <model>.csv each")
    parser.add_argument("--predictions", required=True, help="test predictions and embeddings (.npz) to write")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "classify", classify.ClassifyParams)
    ds = config.load_section(args.params, "downsample", DownsampleParams)
    classify.classify(cfg, args.data, args.models, ds.scales, ds.kernel, args.report, args.table, args.curves,
                      args.predictions)


if __name__ == "__main__":
    cli.run(main)
