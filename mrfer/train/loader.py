"""Training batches of a uint8 NHWC array: held in memory, or streamed from its memory map.

In memory (the default, and whenever the split fits `memory_budget_gb`): the array is read once;
each batch is one index + one device copy. On CUDA the whole array lives on the GPU when it fits
(no host->device copy per step at all; a memory map is copied there a window at a time),
otherwise in pinned host memory.

Streaming (a memory-mapped split, `shards.open_xy`, larger than `memory_budget_gb`): a background
thread reads the rows of the next window from the `.npy` memory map in file order (sequential
reads), puts them in visit order into (pinned, on CUDA) host memory, two windows ahead of the
loop, which copies each batch to the device. Augmentation and degradation stay on the device.

Both paths visit the rows in the same order (`epoch_order`), so for a given seed streamed and
in-memory training give identical weights (tests/test_loader.py): a block shuffle, in which the
rows are cut into contiguous blocks, the blocks shuffled, and the rows of each window of
WINDOW_BLOCKS consecutive (shuffled) blocks shuffled together. A split that fits one window
(WINDOW_BYTES, 64 MiB: every split the default pipeline trains on) gets a plain `torch.randperm`, as
before streaming existed. Under DDP every rank draws the same order and takes its own slice, so
the ranks see disjoint samples.
"""
from __future__ import annotations

import logging
import mmap
import queue
import threading

import numpy as np
import torch

log = logging.getLogger(__name__)

WINDOW_BYTES = 64 * 2**20   # rows shuffled together; also what the streaming worker reads at once
WINDOW_BLOCKS = 64          # contiguous blocks per window: sequential reads, rows from 64 places in the file
PREFETCH_WINDOWS = 2        # windows the worker reads ahead of the training loop


