"""ONNX export of an mrfer model, checked against torch with onnxruntime (`mrfer export`, the
`export` stage), and the onnxruntime classifier `mrfer predict --model X.onnx` runs.

The ONNX graph is the network alone: input `input` float32 NCHW of any batch size, output
`logits`. The preprocessing is recorded in the file's metadata_props (JSON values, keys
`mrfer.*`): `size`, `channels`, `color` (gray | rgb, channel order of the input), `mean` and
`std` (per channel, in 0..255 pixel units: input = (pixel - mean) / std; std null = centre only),
`classes` (logit order), `input` (that rule in words), and the source model's arch, stage and hash.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from mrfer.config import Section
from mrfer.data import shards
from mrfer.errors import InputError, MissingInputError, MrferError
from mrfer.infer import infer
from mrfer.io import atomic_path, write_json
from mrfer.metrics import summarize
from mrfer.nets import checkpoint

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"
PREFIX = "mrfer."
ONNXRUNTIME_PACKAGE = "onnxruntime==1.32.0"
INPUT_RULE = "float32 NCHW, (pixel - mean) / std per channel, pixel in 0..255; batch size free"


class ExportParams(Section):
    """`export`: which trained models become ONNX files, and how the copy is checked."""

    models: list[str] = Field(min_length=1, description="model names: models/<name>.pt -> <out>/<name>.onnx")
    opset: int = Field(ge=13, le=21, description="ONNX opset of the exported graph")
    tolerance: float = Field(gt=0, description="largest |onnxruntime - torch| logit allowed on the test split")
    batch_size: int = Field(gt=0, description="faces per forward pass in the check")


class ExportCheckError(MrferError, ValueError):
    """The exported model does not compute what the torch model computes."""


def onnx_metadata(meta: dict, source: str | os.PathLike) -> dict[str, str]:
    """The preprocessing (and provenance) a user of the ONNX file needs, as metadata_props."""
    values = {"size": meta["size"], "channels": meta["channels"],
              "color": "gray" if meta["channels"] == 1 else "rgb", "mean": meta["mean"], "std": meta.get("std"),
              "classes": list(meta["classes"]), "input": INPUT_RULE, "arch": meta.get("arch"),
              "stage": meta.get("stage"), "params_hash": meta.get("params_hash"), "source": Path(source).name}
    return {PREFIX + k: json.dumps(v) for k, v in values.items()}


def export_onnx(pt_path: str | os.PathLike, onnx_path: str | os.PathLike, opset: int) -> dict:
    """Write `pt_path`'s network as ONNX (dynamic batch) with its preprocessing in the metadata."""
    import onnx

    model, meta = checkpoint.load_model(pt_path, "cpu", channels_last=False)
    dummy = torch.zeros(2, meta["channels"], meta["size"], meta["size"])
    graph = io.BytesIO()
    with warnings.catch_warnings():
        # onnxscript (the new exporter's dependency) is not pinned: the TorchScript exporter it is
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), graph, dynamo=False, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=opset)
    proto = onnx.load_model_from_string(graph.getvalue())
    for key, value in onnx_metadata(meta, pt_path).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    # one plain write to a temp file, renamed into place: a full disk is one NoSpaceError naming
    # onnx_path (ENOSPC), the temp file removed and any earlier file intact
    with atomic_path(onnx_path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    log.info("exported %s -> %s (opset %d)", pt_path, onnx_path, opset)
    return meta


def load_onnx(path: str | os.PathLike):
    """(onnxruntime CPU session, metadata dict) of an mrfer ONNX file, or one clear error."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: ONNX model not found")
    try:
        import onnxruntime
    except ImportError:
        raise MrferError(f"{path}: running ONNX models needs onnxruntime: pip install {ONNXRUNTIME_PACKAGE}") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InputError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    props = session.get_modelmeta().custom_metadata_map
    meta = {}
    for key, value in props.items():
        if key.startswith(PREFIX):
            try:
                meta[key[len(PREFIX):]] = json.loads(value)
            except ValueError:
                raise InputError(f"{path}: metadata {key} = {value[:60]!r} is not JSON (re-export the model "
                                 "with `mrfer export`)") from None
    missing = [k for k in ("classes", "size", "channels", "mean", "std") if k not in meta]
    if missing:
        raise InputError(f"{path}: not an mrfer ONNX export (metadata lacks {', '.join(missing)}; "
                         f"export it with `mrfer export`)")
    problem = check_metadata(meta, session)
    if problem:
        key, value, expected = problem
        raise InputError(f"{path}: metadata {PREFIX}{key} = {json.dumps(value)[:80]}: expected {expected} "
                         "(re-export the model with `mrfer export`)")
    return session, meta


def check_metadata(meta: dict, session) -> tuple[str, object, str] | None:
    """(key, value, what was expected) of the first metadata value that cannot drive the graph
    (preprocessing that is not numbers, classes that do not match its logits), or None."""
    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def number(v):
        return (integer(v) or isinstance(v, float)) and math.isfinite(v)

    def fits(dim, value):   # a named or unknown graph dimension takes any value
        return not integer(dim) or dim == value

    shape_in = session.get_inputs()[0].shape       # [batch, channels, size, size]
    shape_out = session.get_outputs()[0].shape     # [batch, logits]
    size, channels, classes = meta["size"], meta["channels"], meta["classes"]
    if len(shape_in) != 4 or len(shape_out) != 2:
        return "size", size, f"a graph of input NCHW and output N x classes, not {shape_in} -> {shape_out}"
    if not (integer(size) and size > 0 and fits(shape_in[2], size) and fits(shape_in[3], size)):
        return "size", size, f"the side of the graph's input {shape_in}"
    if not (integer(channels) and channels in (1, 3) and fits(shape_in[1], channels)):
        return "channels", channels, f"1 or 3, the channels of the graph's input {shape_in}"
    for key in ("mean", "std"):
        value = meta[key]
        if not (key == "std" and value is None or isinstance(value, list) and len(value) == channels
                and all(map(number, value)) and (key == "mean" or min(value) > 0)):
            return key, value, f"{channels} {'positive ' if key == 'std' else ''}number(s), one per channel"
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes) and fits(shape_out[1], len(classes))):
        return "classes", classes, f"distinct class names, one per logit (the graph has {shape_out[1]})"
    return None


def onnx_logits(session, images: np.ndarray, mean: list[float], std: list[float] | None,
                batch_size: int) -> np.ndarray:
    """Logits of uint8 NHWC faces, preprocessed as mrfer.transforms.prepare does."""
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.maximum(np.asarray(std if std is not None else [1.0] * len(mean), np.float32), 1e-3).reshape(1, -1, 1, 1)
    outputs = [np.empty((0, 0), np.float32)]
    for start in range(0, len(images), batch_size):
        x = np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2), dtype=np.float32)
        outputs.append(session.run([OUTPUT], {INPUT: (x - m) / s})[0])
    return np.concatenate(outputs[1:]) if len(outputs) > 1 else outputs[0]


def compare(pt_path: str | os.PathLike, onnx_path: str | os.PathLike, images: np.ndarray, labels: np.ndarray,
            batch_size: int) -> dict:
    """Max |logit difference| and both accuracies of the torch model and its ONNX copy (CPU)."""
    model, meta = checkpoint.load_model(pt_path, "cpu")
    session, onnx_meta = load_onnx(onnx_path)
    if onnx_meta["classes"] != list(meta["classes"]):
        raise InputError(f"{onnx_path}: classes {onnx_meta['classes']} differ from {pt_path}: {meta['classes']}")
    model.test_view = None   # the ONNX graph is the network on one face (a test_view's crops are the caller's)
    torch_out = infer(model, images, meta["mean"], meta.get("std"), "cpu", batch_size, what="logits").numpy()
    onnx_out = onnx_logits(session, images, onnx_meta["mean"], onnx_meta["std"], batch_size)
    n = len(meta["classes"])
    torch_pred, onnx_pred = torch_out.argmax(1), onnx_out.argmax(1)
    return {"faces": len(images), "max_abs_diff": float(np.abs(torch_out - onnx_out).max()),
            "accuracy_torch": summarize(labels, torch_pred, n)["accuracy"],
            "accuracy_onnx": summarize(labels, onnx_pred, n)["accuracy"],
            "labels_differ": int((torch_pred != onnx_pred).sum())}


def export_all(cfg: ExportParams, models_dir: str | os.PathLike, data: str | os.PathLike,
               out_dir: str | os.PathLike, report: str | os.PathLike) -> dict:
    """Export every `cfg.models` model to `out_dir/<name>.onnx`, check each on the test split, write
    the report; a copy off by more than `cfg.tolerance` (or a different accuracy) fails the stage."""
    images, labels = shards.load_xy(data, "test")
    results, failures = {}, []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name in cfg.models:
            pt_path = Path(models_dir) / f"{name}.pt"
            export_onnx(pt_path, tmp / f"{name}.onnx", cfg.opset)
            result = compare(pt_path, tmp / f"{name}.onnx", images, labels, cfg.batch_size)
            results[name] = {"onnx": str(Path(out_dir) / f"{name}.onnx"), "opset": cfg.opset, **result}
            log.info("%s: max |onnx - torch| %.2e, accuracy torch %.4f onnx %.4f", name, result["max_abs_diff"],
                     result["accuracy_torch"], result["accuracy_onnx"])
            if result["max_abs_diff"] > cfg.tolerance or result["accuracy_torch"] != result["accuracy_onnx"]:
                failures.append(f"{name}: max |onnx - torch| {result['max_abs_diff']:.2e} (tolerance "
                                f"{cfg.tolerance:.0e}), accuracy {result['accuracy_onnx']:.4f} vs torch "
                                f"{result['accuracy_torch']:.4f}")
        if failures:
            raise ExportCheckError(f"{data} test split: the ONNX copy differs: " + "; ".join(failures))
    write_json(report, results)
    return results


# ---------------------------------------------------------------- command line (`mrfer export`)


def add_arguments(parser):
    parser.add_argument("model", help="an mrfer model file, e.g. models/multires.pt")
    parser.add_argument("--onnx", required=True, help="ONNX file to write, e.g. models/multires.onnx")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17, as params.yaml export.opset)")
    parser.add_argument("--data", help="assembled data (data/assembled/<train_on>): also check onnxruntime against torch "
                        "on its test split and print the max logit difference and both accuracies")
    parser.add_argument("--batch-size", type=int, default=256, help="faces per forward pass in the check")
    parser.set_defaults(func=export_command)
    return parser


def export_command(args) -> dict:
    export_onnx(args.model, args.onnx, args.opset)
    result = {"onnx": args.onnx}
    if args.data:
        images, labels = shards.load_xy(args.data, "test")
        result.update(compare(args.model, args.onnx, images, labels, args.batch_size))
        log.info("check on %s test (%d faces): max |onnx - torch| %.2e, accuracy torch %.4f onnx %.4f",
                 args.data, result["faces"], result["max_abs_diff"], result["accuracy_torch"], result["accuracy_onnx"])
    return result
