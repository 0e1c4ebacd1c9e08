"""Import pretrained weights from local files into registry models (never downloads).

Supported files, chosen by `kind` in `import_weights(model, kind, path)`:

- "vggface": VGG-Face converted from Lua-Torch/Caffe to a PyTorch state dict (`VGG_FACE.pth`):
  one nn.Sequential numbering, convs `0.weight ... 28.weight`, fc6 `32.1.*`, fc7 `35.1.*`,
  fc8 `38.1.*` (2622 identities, replaced by the FER head). Into model `vggface`.
- "vggface2_senet": the VGGFace2 SE-ResNet-50 (`senet50_ft_weight.pkl`,
  `senet50_scratch_weight.pkl`) into model `seresnet50`. Two real namings are read:
    * VGGFace2-pytorch (cydonia999) pickles: a dict of numpy arrays named like that repo's
      SENet module: `conv1.weight`, `bn1.running_mean`, `layer2.0.conv1.weight`, SE convs
      `layer2.0.conv4.*` / `conv5.*`, `layer2.0.downsample.{0,1}.*`, classifier `fc.*`;
    * Caffe layer names, as in the VGGFace2 authors' PyTorch port (`senet50_ft.pth`):
      `conv1_7x7_s2.weight`, `conv2_1_1x1_reduce_bn.running_var`, `conv2_1_3x3`,
      `conv2_1_1x1_increase`, SE `conv2_1_1x1_down` / `conv2_1_1x1_up`, shortcut
      `conv2_1_1x1_proj(_bn)`, classifier `classifier.*`. Prototxt spellings with '/'
      (`conv1/7x7_s2/bn`) are read as '_'.
  Both map onto timm's names (SE convs are `se.fc1`/`se.fc2`), BN running stats included.
  The Caffe model was trained on BGR input: by default conv1 is flipped to take RGB.
- "torchvision": an ImageNet state dict of resnet18/resnet50/vgg16; its 1000-way fc
  (`fc.*`, `classifier.6.*`) is skipped.
- "dlib_resnet": dlib's face-recognition ResNet, `dlib_face_recognition_resnet_model_v1.dat` as
  dlib serialises it (read in pure Python by `mrfer.nets.dlib_serial`), into model `dlib_resnet`;
  the 128-d fc is the model's embedding, the FER head stays new. Every layer's kind, geometry and
  shape is checked against the network; any other file (another dlib model, a truncated copy) is
  refused in one line. The package `face-recognition-models` installs it:
  `path: package:face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat`.

- "covpoolfer_tf": CovPoolFER's released TensorFlow checkpoint (model2/20170815-144407, the frozen
  FER network of FSR-FER), `model-20170815-144407.ckpt-NNNN` (its `.index` and `.data-*` files; the
  path may be that prefix, the `.index` file or the folder), read in pure Python by
  `mrfer.nets.tf_checkpoint`, into model `covpool` (variant published). The names under the scope
  `DLP-CNN/` (or covpoolnet.py's own `CovPoolNetwork/`): `Conv2d_1 ... Conv2d_5, Conv2dfo_6` weights
  (HWIO -> OIHW) and their slim `BatchNorm/{beta, moving_mean, moving_variance}` (no gamma),
  `spdpooling1/orth_weight0` (BiMap W as it is), `fc_1`, `fc_2`, `Bottleneck` weights ((in, out) ->
  (out, in)) and batch norms; `Logits/{weights, biases}` become the model's head when it has 7
  classes, rows reordered from CovPoolFER's label ids (sorted class folders: angry, disgust, fear,
  happy, neutral, sad, surprise) to mrfer's order; with another class count the head stays new.
  Training-only tensors (Adam slots, beta powers, global_step, centre-loss `centers`) are ignored
  by name and logged. The released model takes 100 px RGB faces, each standardised over all its
  values (the net's `standardize`, on by default).

A `path` of the form `package:<python package>/<file inside it>` names a file installed with a
Python package, wherever that is on this machine (found without importing the package); any other
path is a local file.

Every file tensor must land on a model tensor of the same shape and every model tensor
outside `head` must be covered (BN `num_batches_tracked` may be absent); otherwise a
ValueError names the file and the missing/unexpected keys and shape mismatches. RGB weights
loaded into a gray model (in_chans=1) have their first conv summed over the input channels.

Safety: torch files are read with `torch.load(weights_only=True)`; other pickles with an
unpickler that admits only numpy arrays/dtypes and plain containers.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrfer.errors import InputError, MissingInputError, MrferError, UnsafeFileError
from mrfer.data.labels import CLASSES
from mrfer.nets import checkpoint, dlib_serial, tf_checkpoint
from mrfer.nets.covpool import CovPoolNet
from mrfer.nets.dlib_resnet import DLIB_GRAY_MEAN, DLIB_MEAN, DLIB_SCALE, DlibResNet, dlib_layers
from mrfer.nets.seresnet import TimmSEResNet50
from mrfer.nets.torchvision_nets import TorchvisionResNet, TorchvisionVGG16
from mrfer.nets.vggface import VGGFace

log = logging.getLogger(__name__)

KINDS = ("vggface", "vggface2_senet", "torchvision", "dlib_resnet", "covpoolfer_tf")
PACKAGE_PREFIX = "package:"
DLIB_RESNET_FILE = "package:face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
SENET_DEPTHS = (3, 4, 6, 3)  # bottleneck blocks per stage of SE-ResNet-50

# CovPoolFER's TF names (conv_feature_pooling/src/models/covpoolnet.py:28-79, scope DLP-CNN in the
# released model2: FSRFER lib/utils.py:121-141) and its label ids: framework.get_dataset numbers
# the sorted class folders (framework.py:306-323), named Angry ... Surprise (FSRFER README.md:25-56).
COVPOOLFER_SCOPES = ("DLP-CNN", "CovPoolNetwork")
COVPOOLFER_CONVS = ("Conv2d_1", "Conv2d_2", "Conv2d_3", "Conv2d_4", "Conv2d_5", "Conv2dfo_6")
COVPOOLFER_FCS = (("fc_1", "fc1"), ("fc_2", "fc2"), ("Bottleneck", "bottleneck"))
COVPOOLFER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
_TF_TRAINING_ONLY = re.compile(r"(^|/)(Adam(_\d+)?|Momentum|RMSProp(_\d+)?|ExponentialMovingAverage)$"
                               r"|^global_step$|(^|/)centers$|^beta[12]_power(_\d+)?$")

__all__ = ["KINDS", "import_state", "import_weights", "load_torchvision", "load_vggface",
           "load_vggface2_senet", "read_covpoolfer_tf", "read_dlib_resnet", "read_weight_file", "resolve",
           "senet_module_names"]


# The globals a pickled dict of numpy arrays needs (numpy 1.x and 2.x spellings, protocols 2-5).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: Path):
        # latin1: Python 2 pickles (the VGGFace2 .pkl files) store array bytes as str.
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeFileError(self.source, f"{module}.{name}")
        if module.startswith("numpy.core."):  # numpy 1.x name of numpy 2's numpy._core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


# torch.save's legacy (pre-zip) format starts with a pickled magic number.
_TORCH_LEGACY_PREFIX = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as f:
        return f.read(len(_TORCH_LEGACY_PREFIX)) == _TORCH_LEGACY_PREFIX


def read_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict (torch file or pickle of numpy arrays) as name -> CPU tensor."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: weight file not found")
    if _is_torch_file(path):
        obj = checkpoint.load(path)
    else:
        try:
            with path.open("rb") as f:
                obj = _NumpyOnlyUnpickler(f, path).load()
        except MrferError:
            raise
        except Exception as e:  # any byte string reaches the unpickler: name the file, not its internals
            raise InputError(f"{path}: not a weight file mrfer reads: {_what_it_is(path, e)}; expected a torch "
                             "state dict (torch.save) or a pickle of numpy arrays") from None
    return _as_state_dict(obj, path)


def _what_it_is(path: Path, error: Exception) -> str:
    """What a file the unpickler could not read looks like, for the error message."""
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated torch (zip) file: its end is missing"
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"\x12" in head[:16] and b"onnx" in head.lower()):
        return "an ONNX model (a network for onnxruntime, not a state dict of weights)"
    if not head:
        return "an empty file"
    first_line = (str(error).splitlines() or [""])[0][:80]
    if isinstance(error, EOFError) or "truncated" in first_line:
        return "a truncated pickle (it ends early)"
    return f"not a pickle ({type(error).__name__}: {first_line})"


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints wrap the state dict (torchvision references: "model").
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: expected a non-empty dict of arrays, got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            state[str(key)] = value
        elif isinstance(value, (np.ndarray, np.generic)):
            # copies only arrays that are read-only or not contiguous (torch needs both)
            state[str(key)] = torch.from_numpy(np.require(value, requirements=["C", "W"]))
        else:
            raise InputError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def import_state(model: nn.Module, kind: str, state: dict[str, torch.Tensor],
                 source: str = "<state dict>", **kwargs: Any) -> None:
    """Like `import_weights`, from a state dict already in memory (`source` names it in errors)."""
    if kind not in KINDS:
        raise ValueError(f"unknown weight kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if kwargs and kind != "vggface2_senet":
        raise ValueError(f"weight kind {kind!r} takes no options, got {sorted(kwargs)}")
    if kind == "vggface":
        mapped, skipped = _map_vggface(model, state, source)
    elif kind == "vggface2_senet":
        mapped, skipped = _map_vggface2_senet(model, state, source, **kwargs)
    elif kind == "dlib_resnet":
        mapped, skipped = _map_dlib_resnet(model, state, source)
    elif kind == "covpoolfer_tf":
        mapped, skipped = _map_covpoolfer_tf(model, state, source)
        _assign(model, mapped, source, kind)
        log.info("%s: loaded %d tensors as %s weights; %s", source, len(mapped), kind,
                 "the released Logits are the head (rows in mrfer's class order)" if "head.weight" in mapped
                 else f"skipped the Logits ({', '.join(skipped) or 'absent from the file'}): the model has "
                      f"{model.head.out_features} classes, the file {len(COVPOOLFER_CLASSES)}; the head stays new")
        return
    else:
        mapped, skipped = _map_torchvision(model, state, source)
    _assign(model, mapped, source, kind)
    log.info("%s: loaded %d tensors as %s weights; skipped the replaced classifier (%s); "
             "the FER head stays newly initialised", source, len(mapped), kind,
             ", ".join(skipped) or "absent from the file")


def import_weights(model: nn.Module, kind: str, path: str | os.PathLike, **kwargs: Any) -> None:
    """Load the weight file at `path` (a local path or `package:...`) of `kind` (one of KINDS) into
    `model`, in place."""
    if kind not in KINDS:
        raise ValueError(f"unknown weight kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if kind == "dlib_resnet":
        _require(model, DlibResNet, kind, "'dlib_resnet'")
        state = read_dlib_resnet(path)
    elif kind == "covpoolfer_tf":
        _require_published_covpool(model)
        state = read_covpoolfer_tf(path)
    else:
        state = read_weight_file(resolve(path))
    import_state(model, kind, state, source=str(path), **kwargs)


def resolve(path: str | os.PathLike) -> Path:
    """The file a weights `path` names: `package:<package>/<file>` is looked up in that installed
    Python package (without importing it: face_recognition_models' __init__ needs setuptools); any
    other path is returned as it is."""
    text = str(path)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(path)
    package, _, inside = text[len(PACKAGE_PREFIX):].partition("/")
    if not package or not inside:
        raise InputError(f"{text}: a package path is package:<python package>/<file inside it>")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError(f"{text}: the Python package {package!r} is not installed "
                                f"(requirements.txt pins the ones mrfer uses)")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / inside).is_file():
            return Path(folder) / inside
    raise MissingInputError(f"{text}: {inside} is not in the installed package {package!r} "
                            f"({', '.join(spec.submodule_search_locations)}); reinstall it")


def read_dlib_resnet(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """dlib's face-recognition ResNet file as a state dict of model `dlib_resnet` (RGB, as dlib has
    it; each affine layer folded into its conv): every layer checked against the network, else one
    InputError line naming the file."""
    file = resolve(path)
    what = "dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat)"
    net = dlib_serial.read_net(file, dlib_layers(), ("loss_metric_2", 2), what)
    with torch.device("meta"):
        reference = DlibResNet(2, 3, 150)   # the geometry each conv of the file must have
    mean, size = net["input"]["mean"], net["input"]["size"]
    if size != (150, 150) or not np.allclose(mean, DLIB_MEAN, atol=1e-3):
        raise InputError(f"{file}: not {what}: its input layer is {size} px with means {mean}, expected "
                         f"150 px with means {DLIB_MEAN}")
    pools = {"pool_all": ((0, 0), (1, 1)), "pool_2x2": ((2, 2), (2, 2)), None: ((3, 3), (2, 2))}
    state: dict[str, np.ndarray] = {}
    folded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, name, record in net["layers"]:
        if kind == "con":
            conv = reference.get_submodule(name)
            if (record["stride"], record["padding"]) != (conv.stride, conv.padding) or "bias" not in record:
                raise InputError(f"{file}: not {what}: conv {name} has stride {record['stride']}, padding "
                                 f"{record['padding']}{'' if 'bias' in record else ', no bias'}; the network's: "
                                 f"{conv.stride}, {conv.padding}, with a bias")
        elif kind in ("max_pool", "avg_pool"):
            if (record["window"], record["stride"]) != pools[name] or record["padding"] != (0, 0):
                raise InputError(f"{file}: not {what}: a {kind} of window {record['window']}, stride "
                                 f"{record['stride']}, padding {record['padding']} where the network has "
                                 f"{pools[name]}, no padding")
        if kind == "con":
            state[f"{name}.weight"], state[f"{name}.bias"] = record["weight"], record["bias"]
        elif kind == "affine":   # y = gain * (W x + b) + shift: fold into the conv under it
            gain, shift = record["weight"].astype(np.float64), record["bias"].astype(np.float64)
            folded[name] = (gain, shift)
        elif kind == "fc":
            state["fc.weight"] = record["weight"]
    for name, (gain, shift) in folded.items():
        weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
        if gain.shape != (weight.shape[0],) or shift.shape != gain.shape:
            raise InputError(f"{file}: not {what}: the affine layer on conv {name} has {gain.shape[0]} gains and "
                             f"{shift.shape[0]} shifts for {weight.shape[0]} filters")
        state[f"{name}.weight"] = weight * gain[:, None, None, None]
        state[f"{name}.bias"] = bias * gain + shift
    state = {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in state.items()}
    log.info("%s: dlib's ResNet takes (pixel - mean) / %g: set normalize: mean_std, mean: %s (gray: [%s]), "
             "std: [%g] where it is fine-tuned or used (docs/training.md)", file, DLIB_SCALE,
             list(DLIB_MEAN), DLIB_GRAY_MEAN, DLIB_SCALE)
    return state


def read_covpoolfer_tf(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of CovPoolFER's TF checkpoint at `path` (prefix, `.index` or folder) by their TF
    names, training-only ones (Adam slots, global_step, centres) left out and logged; a checkpoint
    with nothing under DLP-CNN/ or CovPoolNetwork/ is refused in one line."""
    arrays = tf_checkpoint.read_checkpoint(resolve(path))
    ignored = sorted(name for name in arrays if _TF_TRAINING_ONLY.search(name))
    if not any(name.startswith(f"{scope}/") for name in arrays for scope in COVPOOLFER_SCOPES):
        raise InputError(f"{path}: not CovPoolFER's checkpoint: no tensor under "
                         f"{' or '.join(s + '/' for s in COVPOOLFER_SCOPES)} (it holds {_short(sorted(arrays), 6)})")
    if ignored:
        log.info("%s: ignored %d training-only tensors: %s", path, len(ignored), _short(ignored))
    return {name: torch.from_numpy(array) for name, array in arrays.items() if name not in ignored}


