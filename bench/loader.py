"""Loader throughput: the in-memory uint8 loader with on-device augmentation + degradation,
versus a plain torchvision ImageFolder + PIL transforms pipeline, on the same faces at 112 px.

Prints images/second for the loader alone and with a resnet18 training step. No assertions.
    python bench/loader.py [--n 2048] [--batch-size 128] [--device auto] [--workers 0]
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms

from mrfer import config
from mrfer.infer import pick_device
from mrfer.nets import build
from mrfer.train.base import PretrainBaseParams
from mrfer.train.loader import ArrayLoader
from mrfer.data.degrade import degrade_mixed
from mrfer.transforms import augment as augment_batch, normalize, random_scales, stats_tensors

SCALES = ["x2", "x3", "x4", "x6", "x8"]
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def faces(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return images, rng.integers(0, 7, n)


def step(model, optimizer, x, y) -> None:
    """One SGD step, the same for both pipelines; nothing when timing the loader alone."""
    if model is None:
        return
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def ours(images, labels, batch_size, device, model=None):
    augment = config.load_section(PARAMS, "pretrain_base", PretrainBaseParams).augment  # the default pipeline's
    loader = ArrayLoader(images, labels, batch_size, device)
    mean, std = stats_tensors([128.0] * 3, [64.0] * 3, device)
    gen = torch.Generator(device=device).manual_seed(0)
    scale_gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01) if model else None
    seen, start = 0, time.perf_counter()
    for xb, yb in loader:
        x = augment_batch(xb, augment, gen)
        x = normalize(degrade_mixed(x, random_scales(len(xb), SCALES, 0.5, scale_gen), "bicubic_aa"), mean, std)
        step(model, optimizer, x, yb)
        seen += len(xb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def plain(folder, batch_size, device, workers, model=None):
    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(), transforms.RandomAffine(4, translate=(0.04, 0.04), scale=(0.96, 1.04)),
        transforms.ColorJitter(0.1, 0.1), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.25] * 3)])
    dataset = torchvision.datasets.ImageFolder(folder, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01) if model else None
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        step(model, optimizer, x, y)
        seen += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--model-steps", type=int, default=512, help="images used for the resnet18 runs")
    args = parser.parse_args()
    device = pick_device(args.device)
    images, labels = faces(args.n, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = Path(tmp) / str(label)
            folder.mkdir(exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
        a, b = ours(images, labels, args.batch_size, device), plain(tmp, args.batch_size, device, args.workers)
        print(f"device {device}, {args.n} faces at {args.size} px, batch {args.batch_size}")
        print(f"loader only : mrfer in-memory + on-device aug/degrade {a:9.0f} img/s | "
              f"ImageFolder + PIL ({args.workers} workers) {b:7.0f} img/s | {a / b:5.1f}x")
        k = min(args.model_steps, args.n)
        model = build("resnet18", 7, 3, args.size).to(device)
        a = ours(images[:k], labels[:k], args.batch_size, device, model)
        subset = Path(tmp)
        b = plain(subset, args.batch_size, device, args.workers, model) if k == args.n else float("nan")
        print(f"resnet18 step: mrfer {a:9.0f} img/s" + (f" | ImageFolder + PIL {b:7.0f} img/s | {a / b:5.1f}x"
                                                       if k == args.n else " (plain pipeline: use --model-steps = --n)"))


if __name__ == "__main__":
    main()
