"""`python -m mrfer COMMAND ...` (or `mrfer COMMAND ...` once installed): the user-facing commands.

Commands:
  predict   detect faces in images, a folder, a video or a camera and classify their expression
  export    write a model as ONNX (dynamic batch, preprocessing in its metadata), optionally checked
  check     validate every params.yaml section (and the cheap cross-section checks) before `dvc repro`
"""
from __future__ import annotations

import argparse

from mrfer import check, cli, export, predict


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict.add_arguments(commands.add_parser(
        "predict", help="detect faces and classify their expression with a trained model",
        description=predict.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    export.add_arguments(commands.add_parser(
        "export", help="write a model as ONNX and check it against torch with onnxruntime",
        description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    check.add_arguments(commands.add_parser(
        "check", help="validate every params section before any stage runs (make repro runs it first)",
        description=check.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cli.run(lambda: args.func(args))


if __name__ == "__main__":
    main()
