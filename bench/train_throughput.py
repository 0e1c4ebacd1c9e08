"""Training throughput of one epoch: the real classification loop (`mrfer.train.loop.fit`) with
on-device augmentation + multi-resolution degradation, AMP and channels_last, on random faces.

Prints images/second of the epoch (validation excluded) and peak GPU memory. No assertions.
    python bench/train_throughput.py --arch seresnet50 --size 224 --device cuda
    python bench/train_throughput.py --arch seresnet50 --size 224 --device cuda --stream   # from a memmap
With `--stream` the faces are saved as a `.npy` and fed by the memmap-streaming loader (reader
thread, pinned host memory; never the GPU-resident copy), as a split over the memory budget is.
"""
import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np

import torch

from mrfer import config
from mrfer.infer import pick_device
from mrfer.nets import build, to_device
from mrfer.train import loop, losses
from mrfer.train.base import PretrainBaseParams
from mrfer.train.distill import random_degrade
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import stats_tensors

from loader import PARAMS, SCALES, faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="seresnet50")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--n", type=int, default=4096, help="faces in the epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--stream", action="store_true", help="feed from a memory-mapped .npy, streamed")
    args = parser.parse_args()
    device = pick_device(args.device)
    cfg = config.load_section(PARAMS, "pretrain_base", PretrainBaseParams).model_copy(
        update={"amp": not args.no_amp, "batch_size": args.batch_size, "scheduler": "none",
                **({"memory_budget_gb": 1e-6} if args.stream else {})})
    images, labels = faces(args.n, args.size)
    if args.stream:
        scratch = tempfile.TemporaryDirectory()
        np.save(Path(scratch.name) / "train.npy", images)
        images = np.load(Path(scratch.name) / "train.npy", mmap_mode="r")
    model = to_device(build(args.arch, 7, 3, args.size), device, not args.no_channels_last)
    loader = ArrayLoader(images, labels, args.batch_size, device, seed=0,
                         on_device="never" if args.stream else cfg.on_device)
    mean, std = stats_tensors([128.0] * 3, [64.0] * 3, device)
    lowres = functools.partial(random_degrade, scales=SCALES, p=lambda epoch: 0.5,  # half the faces degraded
                               gen=torch.Generator().manual_seed(0), kernel="bicubic_aa")
    loss_fn = losses.ce_loss(mean, std, cfg.augment, torch.Generator(device=device).manual_seed(0), lowres=lowres)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    data = loop.Data((images, labels), (np.array(images[:args.batch_size]), labels[:args.batch_size]),
                     ([128.0] * 3, [64.0] * 3), 7)
    history = loop.fit(model, loader, data, cfg, loop.Run(0, f"{args.arch} {args.size}px"), epochs=1, lr=1e-3,
                       head_lr=1e-3, loss_fn=loss_fn)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    seen = len(loader) * args.batch_size
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    feed = "memmap-streamed" if loader.streaming else "GPU-resident" if loader.images.is_cuda else "pinned host"
    print(f"{args.arch} at {args.size} px on {device} (amp {cfg.amp}, channels_last {not args.no_channels_last}, "
          f"{feed} loader): "
          f"{seen / seconds:8.0f} img/s over {seen} faces (epoch incl. one small validation), "
          f"peak GPU memory {peak:.1f} GiB, train loss {history[-1]['train_loss']}")


if __name__ == "__main__":
    main()
