"""downsample: low-resolution copies of the extracted faces, one array per scale."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm import tqdm

from mrfer.data.degrade import degrade
from mrfer.data.scales import DownsampleParams, low_size
from mrfer.data.shards import load_array
from mrfer.io import atomic_path

log = logging.getLogger(__name__)



def downsample(cfg: DownsampleParams, faces_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, tuple]:
    """Write `out_dir/<scale>.npy` for every scale; returns the low-res size of each."""
    faces = load_array(faces_path)
    n, h, w, c = faces.shape
    chunk = cfg.chunk
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for scale in cfg.scales:
            out = open_memmap(tmp / f"{scale}.npy", mode="w+", dtype=np.uint8, shape=faces.shape)
            for start in tqdm(range(0, n, chunk), desc=f"downsample {scale}", unit="chunk", mininterval=2):
                out[start:start + chunk] = degrade(np.asarray(faces[start:start + chunk]), scale, cfg.kernel)
            out.flush()
            del out
    log.info("wrote %d scales of %d faces to %s", len(cfg.scales), n, Path(out_dir))
    return {s: low_size(h, w, s, cfg.kernel) for s in cfg.scales}
