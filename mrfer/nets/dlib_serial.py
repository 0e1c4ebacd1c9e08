"""Read a dlib DNN file (`dlib::serialize(net)`) in pure Python and numpy: no dlib, no compiler.

The format, from dlib's sources (davisking/dlib: dlib/serialize.h, dlib/float_details.h,
dlib/cuda/tensor.h, dlib/dnn/core.h, layers.h, input.h, loss.h):

- an integer is a control byte (low 4 bits: how many bytes follow; 0x80: negative), then that many
  bytes, least significant first; a float is two integers, mantissa then exponent
  (mantissa * 2**exponent; exponents 32000-32002 are inf, -inf and nan); a bool is the character
  '1' or '0'; a string is its length (an integer) and its bytes;
- a tensor is version 2, num_samples, k, nr, nc, then k*nr*nc*num_samples little-endian float32; an
  alias tensor (a view into a layer's params) is version 1 and its four dimensions, no data;
- the loss layer writes version 1, its own details, then the network under it. Every layer writes
  its version and then the layer under it *before* its own details, so the file holds the
  versions of every layer from the output down to the input first, then the input layer, then
  the layers' details from the input up to the output. Tags and skips (version 1) write nothing
  else, so which layer a skip reads is not in the file: the caller gives the expected layer list.

`read_net` walks that list (output to input, as `mrfer.nets.dlib_resnet.dlib_layers` gives it) and
returns each layer's record; anything else in the file is an InputError naming the file, the byte
and what was expected, in one line.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from mrfer.errors import InputError, MissingInputError

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class _Stream:
    """A cursor over the file's bytes; every read raises `_Bad` with the byte where it failed."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def fail(self, what: str) -> None:
        raise _Bad(self.pos, what)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"the file ends inside {what} (needs {n} more bytes, has {len(self.data) - self.pos})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str = "an integer") -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            self.pos -= 1
            self.fail(f"byte 0x{control:02x} cannot start {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str = "a float") -> float:
        mantissa, exponent = self.int(what), self.int(what)
        return _SPECIAL_EXPONENTS.get(exponent, math.ldexp(mantissa, exponent) if exponent < 32000 else math.nan)

    def bool(self, what: str = "a bool") -> bool:
        char = self.take(1, what)
        if char not in (b"0", b"1"):
            self.pos -= 1
            self.fail(f"{what} is {char!r}, not '0' or '1'")
        return char == b"1"

    def string(self, what: str = "a string", limit: int = 64) -> str:
        n = self.int(f"the length of {what}")
        if not 0 <= n <= limit:
            self.fail(f"{what} would be {n} bytes long")
        return self.take(n, what).decode("latin-1")

    def _one_of(self, read, expected: tuple, problem) -> object:
        start = self.pos
        value = read()
        if value not in expected:
            self.pos = start
            self.fail(problem(value))
        return value

    def version(self, expected: tuple[int, ...], what: str) -> int:
        return self._one_of(lambda: self.int(f"the version of {what}"), expected,
                            lambda v: f"{what} has version {v}, expected {' or '.join(map(str, expected))}")

    def name(self, expected: tuple[str, ...], what: str) -> str:
        return self._one_of(lambda: self.string(f"the name of {what}"), expected,
                            lambda v: f"found {v!r} where {what} ({' or '.join(map(repr, expected))}) should be")

    def tensor(self, what: str) -> np.ndarray:
        self.version((2,), what)
        shape = tuple(self.int(f"a dimension of {what}") for _ in range(4))
        if min(shape) < 0:
            self.fail(f"{what} has a negative dimension {shape}")
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").reshape(shape)

    def alias(self, what: str) -> tuple[int, ...]:
        self.version((1,), what)
        return tuple(self.int(f"a dimension of {what}") for _ in range(4))


class _Bad(Exception):
    def __init__(self, pos: int, what: str):
        super().__init__(what)
        self.pos, self.what = pos, what


def _view(params: np.ndarray, offset: int, shape: tuple[int, ...], stream: _Stream, what: str) -> np.ndarray:
    """The alias tensor `shape` at `offset` of a layer's flat params (how dlib lays them out)."""
    count = math.prod(shape)
    flat = params.reshape(-1)
    if offset + count > flat.size:
        stream.fail(f"{what} needs {offset + count} parameters, the layer holds {flat.size}")
    return flat[offset:offset + count].reshape(shape).astype(np.float32)


def _details(stream: _Stream, kind: str, where: str) -> dict:
    """One layer's own fields (`serialize(item.details)` in core.h), as a record."""
    if kind == "con":
        version = stream.name(("con_4", "con_5", "con_6"), f"{where}: a con layer")
        params = stream.tensor(f"{where}: the conv params")
        filters = stream.int("num_filters")
        kernel = (stream.int("nr"), stream.int("nc"))
        stride = (stream.int("stride_y"), stream.int("stride_x"))
        padding = (stream.int("padding_y"), stream.int("padding_x"))
        weight_shape, bias_shape = stream.alias(f"{where}: the filters"), stream.alias(f"{where}: the biases")
        for _ in range(4):
            stream.float("a learning-rate or weight-decay multiplier")
        use_bias = stream.bool("use_bias") if version in ("con_5", "con_6") else True
        if version == "con_6" and stream.bool("use_relu"):
            stream.fail(f"{where}: a con layer with a fused relu, which this network does not have")
        weight = _view(params, 0, weight_shape, stream, f"{where}: the filters")
        if weight_shape[0] != filters or weight_shape[2:] != kernel:
            stream.fail(f"{where}: filters {weight_shape} do not match num_filters {filters}, kernel {kernel}")
        record = {"weight": weight, "stride": stride, "padding": padding}
        if use_bias and math.prod(bias_shape):
            record["bias"] = _view(params, math.prod(weight_shape), bias_shape, stream, f"{where}: the biases").reshape(-1)
        return record
    if kind == "affine":
        version = stream.name(("affine_", "affine_2"), f"{where}: an affine layer")
        params = stream.tensor(f"{where}: the affine params")
        gamma, beta = stream.alias(f"{where}: gamma"), stream.alias(f"{where}: beta")
        mode = stream.int("the affine mode")
        if version == "affine_2" and stream.bool("disabled"):
            stream.fail(f"{where}: a disabled affine layer")
        if mode != 0:
            stream.fail(f"{where}: an affine layer in fc mode (1), expected conv mode (0)")
        return {"weight": _view(params, 0, gamma, stream, f"{where}: gamma").reshape(-1),
                "bias": _view(params, math.prod(gamma), beta, stream, f"{where}: beta").reshape(-1)}
    if kind == "relu":
        if stream.name(("relu_", "relu_2"), f"{where}: a relu layer") == "relu_2" and stream.bool("disabled"):
            stream.fail(f"{where}: a disabled relu layer")
        return {}
    if kind in ("max_pool", "avg_pool"):
        stream.name((f"{kind}_2",), f"{where}: a {kind} layer")
        window = (stream.int("nr"), stream.int("nc"))
        stride = (stream.int("stride_y"), stream.int("stride_x"))
        padding = (stream.int("padding_y"), stream.int("padding_x"))
        return {"window": window, "stride": stride, "padding": padding}
    if kind == "add_prev":
        stream.name(("add_prev_",), f"{where}: an add_prev layer")
        return {}
    if kind == "fc":
        version = stream.name(("fc_2", "fc_3"), f"{where}: an fc layer")
        outputs, inputs = stream.int("num_outputs"), stream.int("num_inputs")
        params = stream.tensor(f"{where}: the fc params")
        weight_shape = stream.alias(f"{where}: the fc weights")
        stream.alias(f"{where}: the fc biases")
        if stream.int("the fc bias mode") != 1:
            stream.fail(f"{where}: an fc layer with a bias, expected fc_no_bias")
        for _ in range(4):
            stream.float("a learning-rate or weight-decay multiplier")
        if version == "fc_3":
            stream.bool("use_bias")
        if weight_shape[:2] != (inputs, outputs):
            stream.fail(f"{where}: fc weights {weight_shape} for {inputs} inputs and {outputs} outputs")
        # dlib computes output = input (N x inputs) @ W (inputs x outputs): torch's weight is W.T
        return {"weight": np.ascontiguousarray(_view(params, 0, (inputs, outputs), stream, f"{where}: the fc weights").T)}
    raise ValueError(f"unknown dlib layer kind {kind!r}")


def _layer_tail(stream: _Stream, tensors: tuple[str, ...], where: str) -> None:
    """What add_layer writes after its details (core.h): three bools and its cached tensors."""
    for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        stream.bool(f"{where}: {flag}")
    for cached in tensors:
        stream.tensor(f"{where}: {cached}")


def read_net(path: str | os.PathLike, layers: list[tuple[str, str | None]], loss: tuple[str, int],
             what: str) -> dict:
    """Read dlib net file `path` whose layers (output to input, the last sitting on the input layer)
    are `layers`, under the loss layer `loss` (its serialised name and how many floats it holds:
    ('loss_metric_2', 2) for the margin and distance threshold), on dlib's `input_rgb_image_sized`.

    Returns {"loss": {name, values}, "input": {mean, size}, "layers": [(kind, name, record), ...]
    from the output to the input}. Anything else is an InputError: "<path>: not <what>: ...".
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: weight file not found")
    stream = _Stream(path.read_bytes())
    try:
        return _read(stream, layers, loss)
    except _Bad as bad:
        raise InputError(f"{path}: not {what}: at byte {bad.pos} of {len(stream.data)}: {bad.what}") from None


def _read(stream: _Stream, layers: list[tuple[str, str | None]], loss: tuple[str, int]) -> dict:
    loss_name, loss_floats = loss
    stream.version((1,), "the loss layer")
    stream.name((loss_name,), "the loss layer")
    loss_values = [stream.float("a loss parameter") for _ in range(loss_floats)]
    versions = []
    for depth, (kind, name) in enumerate(layers):
        where = f"layer {depth} ({kind})"
        if kind in ("tag", "skip"):
            stream.version((1,), f"{where}: a {kind}")
            versions.append(1)
        elif depth == len(layers) - 1:   # the add_layer on the input layer (core.h's specialisation)
            versions.append(stream.version((2, 3), f"{where}: the layer on the input"))
        else:
            versions.append(stream.version((1, 2), where))
    stream.name(("input_rgb_image_sized",), "the input layer")
    mean = tuple(stream.float("an input channel mean") for _ in range(3))
    size = (stream.int("the input rows"), stream.int("the input columns"))
    records: list[tuple[str, str | None, dict]] = []
    for depth in reversed(range(len(layers))):
        kind, name = layers[depth]
        if kind in ("tag", "skip"):
            records.append((kind, name, {}))
            continue
        where = f"layer {depth} ({kind})"
        records.append((kind, name, _details(stream, kind, where)))
        if depth == len(layers) - 1:   # the layer on the input: version 2 or 3
            _layer_tail(stream, ("x_grad", "cached_output", "grad_final"), where)
            if versions[depth] >= 3:
                stream.int("_sample_expansion_factor")
        else:                          # version 1 or 2 (2 added params_grad)
            _layer_tail(stream, ("x_grad", "cached_output", "params_grad")[:3 if versions[depth] >= 2 else 2], where)
    if stream.pos != len(stream.data):
        stream.fail(f"{len(stream.data) - stream.pos} bytes follow the network's last layer")
    return {"loss": {"name": loss_name, "values": loss_values}, "input": {"mean": mean, "size": size},
            "layers": records[::-1]}
