"""Test-wide settings: one torch thread per test process (pytest-xdist runs one process per
core; more threads than cores only spin against each other), and a quiet matplotlib."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
