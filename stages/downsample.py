"""downsample: low-resolution copies of the extracted faces at every scale (down, then back up)."""
import argparse

from mrfer import cli, config
from mrfer.data import downsample
from mrfer.data.scales import DownsampleParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="section downsample")
    parser.add_argument("--faces", required=True, help="extracted faces (data/extracted/faces.npy)")
    parser.add_argument("--out", required=True, help="folder to write, one <scale>.npy per scale")
    args = parser.parse_args()
    cfg = config.load_section(args.params, "downsample", DownsampleParams)
    downsample.downsample(cfg, faces_path=args.faces, out_dir=args.out)


if __name__ == "__main__":
    cli.run(main)
