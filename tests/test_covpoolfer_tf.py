"""The TF checkpoint reader and the `covpoolfer_tf` weights kind, on a checkpoint TensorFlow wrote.

tests/fixtures/covpoolfer_tf/ is written by tests/fixtures/make_covpoolfer_tf_fixture.py (under
TensorFlow, not run here): a tiny CovPoolFER net under the released model's names, its tensors
as TF held them, and the TF graph's logits on fixed inputs.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mrfer.data.labels import CLASSES
from mrfer.errors import InputError, MissingInputError
from mrfer.nets import build, tf_checkpoint
from mrfer.nets.weights import COVPOOLFER_CLASSES, import_weights
from covpoolfer_tf_fixture import FIXTURE, OPTIONS, PREFIX, SHARD, copy_checkpoint


def tiny_covpool(num_classes: int = 7, **options) -> torch.nn.Module:
    return build("covpool", num_classes=num_classes, in_chans=3, image_size=40, **{**OPTIONS, **options})


def one_line(error: pytest.ExceptionInfo, file: Path | str) -> str:
    message = str(error.value)
    assert "\n" not in message and str(file) in message, message
    return message


# ---------------------------------------------------------------- the reader


def test_reader_returns_exactly_what_tensorflow_saved():
    tensors = tf_checkpoint.read_checkpoint(PREFIX)
    expected = np.load(FIXTURE / "expected.npz")
    assert sorted(name.replace("/", "__") for name in tensors) == sorted(expected.files)
    for name, array in tensors.items():
        want = expected[name.replace("/", "__")]
        assert array.dtype == want.dtype and array.shape == want.shape, name
        np.testing.assert_array_equal(array, want, err_msg=name)
    assert tensors["global_step"].dtype == np.int64 and int(tensors["global_step"]) == 7


def test_reader_takes_prefix_index_file_or_folder():
    by_prefix = tf_checkpoint.read_checkpoint(PREFIX)
    for path in (f"{PREFIX}.index", FIXTURE):
        other = tf_checkpoint.read_checkpoint(path)
        assert other.keys() == by_prefix.keys()


def test_folder_with_several_checkpoints_takes_the_highest_step(tmp_path):
    copy_checkpoint(tmp_path)
    for suffix in (".index", SHARD):   # a lower step of another net beside it
        shutil.copy(FIXTURE / "other" / f"model-other.ckpt-3{suffix}", tmp_path / f"model-fixture.ckpt-3{suffix}")
    assert tf_checkpoint.checkpoint_prefix(tmp_path).name == "model-fixture.ckpt-7"


def test_crc32c_known_values():
    assert tf_checkpoint.crc32c(b"123456789") == 0xE3069283   # the CRC-32C check value
    data = bytes(range(256)) * 1000 + b"tail"
    slow = 0xFFFFFFFF
    for byte in data[:5000]:
        slow = int(tf_checkpoint._CRC_TABLE[(slow ^ byte) & 0xFF]) ^ (slow >> 8)
    assert tf_checkpoint.crc32c(data[:5000]) == slow ^ 0xFFFFFFFF   # lanes agree with the byte loop
    assert tf_checkpoint.crc32c(b"") == 0


def test_snappy_decoder_reads_python_snappy_output():
    raw = (FIXTURE / "snappy_sample.bin").read_bytes()
    assert tf_checkpoint.snappy_decompress((FIXTURE / "snappy_sample.snappy").read_bytes()) == raw


# ---------------------------------------------------------------- a snappy-compressed index
# TensorFlow >= 1.2 writes its index uncompressed (tensor_bundle.cc TableBuilderOptions), 1.1
# compressed it; so the compressed case is built here: the same entries, each block compressed.


def _snappy_compress(data: bytes) -> bytes:
    """A small greedy raw-snappy encoder: literals and 2-byte-offset copies of >= 4 bytes."""
    out, seen, pos, literal_start = bytearray(), {}, 0, 0

    def literal(chunk: bytes) -> None:
        n = len(chunk) - 1
        out.extend(bytes([n << 2]) if n < 60 else bytes([61 << 2]) + n.to_bytes(2, "little"))
        out.extend(chunk)

    out += _varint(len(data))
    while pos + 4 <= len(data):
        key = data[pos:pos + 4]
        match = seen.get(key)
        seen[key] = pos
        if match is None or pos - match > 0xFFFF:
            pos += 1
            continue
        length = 4
        while pos + length < len(data) and length < 64 and data[match + length] == data[pos + length]:
            length += 1
        if literal_start < pos:
            literal(data[literal_start:pos])
        out += bytes([((length - 1) << 2) | 2]) + (pos - match).to_bytes(2, "little")
        pos += length
        literal_start = pos
    if literal_start < len(data):
        literal(data[literal_start:])
    return bytes(out)


def _compressed_table(index: bytes) -> bytes:
    """`index` (an uncompressed table) with every block snappy-compressed and re-addressed."""
    def block_at(handle: bytes) -> bytes:
        offset, pos = tf_checkpoint._varint(handle, 0, "")
        size, _ = tf_checkpoint._varint(handle, pos, "")
        assert index[offset + size] == tf_checkpoint.NO_COMPRESSION
        return index[offset:offset + size]

    out = bytearray()

    def write(block: bytes) -> bytes:
        stored = _snappy_compress(block)
        handle = _varint(len(out)) + _varint(len(stored))
        trailer = bytes([tf_checkpoint.SNAPPY_COMPRESSION])
        crc = tf_checkpoint.mask_crc(tf_checkpoint.crc32c(stored + trailer))
        out.extend(stored + trailer + crc.to_bytes(4, "little"))
        return handle

    footer = index[-tf_checkpoint.FOOTER_SIZE:]
    meta_offset, pos = tf_checkpoint._varint(footer, 0, "")
    meta_size, pos = tf_checkpoint._varint(footer, pos, "")
    index_block = block_at(footer[pos:])
    entries = []
    for key, handle in tf_checkpoint._entries(index_block, "index"):
        entries.append((key, write(block_at(handle))))
    meta_handle = write(index[meta_offset:meta_offset + meta_size])
    body, restarts = bytearray(), []
    for key, value in entries:   # no prefix sharing: every entry a restart point
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    body += b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")
    index_handle = write(bytes(body))
    handles = meta_handle + index_handle
    new_footer = handles + bytes(40 - len(handles)) + tf_checkpoint.TABLE_MAGIC.to_bytes(8, "little")
    return bytes(out) + new_footer


def _varint(value: int) -> bytes:
    chunks = bytearray()
    while value >= 0x80:
        chunks.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(chunks + bytes([value]))


def test_snappy_compressed_index_reads_the_same(tmp_path):
    prefix = copy_checkpoint(tmp_path)
    index = Path(f"{prefix}.index")
    plain = index.read_bytes()
    packed = _compressed_table(plain)
    assert len(packed) < len(plain)   # the compressor really compresses (copies, not only literals)
    index.write_bytes(packed)
    compressed = tf_checkpoint.read_checkpoint(prefix)
    reference = tf_checkpoint.read_checkpoint(PREFIX)
    assert compressed.keys() == reference.keys()
    assert all(np.array_equal(compressed[k], reference[k]) for k in reference)


# ---------------------------------------------------------------- bad files


def _flip(position: int):
    def edit(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[position] ^= 0x01
        return bytes(changed)
    return edit


@pytest.mark.parametrize("edit, problem", [
    (lambda data: data[:-100], "magic number"),            # truncated
    (lambda data: data[:30], "fewer than a table footer"),  # truncated below a footer
    (_flip(-1), "magic number"),                           # wrong magic
    (_flip(20), "crc32c"),                                 # a damaged block
], ids=["truncated", "stub", "wrong-magic", "damaged-block"])
def test_bad_index_is_one_line(tmp_path, edit, problem):
    prefix = copy_checkpoint(tmp_path)
    index = Path(f"{prefix}.index")
    index.write_bytes(edit(index.read_bytes()))
    with pytest.raises(InputError) as error:
        tf_checkpoint.read_checkpoint(prefix)
    assert problem in one_line(error, index)


def test_missing_data_shard_is_one_line(tmp_path):
    prefix = copy_checkpoint(tmp_path)
    Path(f"{prefix}{SHARD}").unlink()
    with pytest.raises(MissingInputError) as error:
        tf_checkpoint.read_checkpoint(prefix)
    assert "data shard" in one_line(error, f"{prefix}{SHARD}")


def test_truncated_and_damaged_data_shard(tmp_path):
    prefix = copy_checkpoint(tmp_path)
    shard = Path(f"{prefix}{SHARD}")
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError) as error:
        tf_checkpoint.read_checkpoint(prefix)
    assert "truncated" in one_line(error, shard)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(damaged))
    with pytest.raises(InputError) as error:
        tf_checkpoint.read_checkpoint(prefix)
    assert "crc32c" in one_line(error, shard)


def test_missing_index_and_empty_folder(tmp_path):
    with pytest.raises(MissingInputError) as error:
        tf_checkpoint.read_checkpoint(tmp_path / "model.ckpt-1")
    one_line(error, tmp_path / "model.ckpt-1.index")
    with pytest.raises(MissingInputError) as error:
        tf_checkpoint.read_checkpoint(tmp_path)
    one_line(error, tmp_path)


def test_unsupported_dtype_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delitem(tf_checkpoint.DTYPES, 9)   # as if int64 (global_step) were unreadable
    with pytest.raises(InputError) as error:
        tf_checkpoint.read_checkpoint(PREFIX)
    assert "global_step" in one_line(error, f"{PREFIX}.index")


# ---------------------------------------------------------------- the weights kind


def test_imported_covpoolnet_gives_tensorflows_logits(caplog):
    model = tiny_covpool().eval()
    with caplog.at_level(logging.INFO, logger="mrfer.nets.weights"):
        import_weights(model, "covpoolfer_tf", PREFIX)
    ignored = next(r.getMessage() for r in caplog.records if "training-only" in r.getMessage())
    for name in ("global_step", "centers", "beta1_power", "DLP-CNN/Conv2d_1/weights/Adam", "Logits/biases/Adam_1"):
        assert name in ignored
    inputs = torch.from_numpy(np.load(FIXTURE / "inputs.npy")).permute(0, 3, 1, 2)   # NHWC RGB -> NCHW
    tf_logits = np.load(FIXTURE / "logits.npy")
    order = [COVPOOLFER_CLASSES.index(name) for name in CLASSES]
    assert order == [0, 1, 2, 3, 5, 6, 4]   # mrfer's sad, surprise, neutral come from TF's rows 5, 6, 4
    with torch.no_grad():
        logits = model(inputs).numpy()
        embeddings = model.features_from_map(model.feature_map(inputs)).numpy()
    np.testing.assert_allclose(embeddings, np.load(FIXTURE / "embeddings.npy"), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, tf_logits[:, order], atol=1e-4, rtol=0)


def test_other_class_count_keeps_a_new_head(caplog):
    model = tiny_covpool(num_classes=8, bottleneck_dim=7).eval()
    head = model.head.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="mrfer.nets.weights"):
        import_weights(model, "covpoolfer_tf", FIXTURE)
    assert torch.equal(model.head.weight, head)
    assert any("head stays new" in r.getMessage() for r in caplog.records)


def test_checkpoint_of_another_net_is_refused():
    other = FIXTURE / "other"
    with pytest.raises(InputError) as error:
        import_weights(tiny_covpool(), "covpoolfer_tf", other)
    assert "not CovPoolFER" in one_line(error, other)


def test_wrong_geometry_lists_every_mismatch_in_one_line():
    model = tiny_covpool(cov_channels=32, bimap_dim=16)   # the fixture's net is 16 -> 8
    with pytest.raises(InputError) as error:
        import_weights(model, "covpoolfer_tf", PREFIX)
    message = one_line(error, PREFIX)
    assert "shape mismatches" in message and "orth_weight0" in message


def test_extra_and_missing_names_are_listed(tmp_path):
    tensors = {name: torch.from_numpy(array) for name, array in tf_checkpoint.read_checkpoint(PREFIX).items()}
    tensors["DLP-CNN/Conv2d_1/BatchNorm/gamma"] = torch.ones(8)   # a scale slim's default has not
    del tensors["DLP-CNN/fc_2/BatchNorm/moving_mean"]
    from mrfer.nets.weights import import_state
    with pytest.raises(InputError) as error:
        import_state(tiny_covpool(), "covpoolfer_tf", tensors, source="edited")
    message = one_line(error, "edited")
    assert "DLP-CNN/Conv2d_1/BatchNorm/gamma" in message and "fc2.1.norm.running_mean" in message


def test_refuses_other_models():
    with pytest.raises(InputError, match="covpool"):
        import_weights(build("baseline_cnn", num_classes=7, in_chans=3, image_size=40), "covpoolfer_tf", PREFIX)
    with pytest.raises(InputError, match="published"):
        import_weights(tiny_covpool(variant="mrfer_small"), "covpoolfer_tf", PREFIX)
