"""The TF checkpoint fixture: tests/fixtures/covpoolfer_tf/, written by
tests/fixtures/make_covpoolfer_tf_fixture.py under TensorFlow (not run by the tests): a tiny
CovPoolFER net under the released model2's variable names."""
from __future__ import annotations

import shutil
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "covpoolfer_tf"
PREFIX = FIXTURE / "model-fixture.ckpt-7"
# The fixture's geometry (make_covpoolfer_tf_fixture.py): convs 8, 12, 16, 16, 32, 16; BiMap 16 -> 8.
OPTIONS = {"variant": "published", "width": 0.125, "cov_channels": 16, "bimap_dim": 8, "hidden_dim": 32,
           "embed_dim": 16}
SHARD = ".data-00000-of-00001"


def copy_checkpoint(folder: Path, prefix: Path = PREFIX) -> Path:
    """The checkpoint's two files copied into `folder`; returns the copy's prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".index", SHARD):
        shutil.copy(f"{prefix}{suffix}", folder / f"{prefix.name}{suffix}")
    return folder / prefix.name
