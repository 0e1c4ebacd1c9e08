"""In-memory loader: the uint8 array is read once; each batch is one index + one device copy.

On CUDA the whole array lives on the GPU when it fits (no host->device copy per step at all),
otherwise in pinned host memory. Under DDP every rank draws the same permutation and takes
its own slice, so the ranks see disjoint samples.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


class ArrayLoader:
    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1, on_device: str = "auto"):
        self.images = torch.from_numpy(np.ascontiguousarray(images))  # one read of the (mmap) array
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.batch_size, self.device, self.shuffle, self.drop_last = batch_size, device, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if on_device == "always" or (on_device == "auto" and self.images.nbytes < 0.3 * free):
                self.images, self.labels = self.images.to(device), self.labels.to(device)
                log.info("training array on the GPU (%.1f MB)", self.images.nbytes / 1e6)
            else:
                self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()

    def __len__(self) -> int:
        n = len(self.images) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[self.rank::self.world_size]
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            index = order[start:start + self.batch_size].to(self.images.device)
            yield (self.images[index].to(self.device, non_blocking=True),
                   self.labels[index].to(self.device, non_blocking=True))
