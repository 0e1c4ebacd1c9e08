"""The memmap-streaming loader: block-shuffled order, and training identical to the in-memory path."""
import functools

import numpy as np
import torch

from mrfer.nets.registry import build
from mrfer.train import loader as loader_module
from mrfer.train import losses, loop
from mrfer.train.distill import random_degrade
from mrfer.train.loader import ArrayLoader, epoch_order, read_rows
from mrfer.transforms import Augment, stats_tensors
from params_fixture import section

ROW_BYTES = 32 * 32  # 32x32 grey faces
WINDOW = 24 * ROW_BYTES  # 24 rows a window: 150 rows take seven windows, blocks of one row...
WINDOW_BLOCKS = 4        # ...six rows a block, with four blocks a window (set below)


def faces(tmp_path, n=150, seed=0):
    """A `.npy` split on disk (memory-mapped like `shards.open_xy`) and its labels, with a class signal."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 60, (n, 32, 32, 1)).astype(np.uint8)
    for k in range(3):
        images[labels == k, 10 * k:10 * k + 10] += 150
    np.save(tmp_path / "hr.npy", images)
    return np.load(tmp_path / "hr.npy", mmap_mode="r"), labels


def loop_cfg(**overrides) -> loop.LoopParams:
    return section("loop", loop.TrainParams, **overrides)


def test_block_order_is_a_permutation_of_contiguous_blocks(monkeypatch):
    monkeypatch.setattr(loader_module, "WINDOW_BLOCKS", WINDOW_BLOCKS)
    small = epoch_order(20, torch.Generator().manual_seed(1), window_rows=24)
    assert torch.equal(small, torch.randperm(20, generator=torch.Generator().manual_seed(1)))  # as before
    order = epoch_order(150, torch.Generator().manual_seed(1), window_rows=24)
    assert sorted(order.tolist()) == list(range(150))
    assert not torch.equal(order, torch.arange(150))
    for start in range(0, 150, 24):  # each window holds whole blocks of six consecutive rows
        window = order[start:start + 24]
        assert set(window.tolist()) == set(sum(([b, *range(b + 1, b + 6)] for b in
                                                 sorted({int(r) // 6 * 6 for r in window})), []))


def test_streaming_batches_equal_the_in_memory_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(loader_module, "WINDOW_BLOCKS", WINDOW_BLOCKS)
    mm, labels = faces(tmp_path)
    cpu = torch.device("cpu")
    memory = ArrayLoader(np.array(mm), labels, 16, cpu, seed=3, window_bytes=WINDOW, memory_budget_gb=1e-6)
    stream = ArrayLoader(mm, labels, 16, cpu, seed=3, window_bytes=WINDOW, memory_budget_gb=1e-6)
    for _ in range(2):  # two epochs: the generator advances alike
        a, b = list(memory), list(stream)
        assert len(a) == len(b) == len(memory) == 9
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert stream.streaming and not memory.streaming  # an in-memory array is never streamed
    big_budget = ArrayLoader(mm, labels, 16, cpu, seed=3, window_bytes=WINDOW, memory_budget_gb=1.0)
    next(iter(big_budget))
    assert not big_budget.streaming and isinstance(big_budget.images, torch.Tensor)  # fits: read into memory


def test_streamed_training_equals_in_memory_training(tmp_path, monkeypatch):
    """Same seed: the same weights and history, with augmentation and degradation on the device."""
    monkeypatch.setattr(loader_module, "WINDOW_BLOCKS", WINDOW_BLOCKS)
    mm, labels = faces(tmp_path)
    augment = Augment(flip=True, rotate=4.0, scale=0.04, translate=0.04, brightness=0.1, contrast=0.1, p=1.0, fill="border",
                      interpolation="bilinear", pipeline="mrfer", crop=None, gray=None, cutout=None,
                      elastic=None)
    runs = []
    for images, budget in ((np.array(mm), 64.0), (mm, 1e-6)):  # in memory | streamed (tiny budget)
        torch.manual_seed(0)
        model = build("baseline_cnn", num_classes=3, in_chans=1, image_size=32, width=0.125)
        cpu = torch.device("cpu")
        data = ArrayLoader(images, labels, 16, cpu, seed=0, window_bytes=WINDOW)
        gen, scale_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        lowres = functools.partial(random_degrade, scales=["x2"], p=lambda epoch: 0.5, gen=scale_gen,
                                   kernel="bicubic_aa")
        loss_fn = losses.ce_loss(*stats_tensors([60.0], [50.0], cpu), augment, gen, lowres=lowres)
        rows = loop.Data((images, labels), (np.array(mm[:20]), labels[:20]), ([60.0], [50.0]), 3)
        history = loop.fit(model, data, rows, loop_cfg(memory_budget_gb=budget), loop.Run(0, "train"),
                           epochs=2, lr=3e-3, head_lr=3e-3, loss_fn=loss_fn,
                           generators={"augment": gen, "scales": scale_gen})
        runs.append((data.streaming, history, model.state_dict()))
    (memory_streamed, memory_history, memory_state), (streamed, stream_history, stream_state) = runs
    assert streamed and not memory_streamed
    assert stream_history == memory_history
    assert all(torch.equal(memory_state[k], stream_state[k]) for k in memory_state)
    assert memory_history[-1]["train_loss"] < memory_history[0]["train_loss"] * 1.5  # it trained, not NaN


def test_read_rows_reads_the_file_in_runs_and_views_through_the_map(tmp_path):
    mm, _ = faces(tmp_path)
    index = torch.tensor([5, 3, 4, 100, 6, 0, 149])
    assert np.array_equal(read_rows(mm, index).numpy(), np.array(mm)[index.numpy()])
    view = mm[10:]  # a view: its rows start elsewhere in the file
    assert np.array_equal(read_rows(view, index[:-1]).numpy(), np.array(view)[index[:-1].numpy()])
