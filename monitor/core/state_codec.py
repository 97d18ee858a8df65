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

import base64
import hashlib
import itertools
import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from monitor.errors import MonitorError

MAGIC = b"\xc1MM"  # 0xc1 is never the first byte of msgpack, JSON or text
VERSION = 2
BLOB_PREFIX = "a/"
BLOB_BYTES = 64
_ARRAY, _BLOB, _OBJECT_BLOB = 1, 2, 3
_EXACT = 2.0**53


class StateFormatError(MonitorError):
    """A stored state field this version cannot read."""


def _array_bytes(a: np.ndarray) -> bytes:
    """An array as [dtype, shape] then its raw little-endian bytes. A float64 array is split into the values
    that are integers (counts, histogram bins: most of a block summary), stored as varints, and the rest as
    float64, with a bitmap of which is which: exact, and under half the size."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.float64 and a.size:
        flat = a.reshape(-1)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(flat) & (np.abs(flat) < _EXACT) & (flat == np.round(flat)) & ~np.signbit(flat)
        ints = flat[whole].astype(np.int64)
        from monitor.core.varint import encode_varints  # compiled; imported by writers only

        packed = encode_varints(ints)
        head: bytes = msgpack.packb(["f8v", list(a.shape), len(packed)])
        body: bytes = np.packbits(whole).tobytes() + packed.tobytes() + flat[~whole].astype("<f8").tobytes()
        return head + body
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    head = msgpack.packb([le.dtype.str, list(le.shape)])
    return head + bytes(le.tobytes())


def varints(values: np.ndarray) -> np.ndarray:
    """Non-negative integers (< 2^56) as LEB128 varints, 7 bits a byte: counts take the bytes their size needs.
    The definition; checkpoints use its compiled twin (`monitor.core.varint`), held to it by a property test.

    >>> varints(np.array([0, 127, 128, 300])).tolist()
    [0, 127, 128, 1, 172, 2]
    """
    values = values.astype(np.int64)
    lengths = np.ones(len(values), dtype=np.int64)
    for j in range(1, 8):
        lengths += values >= (1 << (7 * j))
    which = np.repeat(np.arange(len(values)), lengths)
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    out = (values[which] >> (7 * pos)) & 0x7F
    out |= np.where(pos < lengths[which] - 1, 0x80, 0)
    return out.astype(np.uint8)


def _from_varints(data: np.ndarray, count: int) -> np.ndarray:
    """`varints`' inverse, as float64 (numpy: `status` reads state and must start without numba)."""
    if count == 0:
        return np.zeros(0)
    last = data < 0x80  # the last byte of each value
    group = np.concatenate(([0], np.cumsum(last)[:-1]))
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    pos = np.arange(len(data)) - starts[group]
    parts = (data.astype(np.int64) & 0x7F) << (7 * pos)
    return np.add.reduceat(parts, starts).astype(np.float64)[:count]


def _array_from(data: bytes) -> np.ndarray:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    head = unpacker.unpack()
    offset = unpacker.tell()
    if head[0] == "f8v":
        shape, size = head[1], head[2]
        n = int(np.prod(shape))
        whole = np.unpackbits(np.frombuffer(data, np.uint8, (n + 7) // 8, offset), count=n).astype(bool)
        offset += (n + 7) // 8
        k = int(whole.sum())
        out = np.empty(n, dtype=np.float64)
        out[whole] = _from_varints(np.frombuffer(data, np.uint8, size, offset), k)
        offset += size
        out[~whole] = np.frombuffer(data, "<f8", n - k, offset)
        return out.reshape(shape)
    dtype, shape = head
    return np.frombuffer(data, dtype=np.dtype(dtype), offset=offset).reshape(shape).copy()


@dataclass(frozen=True, slots=True)
class Packed:
    """A value stored as a blob of its own when its encoding is `BLOB_BYTES` or more (content-addressed, so
    written once while it does not change)."""

    value: Any
    min_bytes: int = BLOB_BYTES  # smaller encodings stay inline
    frozen: bool = False  # made by `stored_once`: its value never changes, so it is encoded once


_ONCE: dict[tuple[int, ...], tuple[Any, Packed]] = {}  # ids of frozen values -> (the values, their Packed)
_ONCE_ENCODED: dict[int, tuple[Packed, Any, dict[str, bytes]]] = {}  # id(Packed) -> its encoding, its blobs


def stored_once(value: Any, min_bytes: int = BLOB_BYTES, parts: list[Any] | None = None) -> Packed:
    """`Packed(value)` for a value that never changes once made (a closed slot's entry, a closed block): the
    same object, and so one encoding, for as long as `value` (or each of `parts`, whose list `value` is) is
    the same object. The cache holds them, so an id is not reused while it is cached."""
    items = [value] if parts is None else parts
    key = (min_bytes, *map(id, items))
    hit = _ONCE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], items, strict=True)):
        return hit[1]
    if len(_ONCE) > 20_000:
        _ONCE.clear()
        _ONCE_ENCODED.clear()
    packed = Packed(value, min_bytes, frozen=True)
    _ONCE[key] = (items, packed)
    return packed


