"""export: every trained model listed in `export.models` -> ONNX, checked against torch.

Reads --models/<name>.pt for each name and the test split of --data; writes --out/<name>.onnx
(dynamic batch; input size, colour, mean/std and classes in the ONNX metadata) and --report:
per model the max |onnxruntime - torch| logit on the test split and both accuracies. A copy off
by more than `export.tolerance`, or with another accuracy, fails the stage and writes nothing.
"""
import argparse

from mrfer import cli, config, export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="section export")
    parser.add_argument("--models", required=True, help="folder holding <name>.pt (models)")
    parser.add_argument("--data", required=True,
                        help="assembled data whose test split checks the copies (data/assembled/<train_on>)")
    parser.add_argument("--out", required=True, help="folder to write, one <name>.onnx each (models/onnx)")
    parser.add_argument("--report", required=True, help="check report JSON to write (reports/export.json)")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "export", export.ExportParams)
    export.export_all(cfg, args.models, args.data, args.out, args.report)


if __name__ == "__main__":
    cli.run(main)