def load_vggface(model: nn.Module, path: str | os.PathLike) -> None:
    import_weights(model, "vggface", path)


def load_vggface2_senet(model: nn.Module, path: str | os.PathLike,
                        file_channel_order: str = "bgr") -> None:
    """`file_channel_order`: the colour order conv1 was trained on ("bgr" for the Caffe
    VGGFace2 models); "bgr" flips conv1 so the model takes RGB like the rest of mrfer."""
    import_weights(model, "vggface2_senet", path, file_channel_order=file_channel_order)


def load_torchvision(model: nn.Module, path: str | os.PathLike) -> None:
    import_weights(model, "torchvision", path)


# ---------------------------------------------------------------- per-format key mapping
# Each returns ({model key: (file key, tensor)}, [skipped file keys of the replaced head]).
# File keys that map to no model key are kept under their own name so `_assign` reports them.


def _require(model: nn.Module, cls: type | tuple[type, ...], kind: str, models: str) -> None:
    if not isinstance(model, cls):
        raise InputError(f"{kind!r} weights fit model(s) {models}, not {type(model).__name__}")


def _map_vggface(model, state, source):
    _require(model, VGGFace, "vggface", "'vggface'")
    mapped, skipped = {}, []
    for key, tensor in state.items():
        if key.startswith("38."):  # fc8: 2622 VGG-Face identities
            skipped.append(key)
        else:
            mapped["body." + key] = (key, tensor)
    return mapped, skipped


