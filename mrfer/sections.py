"""Every params.yaml section and the schema that reads it, for presets, docs and tests.

Stages import their own schemas directly; this map is for tools that handle the whole file
(`scripts/apply_preset.py`, the tests). Schemas are imported on demand: some pull in torch.
"""
from __future__ import annotations

import importlib
import os

from mrfer import config
from mrfer.errors import ParamsError

SCHEMAS = {
    "synthesize": "mrfer.data.synthetic:SynthesizeParams",
    "loop": "mrfer.train.loop:TrainParams",
    "finetune": "mrfer.train.base:FinetuneDefaults",
    "extract": "mrfer.data.extract:CropParams",
    "extract_identities": "mrfer.data.identities:ExtractIdentitiesParams",
    "downsample": "mrfer.data.scales:DownsampleParams",
    "assemble": "mrfer.data.assemble:AssembleParams",
    "pretrain_base": "mrfer.train.base:PretrainBaseParams",
    "face_pretrain": "mrfer.train.face:FacePretrainParams",
    "cr_pretrain": "mrfer.train.cr:CrPretrainParams",
    "multires_finetune": "mrfer.train.multires:MultiresFinetuneParams",
    "distill": "mrfer.train.distill:DistillParams",
    "video_train": "mrfer.train.video:VideoTrainParams",
    "fsr_train": "mrfer.train.fsr:FsrTrainParams",
    "classify": "mrfer.eval.classify:ClassifyParams",
    "cross_eval": "mrfer.eval.cross_eval:CrossEvalParams",
    "export": "mrfer.export:ExportParams",
    "kfold_test": "mrfer.train.kfold:KfoldTestParams",
    "plots": "mrfer.plots:PlotsParams",
}


def schema(name: str) -> type[config.Section]:
    module, _, cls = SCHEMAS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def validate_all(path: str | os.PathLike) -> dict[str, config.Section]:
    """Every section of a params file, validated; a section no schema reads is an error too."""
    data = config.read_params(path)
    unknown = sorted(set(data) - set(SCHEMAS) - set(config.TOP_LEVEL))
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {', '.join(unknown)} (known: {', '.join(SCHEMAS)}, datasets)")
    config.load_seed(path)
    names = config.load_datasets(path, data)
    out = {name: config.load_section(path, name, schema(name), data=data) for name in SCHEMAS}
    extract = importlib.import_module("mrfer.data.extract")
    out.update({f"datasets.{name}": config.load_section(path, f"datasets.{name}", extract.ExtractParams, data=data)
                for name in names})
    return out