def _blob_name(data: bytes) -> str:
    """`a/` and 64 bits of a hash of the blob's bytes, in 11 base64url characters."""
    return BLOB_PREFIX + base64.urlsafe_b64encode(hashlib.blake2b(data, digest_size=8).digest()).decode()[:11]


_MEMO: dict[int, tuple[Any, Any, tuple[str, bytes] | None]] = {}  # id -> (weakref, encoding, its blob)


def _encode_array(a: np.ndarray) -> tuple[Any, tuple[str, bytes] | None]:
    """An array's msgpack ext: inline, or a reference to a blob (returned with it: name, bytes)."""
    data = _array_bytes(a)
    if len(data) >= BLOB_BYTES:
        name = _blob_name(data)
        return msgpack.ExtType(_BLOB, name.encode()), (name, data)
    return msgpack.ExtType(_ARRAY, data), None


class _Writer:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def _blob(self, data: bytes) -> str:
        name = _blob_name(data)
        self.blobs[name] = data
        return name

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray) and not obj.flags.writeable:  # read-only: it never changes, encode once
            memo = _MEMO.get(id(obj))
            if memo is None or memo[0]() is not obj:
                if len(_MEMO) > 50_000:
                    _MEMO.clear()
                memo = (weakref.ref(obj), *_encode_array(obj))
                _MEMO[id(obj)] = memo
            _ref, ext, blob = memo
            if blob is not None:  # every encoding that refers to a blob carries it
                self.blobs[blob[0]] = blob[1]
            return ext
        return self._encode(obj)

    def _encode(self, obj: Any) -> Any:
        if isinstance(obj, Packed):
            memo = _ONCE_ENCODED.get(id(obj)) if obj.frozen else None
            if memo is not None and memo[0] is obj:
                self.blobs.update(memo[2])  # every encoding that refers to a blob carries it
                return memo[1]
            outer, self.blobs = self.blobs, {}
            try:
                data: bytes = msgpack.packb(obj.value, default=self.default, use_bin_type=True)
            finally:
                inner, self.blobs = self.blobs, outer
                outer.update(inner)
            if len(data) < obj.min_bytes:
                return obj.value  # inline: msgpack writes it where it is
            name = self._blob(data)
            ext = msgpack.ExtType(_OBJECT_BLOB, name.encode())
            if obj.frozen:
                _ONCE_ENCODED[id(obj)] = (obj, ext, {**inner, name: data})
            return ext
        if isinstance(obj, np.ndarray):
            ext, blob = _encode_array(obj)
            if blob is not None:
                self.blobs[blob[0]] = blob[1]
            return ext
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, tuple | set):
            return list(obj)
        raise TypeError(f"state cannot hold {type(obj).__name__}")


GROUP_PREFIX = "g/"  # fields `split_hot` makes: never states of their own
HOT_FIELD = "g/hot"
BLOCKS_FIELD = "g/blocks"
Path = tuple[str, ...]