def _map_torchvision(model, state, source):
    _require(model, (TorchvisionResNet, TorchvisionVGG16), "torchvision",
             "'resnet18', 'resnet50', 'vgg16'")
    mapped, skipped = {}, []
    for key, tensor in state.items():
        if key.startswith(model.replaced_head):  # the 1000-way ImageNet classifier
            skipped.append(key)
        else:
            mapped["backbone." + key] = (key, tensor)
    return mapped, skipped


def senet_module_names() -> list[tuple[str, str, str]]:
    """(timm, VGGFace2-pytorch, Caffe) names of every SE-ResNet-50 module with weights."""
    rows = [("conv1", "conv1", "conv1_7x7_s2"), ("bn1", "bn1", "conv1_7x7_s2_bn")]
    for stage, depth in enumerate(SENET_DEPTHS):
        for block in range(depth):
            timm_name = f"layer{stage + 1}.{block}"  # cydonia999 uses the same block names
            caffe = f"conv{stage + 2}_{block + 1}"
            rows += [
                (f"{timm_name}.conv1", f"{timm_name}.conv1", f"{caffe}_1x1_reduce"),
                (f"{timm_name}.bn1", f"{timm_name}.bn1", f"{caffe}_1x1_reduce_bn"),
                (f"{timm_name}.conv2", f"{timm_name}.conv2", f"{caffe}_3x3"),
                (f"{timm_name}.bn2", f"{timm_name}.bn2", f"{caffe}_3x3_bn"),
                (f"{timm_name}.conv3", f"{timm_name}.conv3", f"{caffe}_1x1_increase"),
                (f"{timm_name}.bn3", f"{timm_name}.bn3", f"{caffe}_1x1_increase_bn"),
                (f"{timm_name}.se.fc1", f"{timm_name}.conv4", f"{caffe}_1x1_down"),
                (f"{timm_name}.se.fc2", f"{timm_name}.conv5", f"{caffe}_1x1_up"),
            ]
            if block == 0:  # projection shortcut
                rows += [
                    (f"{timm_name}.downsample.0", f"{timm_name}.downsample.0", f"{caffe}_1x1_proj"),
                    (f"{timm_name}.downsample.1", f"{timm_name}.downsample.1",
                     f"{caffe}_1x1_proj_bn"),
                ]
    return rows


