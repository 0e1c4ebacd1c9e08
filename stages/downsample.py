"""downsample: low-resolution copies of the extracted faces at every scale (down, then back up)."""
import argparse

from mrfer import cli, params
from mrfer.data import downsample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--faces", default="data/extracted/faces.npy")
    parser.add_argument("--out", default="data/downsampled")
    args = parser.parse_args()
    cfg = params.section(args.params, "downsample", allowed=downsample.DEFAULTS)
    downsample.downsample(cfg, faces_path=args.faces, out_dir=args.out)


if __name__ == "__main__":
    cli.run(main)
