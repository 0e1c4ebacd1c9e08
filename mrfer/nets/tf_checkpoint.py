"""Read a TensorFlow V2 checkpoint (a "tensor bundle") in pure Python and numpy: no TensorFlow.

A checkpoint `<prefix>` (e.g. `model-20170815-144407.ckpt-NNNN`) is `<prefix>.index` and the data
shards `<prefix>.data-0000K-of-0000N`. The format, from TensorFlow's sources
(tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc}, tensor_bundle.proto,
core/lib/io/format.{h,cc}, block.cc, table_builder.cc, core/lib/hash/crc32c.h):

- the `.index` file is a LevelDB-format table: data blocks, a metaindex block, an index block,
  then a 48-byte footer (the metaindex and index block handles as varint64 offset/size pairs,
  zero-padded to 40 bytes, then the magic number 0xdb4775248b80fb57, little-endian). Every block
  is followed by a 5-byte trailer: its compression type (0 none, 1 snappy) and the masked crc32c
  of the stored block and that type byte. TensorFlow >= 1.2 writes the index uncompressed; 1.1
  wrote snappy blocks (a compressed block is kept when it saves more than 1/8), so both are read.
- a block is a run of entries (varint32 shared key bytes, unshared key bytes, value length, the
  unshared key suffix, the value), then the restart offsets (fixed32 each) and their count;
- the key "" holds a BundleHeaderProto (num_shards = 1, endianness = 2, version = 3); every other
  key is a tensor name whose value is a BundleEntryProto (dtype = 1, shape = 2 as a
  TensorShapeProto of dim = 2 {size = 1}, shard_id = 3, offset = 4, size = 5, crc32c = 6 as
  fixed32, slices = 7 for partitioned variables);
- a tensor's bytes are `size` bytes at `offset` in shard `shard_id`, in the header's byte order,
  and their crc32c, masked ((crc >> 15 | crc << 17) + 0xa282ead8), is the entry's crc32c.

`read_checkpoint(path)` takes a prefix, its `.index` file or a folder holding checkpoints and
returns {name: numpy array}; anything unusable (a truncated file, a wrong magic number, a bad
checksum, a missing shard, a dtype with no numpy equivalent, a partitioned variable) is an
InputError naming the file and the problem in one line.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from mrfer.errors import InputError, MissingInputError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
_CRC_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian; swapped for a
# big-endian bundle). Strings, resources, variants and quantised types are refused.
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 8: "complex64",
          9: "int64", 10: "bool", 17: "uint16", 18: "complex128", 19: "float16", 22: "uint32",
          23: "uint64"}
DTYPE_NAMES = {7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
               16: "quint16", 20: "resource", 21: "variant"}


class _Bad(Exception):
    """A format problem found while parsing; the caller adds the file name."""


# ---------------------------------------------------------------- crc32c (Castagnoli)


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()
_CRC_LIST = [int(v) for v in _CRC_TABLE]


def _zero_shift_tables(length: int) -> list[list[int]]:
    """Four byte tables of the linear map "run the CRC register through `length` zero bytes"."""
    basis = np.uint32(1) << np.arange(32, dtype=np.uint32)
    for _ in range(length):
        basis = _CRC_TABLE[basis & 0xFF] ^ (basis >> 8)
    tables = []
    values = np.arange(256)
    for byte in range(4):
        table = np.zeros(256, dtype=np.uint32)
        for bit in range(8):
            table[(values >> bit) & 1 == 1] ^= basis[8 * byte + bit]
        tables.append([int(v) for v in table])
    return tables


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of `data`, vectorised with numpy: the data is cut into equal lanes run side by side
    from a zero register (leading zero bytes then change nothing), joined by the zero-shift map;
    the initial ~0 is folded into the first four bytes (the same for a reflected CRC)."""
    data = memoryview(data).cast("B")
    n = len(data)
    if n < 64:
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _CRC_LIST[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF
    lane = int(min(4096, max(16, np.sqrt(n))))
    lanes = -(-n // lane)
    buffer = np.zeros(lanes * lane, dtype=np.uint8)
    buffer[lanes * lane - n:] = np.frombuffer(data, dtype=np.uint8)
    buffer[lanes * lane - n:lanes * lane - n + 4] ^= 0xFF
    columns = np.ascontiguousarray(buffer.reshape(lanes, lane).T)
    register = np.zeros(lanes, dtype=np.uint32)
    for column in columns:
        register = _CRC_TABLE[(register ^ column) & 0xFF] ^ (register >> 8)
    t0, t1, t2, t3 = _zero_shift_tables(lane)
    crc = 0
    for value in register.tolist():
        crc = (t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24]) ^ value
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TensorFlow's (and LevelDB's) stored form of a CRC: rotated right by 15, plus a constant."""
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------- varints, protobuf, snappy


def _varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _Bad(f"{what} runs past the end of its {len(data)} bytes")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Bad(f"{what} is a varint longer than 10 bytes")


def _fields(data: bytes, what: str) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a protobuf message: varints as ints, length-delimited
    fields as bytes, fixed32/fixed64 as ints."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos, f"a field key of {what}")
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, f"field {number} of {what}")
        elif wire == 2:
            length, pos = _varint(data, pos, f"the length of field {number} of {what}")
            if pos + length > len(data):
                raise _Bad(f"field {number} of {what} ({length} bytes) runs past its end")
            value, pos = bytes(data[pos:pos + length]), pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(data):
                raise _Bad(f"field {number} of {what} runs past its end")
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise _Bad(f"{what} has field {number} of wire type {wire}, which protobuf 3 does not write")
        out.append((number, value))
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def snappy_decompress(data: bytes) -> bytes:
    """Raw snappy (the block format LevelDB tables use): a varint length, then literals and
    back-references with 1-, 2- or 4-byte offsets."""
    length, pos = _varint(data, 0, "the snappy length")
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                if pos + extra > len(data):
                    raise _Bad("a snappy literal length runs past the block")
                size = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            size += 1
            if pos + size > len(data):
                raise _Bad("a snappy literal runs past the block")
            out += data[pos:pos + size]
            pos += size
            continue
        if kind == 1:
            size, extra = 4 + ((tag >> 2) & 7), 1
            if pos + 1 > len(data):
                raise _Bad("a snappy copy runs past the block")
            offset = ((tag >> 5) << 8) | data[pos]
        else:
            size, extra = (tag >> 2) + 1, 2 if kind == 2 else 4
            if pos + extra > len(data):
                raise _Bad("a snappy copy runs past the block")
            offset = int.from_bytes(data[pos:pos + extra], "little")
        pos += extra
        if not 0 < offset <= len(out):
            raise _Bad(f"a snappy copy reaches {offset} bytes back with {len(out)} decoded")
        start = len(out) - offset
        if offset >= size:
            out += out[start:start + size]
        else:  # overlapping copy: the pattern repeats
            for i in range(size):
                out.append(out[start + i])
    if len(out) != length:
        raise _Bad(f"a snappy block decodes to {len(out)} bytes, its header says {length}")
    return bytes(out)


# ---------------------------------------------------------------- the table (.index)


def _block(data: bytes, handle: tuple[int, int], what: str) -> bytes:
    offset, size = handle
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise _Bad(f"the {what} block (bytes {offset}-{end}) runs past the table's "
                   f"{len(data) - FOOTER_SIZE} bytes of blocks")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1:end], "little")
    if mask_crc(crc32c(data[offset:offset + size + 1])) != stored:
        raise _Bad(f"the {what} block at byte {offset} fails its crc32c check (a damaged file)")
    if kind == NO_COMPRESSION:
        return contents
    if kind == SNAPPY_COMPRESSION:
        return snappy_decompress(contents)
    raise _Bad(f"the {what} block at byte {offset} has compression type {kind} "
               f"(0 none and 1 snappy are known)")


def _entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Bad(f"the {what} block has {len(block)} bytes, too few for its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * restarts
    if restarts < 1 or limit < 0:
        raise _Bad(f"the {what} block claims {restarts} restart points in {len(block)} bytes")
    out, pos, key = [], 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, f"an entry of the {what} block")
        unshared, pos = _varint(block, pos, f"an entry of the {what} block")
        size, pos = _varint(block, pos, f"an entry of the {what} block")
        if shared > len(key) or pos + unshared + size > limit:
            raise _Bad(f"an entry of the {what} block at byte {pos} overruns the block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + size]))
        pos += size
    return out


def _handle(value: bytes, what: str) -> tuple[int, int]:
    offset, pos = _varint(value, 0, what)
    size, _ = _varint(value, pos, what)
    return offset, size


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-format table, in key order. Raises `_Bad`."""
    if len(data) < FOOTER_SIZE:
        raise _Bad(f"the file has {len(data)} bytes, fewer than a table footer's {FOOTER_SIZE}")
    footer = data[-FOOTER_SIZE:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != TABLE_MAGIC:
        raise _Bad(f"its last 8 bytes are 0x{magic:016x}, not the table magic number "
                   f"0x{TABLE_MAGIC:016x} (not a TensorFlow V2 checkpoint index, or cut short)")
    _, pos = _varint(footer, 0, "the footer's metaindex handle")
    _, pos = _varint(footer, pos, "the footer's metaindex handle")
    index_handle = _handle(footer[pos:], "the footer's index handle")
    out = []
    for _, value in _entries(_block(data, index_handle, "index"), "index"):
        out += _entries(_block(data, _handle(value, "a block handle"), "data"), "data")
    return out


# ---------------------------------------------------------------- the bundle


def _shape(data: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in _fields(data, "a TensorShapeProto"):
        if number == 2:
            size = next((_signed64(v) for n, v in _fields(value, "a tensor dimension") if n == 1), 0)
            dims.append(size)
        elif number == 3 and value:
            raise _Bad("a tensor of unknown rank")
    return tuple(dims)


def _entry(value: bytes, name: str) -> dict:
    entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "slices": 0}
    for number, field in _fields(value, f"the BundleEntryProto of {name!r}"):
        if number == 1:
            entry["dtype"] = field
        elif number == 2:
            entry["shape"] = _shape(field)
        elif number in (3, 4, 5):
            entry[{3: "shard_id", 4: "offset", 5: "size"}[number]] = _signed64(field)
        elif number == 6:
            entry["crc32c"] = field
        elif number == 7:
            entry["slices"] += 1
    return entry


def _header(value: bytes) -> tuple[int, str]:
    shards, endianness = 0, 0
    for number, field in _fields(value, "the BundleHeaderProto"):
        if number == 1:
            shards = field
        elif number == 2:
            endianness = field
    if shards < 1:
        raise _Bad(f"the header names {shards} data shards")
    if endianness not in (0, 1):
        raise _Bad(f"the header's endianness is {endianness} (0 little, 1 big)")
    return shards, "<" if endianness == 0 else ">"


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix `path` names: a prefix, its `.index` file, or a folder with one
    checkpoint (with several `*.ckpt-N.index`: the highest N, as facenet's and FSR-FER's
    get_model_filenames pick)."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if not indexes:
            raise MissingInputError(f"{path}: no TensorFlow checkpoint (*.index) in this folder")
        if len(indexes) > 1:
            steps = [re.search(r"\.ckpt-(\d+)\.index$", p.name) for p in indexes]
            if not all(steps):
                raise InputError(f"{path}: {len(indexes)} checkpoints ({', '.join(p.name for p in indexes)}); "
                                 f"name the one to read")
            indexes = [max(zip(steps, indexes), key=lambda pair: int(pair[0].group(1)))[1]]
        return indexes[0].with_suffix("")
    if path.suffix == ".index":
        return path.with_suffix("")
    if not Path(f"{path}.index").is_file() and not path.parent.is_dir():
        raise MissingInputError(f"{path}: no such TensorFlow checkpoint (give its folder, its prefix "
                                f"<folder>/model-....ckpt-N or that prefix's .index file)")
    return path


def read_checkpoint(path: str | os.PathLike, check_crc: bool = True) -> dict[str, np.ndarray]:
    """{tensor name: array} of the TensorFlow V2 checkpoint at `path` (prefix, `.index` file or
    folder). Every tensor's crc32c is checked unless `check_crc` is False."""
    prefix = checkpoint_prefix(path)
    index = Path(f"{prefix}.index")
    if not index.is_file():
        raise MissingInputError(f"{index}: TensorFlow checkpoint index not found")
    try:
        entries = read_table(index.read_bytes())
        if not entries or entries[0][0] != b"":
            raise _Bad("no bundle header (the empty key) in the table")
        shards, order = _header(entries[0][1])
        parsed = [(key.decode("utf-8", "replace"), value) for key, value in entries[1:]]
        parsed = [(name, _entry(value, name)) for name, value in parsed]
    except _Bad as bad:
        raise InputError(f"{index}: not a readable TensorFlow checkpoint index: {bad}") from None
    files: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, entry in parsed:
        if entry["slices"]:
            raise InputError(f"{index}: tensor {name!r} is saved as {entry['slices']} slices "
                             f"(a partitioned variable), which this reader does not join")
        code = entry["dtype"]
        if code not in DTYPES:
            raise InputError(f"{index}: tensor {name!r} has dtype "
                             f"{DTYPE_NAMES.get(code, f'code {code}')}, which this reader does not read")
        shard = entry["shard_id"]
        if not 0 <= shard < shards:
            raise InputError(f"{index}: tensor {name!r} is in shard {shard} of {shards}")
        data_file = Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}")
        if shard not in files:
            if not data_file.is_file():
                raise MissingInputError(f"{data_file}: data shard {shard} of {shards} not found "
                                        f"(the checkpoint {index.name} needs it)")
            files[shard] = data_file.read_bytes()
        dtype = np.dtype(DTYPES[code]).newbyteorder(order)
        shape = entry["shape"]
        count = int(np.prod(shape, dtype=np.int64))
        offset, size = entry["offset"], entry["size"]
        if any(d < 0 for d in shape) or size != count * dtype.itemsize:
            raise InputError(f"{index}: tensor {name!r} of shape {shape} and dtype {dtype.name} has "
                             f"{size} bytes, not {count * dtype.itemsize}")
        if offset < 0 or offset + size > len(files[shard]):
            raise InputError(f"{data_file}: tensor {name!r} (bytes {offset}-{offset + size}) runs past "
                             f"the file's {len(files[shard])} bytes (a truncated shard)")
        raw = memoryview(files[shard])[offset:offset + size]
        if check_crc and entry["crc32c"] is not None and mask_crc(crc32c(raw)) != entry["crc32c"]:
            raise InputError(f"{data_file}: tensor {name!r} fails its crc32c check (a damaged file)")
        array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        out[name] = array.astype(dtype.newbyteorder("="), copy=True)
    return out


def describe(tensors: dict[str, np.ndarray]) -> str:
    """'name shape dtype' lines, for messages and logs."""
    return "; ".join(f"{name} {tuple(array.shape)} {array.dtype}" for name, array in sorted(tensors.items()))


__all__ = ["DTYPES", "checkpoint_prefix", "crc32c", "mask_crc", "read_checkpoint", "read_table",
           "snappy_decompress"]