def _map_vggface2_senet(model, state, source, file_channel_order: str = "bgr", keep_head: bool = False):
    """`keep_head`: the released 8,631-way identity classifier goes into `model.head` (which must be
    8,631 x 2048: VGGFace2's train identities, in sorted folder order) instead of being skipped."""
    _require(model, TimmSEResNet50, "vggface2_senet", "'seresnet50'")
    if file_channel_order not in ("bgr", "rgb"):
        raise ValueError(f"file_channel_order must be 'bgr' or 'rgb', got {file_channel_order!r}")
    if not model.caffe_layout:
        log.warning("%s: VGGFace2 weights loaded into seresnet50 with timm's stride layout; "
                    "build it with caffe_layout=True to match the network they were trained on",
                    source)
    state = {key.replace("/", "_"): tensor for key, tensor in state.items()}
    rows = senet_module_names()
    if any(key.startswith("layer1.0.") for key in state):  # VGGFace2-pytorch names
        to_timm = {pytorch_name: timm_name for timm_name, pytorch_name, _ in rows}
        head, first_conv = "fc", "conv1.weight"
    elif any(key.startswith("conv2_1_1x1_reduce") for key in state):  # Caffe names
        to_timm = {caffe_name: timm_name for timm_name, _, caffe_name in rows}
        head, first_conv = "classifier", "conv1_7x7_s2.weight"
    else:
        raise ValueError(
            f"{source}: not a VGGFace2 SE-ResNet-50 weight file: expected keys like "
            f"'layer1.0.conv4.weight' (VGGFace2-pytorch) or 'conv2_1_1x1_reduce.weight' (Caffe "
            f"names); found e.g. {sorted(state)[:5]}")
    mapped, skipped = {}, []
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if module == head:  # the identity classifier (8631 VGGFace2 subjects)
            if keep_head:   # the Caffe port stores it as a 1x1 conv
                mapped[f"head.{param}"] = (key, tensor.reshape(tensor.shape[:2]) if param == "weight" else tensor)
            else:
                skipped.append(key)
            continue
        if key == first_conv and file_channel_order == "bgr" and tensor.shape[1] == 3:
            tensor = tensor.flip(1)  # BGR input channels -> RGB
        target = f"backbone.{to_timm[module]}.{param}" if module in to_timm else key
        mapped[target] = (key, tensor)
    return mapped, skipped


