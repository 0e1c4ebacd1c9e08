"""downsample: low-resolution copies of the extracted faces, one array per scale."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mrfer.data.degrade import degrade
from mrfer.data.scales import DownsampleParams, low_size, too_small
from mrfer.data.shards import load_array
from mrfer.errors import ParamsError
from mrfer.io import atomic_path, create_npy, require_space

log = logging.getLogger(__name__)



def downsample(cfg: DownsampleParams, faces_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, tuple]:
    """Write `out_dir/<scale>.npy` for every scale; returns the low-res size of each."""
    faces = load_array(faces_path)
    n, h, w, c = faces.shape
    chunk = cfg.chunk
    for scale in cfg.scales:
        problem = too_small(h, w, scale, cfg.kernel)
        if problem:
            raise ParamsError(f"downsample.scales: {problem} ({faces_path}); drop it or use a smaller factor")
    # every scale's array, reserved before any is written: a full disk is one line, not a SIGBUS
    require_space(out_dir, len(cfg.scales) * (faces.nbytes + 4096))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for scale in cfg.scales:
            out = create_npy(tmp / f"{scale}.npy", faces.shape)
            for start in tqdm(range(0, n, chunk), desc=f"downsample {scale}", unit="chunk", mininterval=2):
                out[start:start + chunk] = degrade(np.asarray(faces[start:start + chunk]), scale, cfg.kernel)
            out.flush()
            del out
    log.info("wrote %d scales of %d faces to %s", len(cfg.scales), n, Path(out_dir))
    return {s: low_size(h, w, s, cfg.kernel) for s in cfg.scales}