def _pop_matches(node: Any, pattern: Path, target: list[Any], targets: list[Any], values: list[Any]) -> None:
    """Pop every value of `node` matching `pattern` ("*": every key, in sorted order), appending it to
    `values` and its target (the state's index, then what each "*" matched) to `targets`."""
    if not isinstance(node, dict):
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        for key in sorted(node):
            if rest:
                _pop_matches(node[key], rest, [*target, key], targets, values)
            else:
                targets.append([*target, key])
                values.append(node.pop(key))
    elif head in node:
        if rest:
            _pop_matches(node[head], rest, target, targets, values)
        else:
            targets.append(target)
            values.append(node.pop(head))


def _put(state: Any, path: Path, value: Any) -> None:
    for key in path[:-1]:
        state = state[key]
    state[path[-1]] = value


def split_hot(states: dict[str, Any], paths: Sequence[Path], field: str = HOT_FIELD) -> dict[str, Any]:
    """Move parts of the states that change together into one field of their own, and back (`read_fields`).

    `g/hot` holds what changes at every batch (totals, the open block...): the states themselves then change
    only when a block closes, and are not written again until then; float vectors of all states are
    concatenated into one array (which compacts and is stored as one). `g/blocks` holds lists of float vectors
    (closed blocks), concatenated position by position across the states: a window's block k of every feature
    is one array, so a block is stored once and only the list of references changes as the window slides.
    A "*" in a path matches every key of a dict (stage 2's features)."""
    names = list(states)
    group: dict[str, Any] = {}
    for pattern in paths:
        targets: list[Any] = []
        values: list[Any] = []
        plain = "*" not in pattern
        for k, state in enumerate(states.values()):
            if plain:  # the common case, without building paths: walk down, pop the leaf
                node = state
                for key in pattern[:-1]:
                    node = node.get(key) if isinstance(node, dict) else None
                if isinstance(node, dict) and pattern[-1] in node:
                    targets.append(k)
                    values.append(node.pop(pattern[-1]))
                continue
            _pop_matches(state, pattern, [k], targets, values)
        if targets:
            group["/".join(pattern)] = _pack_values(targets, values)
    return {**states, field: {"names": names, "paths": group}} if group else states


def _kind_of(value: Any) -> str:
    cls = value.__class__
    if cls is np.ndarray:
        return "vector" if value.ndim == 1 and value.dtype == np.float64 else "other"
    if cls is float:
        return "float"
    if cls is list:
        if not value:
            return "other"
        first = value[0].__class__
        if first is np.ndarray and all(_vector(x) for x in value):
            return "vectors"
        if first is dict and all(x.__class__ is dict for x in value):
            return "dicts"
        return "other"
    if cls is dict and value and all(k.__class__ is str for k in value):
        return "dict:" + "\x1f".join(sorted(value))  # same keys: stored as columns (the keys once)
    return "other"


def _pack_values(targets: list[Any], values: list[Any]) -> list[dict[str, Any]]:
    """Values of one path in all states, each kind stored in the compact way: float vectors concatenated, lists
    of them position by position, dicts with the same keys as columns, the rest as they are."""
    kinds: dict[str, tuple[list[Any], list[Any]]] = {}
    for target, value in zip(targets, values, strict=True):
        kind = _kind_of(value)
        group = kinds.get(kind)
        if group is None:
            group = kinds[kind] = ([], [])
        group[0].append(target)
        group[1].append(value)
    out = []
    for kind, (tgts, vals) in kinds.items():
        entry: dict[str, Any] = {"targets": tgts}
        if kind == "vector":
            entry.update(lengths=[len(v) for v in vals], flat=np.concatenate(vals))
        elif kind == "float":
            entry["floats"] = np.array(vals, dtype=np.float64)
        elif kind == "vectors":
            width = max(len(v) for v in vals)
            entry.update(lists=[[len(x) for x in v] for v in vals],
                         flats=[_joined([v[i] for v in vals if i < len(v)]) for i in range(width)])
        elif kind == "dicts":  # closed blocks of categories: the k-th of every state as one stored object
            width = max(len(v) for v in vals)
            entry.update(lists=[len(v) for v in vals],
                         packed=[_frozen_list([v[i] for v in vals if i < len(v)]) for i in range(width)])
        elif kind.startswith("dict:"):
            keys = sorted(vals[0])
            columns = []
            for key in keys:
                column = [v[key] for v in vals]
                floats = all(isinstance(x, float) for x in column)
                columns.append(np.array(column, dtype=np.float64) if floats else column)
            entry.update(keys=keys, columns=columns)
        else:
            entry["values"] = vals
        out.append(entry)
    return out