def _map_dlib_resnet(model, state, source):
    """The file's names are the model's (`read_dlib_resnet`); a gray model gets conv 1 summed over
    the colour channels, its bias shifted so that a gray face normalised by DLIB_GRAY_MEAN gives
    exactly dlib's output for that face in three equal channels normalised by DLIB_MEAN."""
    _require(model, DlibResNet, "dlib_resnet", "'dlib_resnet'")
    mapped = {key: (key, tensor) for key, tensor in state.items()}
    weight, bias = state.get("conv.weight"), state.get("conv.bias")
    if model.in_chans == 1 and weight is not None and bias is not None and weight.shape[1] == 3:
        shift = torch.tensor([DLIB_GRAY_MEAN - m for m in DLIB_MEAN], dtype=torch.float64) / DLIB_SCALE
        folded = bias.double() + (weight.double().sum(dim=(2, 3)) * shift).sum(dim=1)
        mapped["conv.weight"] = ("conv.weight", weight.sum(dim=1, keepdim=True))
        mapped["conv.bias"] = ("conv.bias", folded.float())
    return mapped, []   # the file has no classifier: the descriptor is the fc's output


def _require_published_covpool(model) -> None:
    _require(model, CovPoolNet, "covpoolfer_tf", "'covpool'")
    if model.variant != "published":
        raise InputError(f"'covpoolfer_tf' weights fit covpool's variant 'published', not {model.variant!r}")


