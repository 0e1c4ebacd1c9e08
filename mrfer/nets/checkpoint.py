"""Model files (weights + metadata, rebuilt by name from the registry) and resume checkpoints.

Everything is saved as tensors and plain containers, so `torch.load(weights_only=True)` reads
it back: no pickled code is ever executed when a checkpoint is loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import re
from pathlib import Path

import numpy as np
import torch

import mrfer
from mrfer.errors import InputError, MissingInputError, UnsafeFileError
from mrfer.io import atomic_path
from mrfer.nets.fernet import to_device
from mrfer.nets.registry import build


def params_hash(*parts) -> str:
    """Stable hash of the params (and data identity) that shape a model."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    import sklearn
    import timm
    import torchvision
    return {"mrfer": mrfer.__version__, "python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "timm": str(timm.__version__), "numpy": str(np.__version__),
            "scikit-learn": str(sklearn.__version__),
            # CPU float results depend on the thread count (reduction order), so it is recorded too
            "torch_threads": str(torch.get_num_threads())}


def save(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` to a temp file and rename it over `path`: a full disk is one `NoSpaceError`
    naming `path`, with the temp file removed and any earlier `path` intact."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:   # a Python file: a full disk raises ENOSPC (torch's own file writer
            torch.save(payload, f)   # reports it as "enforce fail at inline_container.cc")


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's advice (weights_only=False) is the one thing not to do
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise UnsafeFileError(path, found.group(1)) from None
        cause = re.search(r"Unpickler error:\s*([^\n]{1,80})", str(e))   # e.g. "Unsupported operand 8"
        kind = "an ONNX model, not" if path.suffix.lower() == ".onnx" else "not"
        raise InputError(f"{path}: {kind} a torch checkpoint" + (f" ({cause.group(1)})" if cause else "")) from None
    except Exception as e:  # zip errors: name the file, not the unpickler's internals
        raise InputError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__}: {e})") from None


def save_model(path: str | os.PathLike, model: torch.nn.Module, meta: dict) -> None:
    """`{"state_dict", "meta"}`; meta: arch, options, classes, size, channels, mean, std, hash, versions."""
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    save(path, {"state_dict": state, "meta": {**meta, "versions": versions()}})


def load_model(path: str | os.PathLike, device="cpu", channels_last: bool = True) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from its metadata and load its weights. Clear error on a mismatch."""
    payload = load(path)
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise InputError(f"{path}: not an mrfer model file (expected keys state_dict and meta)")
    meta = payload["meta"]
    model = build(meta["arch"], num_classes=len(meta["classes"]), in_chans=meta["channels"],
                  image_size=meta["size"], **meta.get("options", {}))
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise InputError(f"{path}: weights do not fit architecture {meta['arch']!r}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.test_view = meta.get("test_view")   # how the fine-tune tested it (mrfer.infer applies it)
    return to_device(model, device, channels_last).eval(), meta


def load_backbone(path: str | os.PathLike, num_classes: int, device="cpu",
                  channels_last: bool = True) -> tuple[torch.nn.Module, dict]:
    """Transfer: the model in `path` with a fresh `num_classes` head (its own head dropped), e.g. a
    face-recognition model (identity classes) started on expressions, or FER2013's model on JAFFE."""
    payload = load(path)
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise InputError(f"{path}: not an mrfer model file (expected keys state_dict and meta)")
    meta = payload["meta"]
    model = build(meta["arch"], num_classes=num_classes, in_chans=meta["channels"], image_size=meta["size"],
                  **meta.get("options", {}))
    body = {k: v for k, v in payload["state_dict"].items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise InputError(f"{path}: weights do not fit architecture {meta['arch']!r}: "
                         f"missing {[k for k in missing if not k.startswith('head.')][:5]}, unexpected {unexpected[:5]}")
    return to_device(model, device, channels_last), meta


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP / feature wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model