_JOINED: dict[tuple[int, ...], tuple[list[Any], np.ndarray]] = {}  # ids of read-only parts -> (refs, joined)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The parts concatenated. Parts that are all read-only (closed blocks) give the same read-only array
    while they live, so it is encoded once (`_Writer.default`): as a window slides, block k of every feature
    is the block k + 1 was, and only the newest position is new."""
    if not all(not p.flags.writeable for p in parts):
        return np.concatenate(parts)
    key = tuple(map(id, parts))
    hit = _JOINED.get(key)
    if hit is not None and all(r() is p for r, p in zip(hit[0], parts, strict=True)):
        return hit[1]
    if len(_JOINED) > 20_000:
        _JOINED.clear()
    joined = np.concatenate(parts)
    joined.flags.writeable = False
    _JOINED[key] = ([weakref.ref(p) for p in parts], joined)
    return joined


def _frozen_list(items: list[Any]) -> Packed:
    """Closed blocks of categories (never changed once closed) at one position of every state: encoded once
    while the same blocks are there."""
    return stored_once(items, parts=items)


def _unpack_values(entry: dict[str, Any]) -> list[Any]:
    if "flat" in entry:
        bounds = np.cumsum([0, *entry["lengths"]]).tolist()
        return [entry["flat"][a:b].copy() for a, b in itertools.pairwise(bounds)]
    if "flats" in entry:
        at = [0] * len(entry["flats"])
        values = []
        for lengths in entry["lists"]:
            vectors = []
            for i, n in enumerate(lengths):
                vectors.append(entry["flats"][i][at[i]:at[i] + n].copy())
                at[i] += n
            values.append(vectors)
        return values
    if "floats" in entry:
        return [float(x) for x in entry["floats"]]
    if "packed" in entry:
        at = [0] * len(entry["packed"])
        values = []
        for length in entry["lists"]:
            items = []
            for i in range(length):
                items.append(entry["packed"][i][at[i]])
                at[i] += 1
            values.append(items)
        return values
    if "keys" in entry:
        columns = [c.tolist() if isinstance(c, np.ndarray) else c for c in entry["columns"]]
        return [dict(zip(entry["keys"], row, strict=True)) for row in zip(*columns, strict=True)]
    return list(entry["values"])


def _vector(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype == np.float64


def _join_hot(out: dict[str, Any], group: dict[str, Any]) -> None:
    names = group["names"]
    for key, entries in group["paths"].items():
        pattern = key.split("/")
        for entry in entries:
            for target, value in zip(entry["targets"], _unpack_values(entry), strict=True):
                index, wild = (target[0], iter(target[1:])) if isinstance(target, list) else (target, iter(()))
                name = names[index]
                if name in out:
                    _put(out[name], tuple(next(wild) if pat == "*" else pat for pat in pattern), value)


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
        if raw is not None and not name.startswith(GROUP_PREFIX):
            out[name] = decode_field(name, raw, fields)
    if out:
        for group in [n for n in fields if n.startswith(GROUP_PREFIX)]:
            _join_hot(out, decode_field(group, fields[group], fields))
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
        if code in (_BLOB, _OBJECT_BLOB):
            blob = fields.get(data.decode())
            if blob is None:
                raise StateFormatError(f"state field {name!r} refers to {data.decode()!r}, which is not stored")
            if code == _BLOB:
                return _array_from(blob)
            return msgpack.unpackb(blob, ext_hook=ext, raw=False, strict_map_key=False)
        return msgpack.ExtType(code, data)

    return msgpack.unpackb(raw[4:], ext_hook=ext, raw=False, strict_map_key=False)


def changed_fields(new: Mapping[str, bytes], written: Mapping[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """What a checkpoint writes: fields whose bytes differ from the stored ones, and stored fields to delete."""
    changed = {k: v for k, v in new.items() if written.get(k) != v}
    gone = [k for k in written if k not in new]
    return changed, gone