def epoch_order(n: int, generator: torch.Generator, window_rows: int) -> torch.Tensor:
    """One epoch's row order: `torch.randperm(n)` when the rows fit one window, else a block shuffle."""
    if n <= window_rows:
        return torch.randperm(n, generator=generator)
    block = max(1, window_rows // WINDOW_BLOCKS)
    starts = torch.randperm(-(-n // block), generator=generator) * block
    windows = []
    for w in range(0, len(starts), WINDOW_BLOCKS):
        rows = torch.cat([torch.arange(s, min(s + block, n)) for s in starts[w:w + WINDOW_BLOCKS].tolist()])
        windows.append(rows[torch.randperm(len(rows), generator=generator)])
    return torch.cat(windows)


def read_rows(images: np.ndarray, index: torch.Tensor) -> torch.Tensor:
    """images[index] read in file order, returned in `index` order. From a memory map's file the
    contiguous runs of rows are read with plain reads: unlike touching the map, that leaves no
    file pages resident in this process, so streaming memory stays at the windows in flight."""
    wanted = index.numpy()
    ascending = np.sort(wanted)
    if isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap):  # the whole file's map, not a view
        rows = np.empty((len(ascending), *images.shape[1:]), dtype=images.dtype)
        row_bytes = rows[0].nbytes if len(rows) else 0
        runs = np.split(np.arange(len(ascending)), np.flatnonzero(np.diff(ascending) != 1) + 1)
        with open(images.filename, "rb", buffering=0) as f:
            for run in runs:
                if len(run):
                    f.seek(images.offset + int(ascending[run[0]]) * row_bytes)
                    f.readinto(memoryview(rows[run[0]:run[-1] + 1]).cast("B"))
    else:
        rows = np.asarray(images[ascending])
    return torch.from_numpy(rows[np.searchsorted(ascending, wanted)])


class ArrayLoader:
    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1, on_device: str = "auto",
                 memory_budget_gb: float | None = None, window_bytes: int = WINDOW_BYTES):
        self.images = images  # read (or not, when streaming) at the first epoch: see `prepare`
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.batch_size, self.device, self.shuffle, self.drop_last = batch_size, device, shuffle, drop_last
        self.rank, self.world_size, self.on_device = rank, world_size, on_device
        self.memory_budget_gb = memory_budget_gb
        self.window_rows = max(1, window_bytes // max(1, int(np.prod(images.shape[1:]))))
        self.generator = torch.Generator().manual_seed(seed)
        self.streaming: bool | None = None  # decided once, by `prepare`

    def set_memory_budget(self, memory_budget_gb: float) -> None:
        """The training section's budget (`loop.fit` passes it), unless the array is already placed."""
        if self.streaming is None:
            self.memory_budget_gb = memory_budget_gb

    def prepare(self) -> None:
        """Place the array once: on the GPU when it fits, else streamed when it is a memory map
        over the budget, else in (pinned, on CUDA) host memory."""
        if self.streaming is not None:
            return
        nbytes = self.images.nbytes
        over_budget = (isinstance(self.images, np.memmap) and self.memory_budget_gb is not None
                       and nbytes > self.memory_budget_gb * 2**30)
        self.streaming = False
        if self.device.type == "cuda" and self.on_device != "never":
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.on_device == "always" or nbytes < 0.3 * free:
                self.images, self.labels = self.copy_to_device(), self.labels.to(self.device)
                log.info("training array on the GPU (%.1f MB)", nbytes / 1e6)
                return
        if over_budget:
            self.streaming = True
            log.info("training array %.2f GB > memory budget %.2f GB: streamed from its memory map, %d rows "
                     "a window", nbytes / 2**30, self.memory_budget_gb, self.window_rows)
            return
        self.images = torch.from_numpy(np.array(self.images) if isinstance(self.images, np.memmap)
                                       else np.ascontiguousarray(self.images))
        if self.device.type == "cuda":
            self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()

    def copy_to_device(self) -> torch.Tensor:
        """The array on the device, copied a window at a time (a memory map is never read whole into RAM)."""
        out = torch.empty(self.images.shape, dtype=torch.uint8, device=self.device)
        for start in range(0, len(self.images), self.window_rows):
            part = np.ascontiguousarray(self.images[start:start + self.window_rows])
            out[start:start + len(part)] = torch.from_numpy(part).to(self.device)
        return out

    def __len__(self) -> int:
        n = len(self.images) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        self.prepare()
        n = len(self.images)
        order = epoch_order(n, self.generator, self.window_rows) if self.shuffle else torch.arange(n)
        order = order[self.rank::self.world_size]
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        order = order[:stop]
        if self.streaming:
            yield from self.stream(order)
            return
        for start in range(0, stop, self.batch_size):
            index = order[start:start + self.batch_size].to(self.images.device)
            yield (self.images[index].to(self.device, non_blocking=True),
                   self.labels[index].to(self.device, non_blocking=True))

    def stream(self, order: torch.Tensor):
        """The batches of `order`, read from the memory map by a worker thread a window ahead."""
        chunk = self.batch_size * max(1, self.window_rows // self.batch_size)  # whole batches per read
        chunks = [order[i:i + chunk] for i in range(0, len(order), chunk)]
        ready: queue.Queue = queue.Queue(maxsize=PREFETCH_WINDOWS)
        stop = threading.Event()

        def worker():
            for index in chunks:
                try:
                    images = read_rows(self.images, index)
                    item = (images.pin_memory() if self.device.type == "cuda" else images, self.labels[index])
                except BaseException as e:  # handed to the loop, which raises it
                    item = e
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set() or isinstance(item, BaseException):
                    return

        thread = threading.Thread(target=worker, name="memmap-reader", daemon=True)
        thread.start()
        try:
            for _ in chunks:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                images, labels = item
                for start in range(0, len(images), self.batch_size):
                    yield (images[start:start + self.batch_size].to(self.device, non_blocking=True),
                           labels[start:start + self.batch_size].to(self.device, non_blocking=True))
        finally:  # an epoch cut short (early stop, an error): let the worker finish, then join it
            stop.set()
            thread.join()
