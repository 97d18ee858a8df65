"""The one owner of the state format: how a partition's state becomes Redis hash fields, and back.

Version 2 (this one): each field is `MAGIC`, a version byte, then msgpack. numpy arrays travel as raw
little-endian bytes (an ext type with dtype and shape). Arrays of `BLOB_BYTES` or more are stored once in a
field of their own named by a hash of their content (`a/<hash>`) and referenced from the state: a closed block
never changes, so its field is written once, and a checkpoint writes only the fields whose bytes changed
(`changed_fields`), deleting the ones no state refers to any more.

Version 1 (model-monitor 0.1 and 0.2): a field was JSON text. It is read as it is (the readers of each state
migrate its contents) and replaced at the next checkpoint. A field of a version newer than this code is refused
with `StateFormatError`, naming the field.

Everything that reads state (the stages on load, `status`, the report) goes through `read_fields`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from monitor.errors import MonitorError

MAGIC = b"\xc1MM"  # 0xc1 is never the first byte of msgpack, JSON or text
VERSION = 2
BLOB_PREFIX = "a/"
BLOB_BYTES = 64
_ARRAY, _BLOB = 1, 2
_EXACT = 2.0**53


class StateFormatError(MonitorError):
    """A stored state field this version cannot read."""


def _array_bytes(a: np.ndarray) -> bytes:
    """An array as [dtype, shape] then its raw little-endian bytes. A float64 array is split into the values
    that are integers (counts, histogram bins: most of a block summary), stored in the narrowest integer type
    that holds them, and the rest as float64, with a bitmap of which is which: exact, and under half the size."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.float64 and a.size:
        flat = a.reshape(-1)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(flat) & (np.abs(flat) < _EXACT) & (flat == np.round(flat)) & ~np.signbit(flat)
        ints = flat[whole].astype(np.int64)
        narrow = np.min_scalar_type(int(ints.max())) if len(ints) else np.dtype(np.uint8)
        head: bytes = msgpack.packb(["f8i", list(a.shape), narrow.str])
        body: bytes = (np.packbits(whole).tobytes() + ints.astype(narrow.newbyteorder("<")).tobytes()
                       + flat[~whole].astype("<f8").tobytes())
        return head + body
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    head = msgpack.packb([le.dtype.str, list(le.shape)])
    return head + bytes(le.tobytes())


def _array_from(data: bytes) -> np.ndarray:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    head = unpacker.unpack()
    offset = unpacker.tell()
    if head[0] == "f8i":
        shape, narrow = head[1], np.dtype(head[2])
        n = int(np.prod(shape))
        whole = np.unpackbits(np.frombuffer(data, np.uint8, (n + 7) // 8, offset), count=n).astype(bool)
        offset += (n + 7) // 8
        k = int(whole.sum())
        out = np.empty(n, dtype=np.float64)
        out[whole] = np.frombuffer(data, narrow, k, offset)
        offset += k * narrow.itemsize
        out[~whole] = np.frombuffer(data, "<f8", n - k, offset)
        return out.reshape(shape)
    dtype, shape = head
    return np.frombuffer(data, dtype=np.dtype(dtype), offset=offset).reshape(shape).copy()


class _Writer:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            data = _array_bytes(obj)
            if len(data) >= BLOB_BYTES:
                name = BLOB_PREFIX + hashlib.blake2b(data, digest_size=10).hexdigest()
                self.blobs[name] = data
                return msgpack.ExtType(_BLOB, name.encode())
            return msgpack.ExtType(_ARRAY, data)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, tuple | set):
            return list(obj)
        raise TypeError(f"state cannot hold {type(obj).__name__}")


def encode_fields(states: Mapping[str, Any]) -> dict[str, bytes]:
    """Fields of a hash from states (field name -> JSON-like value with numpy arrays), blobs included."""
    blobs: dict[str, bytes] = {}
    writer = _Writer(blobs)
    out = {name: MAGIC + bytes([VERSION]) + msgpack.packb(state, default=writer.default, use_bin_type=True)
           for name, state in states.items()}
    out.update(blobs)
    return out


def read_fields(fields: Mapping[str, bytes], names: list[str] | None = None) -> dict[str, Any]:
    """The states of a hash's fields (all but blobs, or `names`), arrays as numpy arrays, blobs resolved."""
    out = {}
    for name in (names if names is not None else [n for n in fields if not n.startswith(BLOB_PREFIX)]):
        raw = fields.get(name)
        if raw is not None:
            out[name] = decode_field(name, raw, fields)
    return out


def decode_field(name: str, raw: bytes | str, fields: Mapping[str, bytes]) -> Any:
    if isinstance(raw, str):
        raw = raw.encode()
    if raw[:3] != MAGIC:
        try:  # version 1: JSON text
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateFormatError(f"state field {name!r} is neither version {VERSION} nor JSON (version 1): "
                                   f"{exc}") from exc
    version = raw[3]
    if version > VERSION:
        raise StateFormatError(f"state field {name!r} has format version {version}; this model-monitor reads up "
                               f"to {VERSION}: upgrade model-monitor (or restore the state of its version)")

    def ext(code: int, data: bytes) -> Any:
        if code == _ARRAY:
            return _array_from(data)
        if code == _BLOB:
            blob = fields.get(data.decode())
            if blob is None:
                raise StateFormatError(f"state field {name!r} refers to {data.decode()!r}, which is not stored")
            return _array_from(blob)
        return msgpack.ExtType(code, data)

    return msgpack.unpackb(raw[4:], ext_hook=ext, raw=False, strict_map_key=False)


def changed_fields(new: Mapping[str, bytes], written: Mapping[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """What a checkpoint writes: fields whose bytes differ from the stored ones, and stored fields to delete."""
    changed = {k: v for k, v in new.items() if written.get(k) != v}
    gone = [k for k in written if k not in new]
    return changed, gone
