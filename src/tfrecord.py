"""A TFRecord writer for the GLUE features, without TensorFlow.

MindSpore reads TFRecord itself (``mindspore.dataset.TFRecordDataset``); only writing needs
code. A TFRecord file is a sequence of records, each framed as

    uint64 length | uint32 masked CRC-32C of the length bytes | payload | uint32 masked CRC-32C of the payload

(little-endian), and each payload here is a serialized ``tf.train.Example`` protocol buffer:
``Example{features: Features{map<string, Feature> feature}}`` with ``Feature`` holding an
``Int64List`` (field 3) or a ``FloatList`` (field 2), both packed. The encoding below writes
exactly those messages, so the 1.3 GB TensorFlow package is not needed to convert data.
"""
import struct
from typing import Dict, Iterable

import numpy as np


def _crc32c_table():
    poly = 0x82F63B78  # Castagnoli, bit-reversed
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord frames use it."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    # TFRecord stores a rotated and offset CRC, so that a CRC over data that embeds CRCs stays strong.
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 two's complement: 10 bytes
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_SMALL = [_varint(n) for n in range(1 << 16)]  # token ids, masks, segments and labels are small


def _varints(values: np.ndarray) -> bytes:
    """The varints of many int64 values, concatenated."""
    small = _SMALL
    return b"".join([small[v] if 0 <= v < 65536 else _varint(v) for v in values.tolist()])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _feature(values: np.ndarray) -> bytes:
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "f":  # FloatList{repeated float value = 1 [packed]} in Feature field 2
        return _field(2, _field(1, values.astype("<f4").tobytes()))
    if values.dtype.kind not in "iu":
        raise TypeError(f"TFRecord features are int64 or float lists, not {values.dtype}")
    return _field(3, _field(1, _varints(values)))  # Int64List in Feature field 3


def encode_example(features: Dict[str, np.ndarray]) -> bytes:
    """Serialize one ``tf.train.Example`` (features in the given order)."""
    entries = b"".join(_field(1, _field(1, name.encode()) + _field(2, _feature(v)))
                       for name, v in features.items())
    return _field(1, entries)


def frame(payload: bytes) -> bytes:
    """One TFRecord record around ``payload``."""
    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", masked_crc32c(length)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


def write_examples(path: str, rows: Iterable[Dict[str, np.ndarray]]) -> int:
    """Write one record per row; returns the number written."""
    n = 0
    with open(path, "wb") as f:
        for row in rows:
            f.write(frame(encode_example(row)))
            n += 1
    return n
