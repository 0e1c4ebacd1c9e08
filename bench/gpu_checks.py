"""The GPU-only paths, checked on a CUDA device (the test suite runs on CPUs): exits 1 on the
first failed check, so `bench/gpu.sh` reports it. Each check compares the CUDA path with the CPU
path the tests already cover.
    python bench/gpu_checks.py
"""
import argparse
import sys

import numpy as np
import torch

from mrfer.data.degrade import degrade, degrade_mixed
from mrfer.infer import autocast, infer, pick_device
from mrfer.nets import build, to_device
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import prepare, stats_tensors

from loader import faces


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        sys.exit(1)


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine")
    cuda = pick_device("auto")
    images, labels = faces(256, 64)
    # degradation on the device: the downsample stage's maths, float32 even under autocast
    for scale, kernel in (("x4", "bicubic_aa"), ("x3", "matlab"), ("16px", "bilinear")):
        x = torch.from_numpy(images[:32]).to(cuda).permute(0, 3, 1, 2).float()
        with autocast(cuda):
            out = degrade_mixed(x, [scale] * 32, kernel)
        ref = degrade(images[:32], scale, kernel).transpose(0, 3, 1, 2).astype(np.float32)
        diff = np.abs(out.round().cpu().numpy() - ref)
        check(f"degrade {scale} {kernel} on CUDA = numpy", out.dtype == torch.float32 and diff.max() <= 1,
              f"(max diff {diff.max():.0f})")
    # preprocessing without augmentation: CUDA = CPU
    m, s = stats_tensors([128.0] * 3, [64.0] * 3, "cpu")
    cpu = prepare(torch.from_numpy(images[:16]), m, s)
    m, s = stats_tensors([128.0] * 3, [64.0] * 3, cuda)
    gpu = prepare(torch.from_numpy(images[:16]).to(cuda), m, s).cpu()
    check("prepare on CUDA = CPU", torch.allclose(cpu, gpu, atol=1e-5))
    # the training array lives on the GPU when it fits
    loader = ArrayLoader(images, labels, 64, cuda, seed=0)
    xb, yb = next(iter(loader))
    check("ArrayLoader keeps the array on the GPU", loader.images.is_cuda and xb.is_cuda and yb.is_cuda)
    # inference under autocast agrees with float32
    model = to_device(build("resnet18", 7, 3, 64), cuda).eval()
    fp32 = infer(model, images, [128.0] * 3, [64.0] * 3, device=cuda).argmax(1)
    with torch.autocast("cuda", enabled=False):
        amp = infer(model, images, [128.0] * 3, [64.0] * 3, device=cuda).argmax(1)
    check("infer: autocast and float32 agree", (fp32 == amp).float().mean() >= 0.95,
          f"({(fp32 == amp).float().mean():.3f} of argmaxes)")
    print("all GPU checks passed")


if __name__ == "__main__":
    main()