def _hwio_to_oihw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.permute(3, 2, 0, 1) if tensor.ndim == 4 else tensor   # other shapes: `_assign` reports them


def _transposed(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.t() if tensor.ndim == 2 else tensor


def _rows(tensor: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return tensor[order] if tensor.ndim >= 1 and len(tensor) == len(order) else tensor


def _map_covpoolfer_tf(model, state, source):
    """TF names -> CovPoolNet keys, by position along the trunk; names that map nowhere are kept so
    `_assign` lists them. The Logits become the head (rows reordered to mrfer's classes) when the
    model has CovPoolFER's 7 classes."""
    _require_published_covpool(model)
    scope = next((s for s in COVPOOLFER_SCOPES if any(k.startswith(f"{s}/") for k in state)), COVPOOLFER_SCOPES[0])
    layers = list(model.trunk)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
    modules = [(f"{scope}/{tf_name}", f"trunk.{i}", f"trunk.{i + 1}", _hwio_to_oihw)
               for tf_name, i in zip(COVPOOLFER_CONVS, convs)]
    modules += [(f"{scope}/{tf_name}", f"{name}.0", f"{name}.1", _transposed) for tf_name, name in COVPOOLFER_FCS]
    targets = {f"{scope}/spdpooling1/orth_weight0": ("bimap.weight", lambda t: t)}
    for tf_module, weight, norm, convert in modules:
        targets[f"{tf_module}/weights"] = (f"{weight}.weight", convert)
        targets[f"{tf_module}/BatchNorm/beta"] = (f"{norm}.bias", lambda t: t)
        targets[f"{tf_module}/BatchNorm/moving_mean"] = (f"{norm}.norm.running_mean", lambda t: t)
        targets[f"{tf_module}/BatchNorm/moving_variance"] = (f"{norm}.norm.running_var", lambda t: t)
    skipped = []
    if model.head.out_features == len(COVPOOLFER_CLASSES):
        order = torch.tensor([COVPOOLFER_CLASSES.index(name) for name in CLASSES])
        targets["Logits/weights"] = ("head.weight", lambda t: _rows(_transposed(t), order))
        targets["Logits/biases"] = ("head.bias", lambda t: _rows(t, order))
    else:
        skipped = [k for k in ("Logits/weights", "Logits/biases") if k in state]
    mapped = {}
    for key, tensor in state.items():
        if key in skipped:
            continue
        target, convert = targets.get(key, (key, lambda t: t))
        mapped[target] = (key, convert(tensor).contiguous())
    return mapped, skipped


# ---------------------------------------------------------------- checking and copying


def _short(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _fit_input_channels(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """RGB first-conv weights for a gray model: sum over input channels (timm's convention)."""
    if (tensor.ndim == 4 and len(shape) == 4 and tensor.shape[1] == 3 and shape[1] == 1
            and tensor.shape[0] == shape[0] and tensor.shape[2:] == shape[2:]):
        return tensor.sum(dim=1, keepdim=True)
    return tensor


def _assign(model: nn.Module, mapped: dict[str, tuple[str, torch.Tensor]], source: str,
            kind: str) -> None:
    target = model.state_dict()
    wanted = {k for k in target if not k.startswith("head.") or k in mapped}   # a head only when the file's is kept
    optional = {k for k in wanted if k.endswith("num_batches_tracked")}
    missing = sorted(wanted - optional - set(mapped))
    unexpected = sorted(file_key for key, (file_key, _) in mapped.items() if key not in wanted)
    mismatched, ready = [], {}
    for key, (file_key, tensor) in mapped.items():
        if key not in wanted:
            continue
        tensor = _fit_input_channels(tensor, target[key].shape)
        if tensor.shape != target[key].shape:
            mismatched.append(f"{file_key} {tuple(tensor.shape)} -> {key} "
                              f"{tuple(target[key].shape)}")
        else:
            ready[key] = tensor
    if missing or unexpected or mismatched:
        problems = [f"{source}: does not match this {type(model).__name__} as {kind!r} weights"]
        if missing:
            problems.append(f"missing model keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected file keys ({len(unexpected)}): {_short(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {_short(mismatched)}")
        raise InputError("; ".join(problems))
    with torch.no_grad():
        for key, tensor in ready.items():
            target[key].copy_(tensor)
