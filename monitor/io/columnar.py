"""A decoder compiled from a (writer, reader) schema pair straight into columns: one numba pass over a batch.

`compile_program` turns a flat record schema into a small table of operations (one per writer field, one per
union branch); `_run` reads every payload of a batch with it, writing each reader field into a column
(`monitor.core.columns.RawColumn`): per record a tag (what fastavro would return) and the value, ints and
floats as such, strings and bytes as (start, length) spans of the batch buffer, enums as the reader's symbol
index. The checks read views of the columns (floats with a null mask, category codes in order of first
appearance, `RawColumn.categories`), so they count categories with `bincount` and hash ids once per distinct
id, without a Python object per record.

It never guesses. A record it is not sure of (truncated, a bad union or enum index, invalid UTF-8, a timestamp
fastavro cannot represent, trailing bytes, a branch that does not resolve) is flagged, and the caller decodes
that record with fastavro (`AvroDecoder.decode`) for the exact dead-letter reason, or its values. A schema with
anything it does not read (nested records, arrays, maps, decimals, named-type references, aliases) raises
`Unsupported`, and the caller uses fastavro for the whole topic (or, for a writer schema by registry id, for
the records written with it). `tests/test_columnar.py` holds it to fastavro on
generated schemas and records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from monitor.core.columns import (
    TAG_BOOL,
    TAG_BYTES,
    TAG_ENUM,
    TAG_FLOAT,
    TAG_INT,
    TAG_NULL,
    TAG_STR,
    Column,
    RawColumn,
)
from monitor.errors import DecodeError
from monitor.io.avro import WIRE_HEADER, WIRE_MAGIC, AvroDecoder

# Operations (column 0 of a program row).
T_NULL, T_BOOL, T_INT, T_LONG, T_FLOAT, T_DOUBLE, T_STRING, T_BYTES, T_ENUM, T_FIXED, T_UNION, T_ERR = range(12)
# Flags of a record (0: decoded here).
OK, FLAGGED = 0, 1

_PRIMITIVES = {"null": T_NULL, "boolean": T_BOOL, "int": T_INT, "long": T_LONG, "float": T_FLOAT,
               "double": T_DOUBLE, "string": T_STRING, "bytes": T_BYTES}
# Logical types read here: (base type, the range fastavro can turn into a date/datetime).
_LOGICAL = {
    "timestamp-millis": ("long", -62_135_596_800_000, 253_402_300_799_999),
    "timestamp-micros": ("long", -62_135_596_800_000_000, 253_402_300_799_999_999),
    "local-timestamp-millis": ("long", -62_135_596_800_000, 253_402_300_799_999),
    "local-timestamp-micros": ("long", -62_135_596_800_000_000, 253_402_300_799_999_999),
    "date": ("int", -719_162, 2_932_896),
}
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class Unsupported(Exception):
    """The schema has something this decoder does not read: use fastavro for the topic."""


@dataclass(frozen=True, slots=True)
class Program:
    ops: np.ndarray  # int64 (k, 6): op, column, p1, p2, p3, p4
    columns: tuple[Column, ...]
    defaults: tuple[tuple[int, tuple[int, Any] | None], ...]  # reader fields the writer lacks: (tag, value)
    enum_maps: np.ndarray  # int64: writer symbol index -> reader symbol index (-1: unresolvable), concatenated


# -- compiling -----------------------------------------------------------------------------------------------


def _norm(t: Any) -> Any:
    """A type as a name (primitives), a dict (enum, fixed, logical), or a list (union)."""
    if isinstance(t, dict) and t.get("type") in _PRIMITIVES and "logicalType" not in t:
        return t["type"]
    return t


def _kind(t: Any) -> str:
    t = _norm(t)
    if isinstance(t, list):
        return "union"
    if isinstance(t, str):
        if t not in _PRIMITIVES:
            raise Unsupported(f"named type reference {t}")
        return t
    if not isinstance(t, dict):
        raise Unsupported(f"type {t!r}")
    if "logicalType" in t:
        logical = t["logicalType"]
        if logical not in _LOGICAL or t.get("type") != _LOGICAL[logical][0]:
            raise Unsupported(f"logical type {logical}")
        return f"logical:{logical}"
    kind = t.get("type")
    if kind in ("enum", "fixed"):
        if t.get("aliases"):
            raise Unsupported("aliases")
        return str(kind)
    raise Unsupported(f"type {kind}")


def _base(kind: str) -> str:
    return _LOGICAL[kind[8:]][0] if kind.startswith("logical:") else kind


_PROMOTE = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
            ("float", "double"), ("string", "bytes"), ("bytes", "string")}


def _matches(w: Any, r: Any) -> bool:
    """fastavro's `match_types` for the types read here."""
    wk, rk = _kind(w), _kind(r)
    if wk == "union" or rk == "union":
        return True
    if wk in ("enum", "fixed") or rk in ("enum", "fixed"):
        if wk != rk:
            return False
        if wk == "fixed" and w["size"] != r["size"]:
            return False
        return bool(w["name"].split(".")[-1] == r["name"].split(".")[-1])
    wb, rb = _base(wk), _base(rk)
    return wb == rb or (wb, rb) in _PROMOTE


class _Builder:
    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns
        self.ops: list[list[int]] = []
        self.enum_maps: list[int] = []

    def add(self, op: int, col: int = -1, p1: int = 0, p2: int = 0, p3: int = 0, p4: int = 0) -> None:
        self.ops.append([op, col, p1, p2, p3, p4])

    def value(self, w: Any, r: Any | None, col: int) -> None:
        """Ops reading one value of writer type `w` into column `col` as reader type `r` (None: skip it)."""
        wk = _kind(w)
        if wk == "union":
            branches = _norm(w)
            self.add(T_UNION, col, len(branches))
            at = len(self.ops)
            for b in branches:
                self.branch(b, r, col)
            assert len(self.ops) == at + len(branches), "one op per union branch"
            return
        self.branch(w, r, col)

    def branch(self, w: Any, r: Any | None, col: int) -> None:
        """One op: a non-union writer type resolved against the reader (first matching reader branch)."""
        wk = _kind(w)
        if wk == "union":
            raise Unsupported("a union inside a union")
        if r is not None and col >= 0:
            rn = _norm(r)
            if isinstance(rn, list):
                match = next((b for b in rn if _matches(w, b)), None)
            else:
                match = rn if _matches(w, rn) else None
            if match is None:
                self.add(T_ERR, col)  # fastavro raises SchemaResolutionError when it meets this branch
                return
            r = match
        base = _base(wk)
        if col >= 0 and base != "null":
            logical = wk[8:] if wk.startswith("logical:") else None
            if logical != self.columns[col].logical:
                raise Unsupported("writer and reader differ in logical type")
        if wk == "enum":
            symbols = list(w["symbols"])
            target = list(r["symbols"]) if r is not None and col >= 0 else symbols
            default = r.get("default") if r is not None and col >= 0 else None
            mapping = [target.index(s) if s in target else (target.index(default) if default in target else -1)
                       for s in symbols]
            self.add(T_ENUM, col, len(self.enum_maps), len(symbols))
            self.enum_maps += mapping
            return
        reader_base = _base(_kind(r)) if r is not None and col >= 0 else base
        if wk == "fixed":
            self.add(T_FIXED, col, 0, int(w["size"]))
            return
        if base in ("string", "bytes"):  # p1: comes out as str; p2: must be UTF-8 (read or returned as a str)
            text = reader_base == "string"
            self.add(_PRIMITIVES[base], col, int(text), int(text or base == "string"))
            return
        # A logical type follows the writer; its range is checked (fastavro raises outside it).
        lo, hi = (_LOGICAL[wk[8:]][1:] if wk.startswith("logical:") else
                  _INT32 if base == "int" else _INT64 if base == "long" else (0, 0))
        to_float = base in ("int", "long") and reader_base in ("float", "double") and not wk.startswith("logical:")
        self.add(_PRIMITIVES[base], col, 1 if to_float else 0, 0, lo, hi)


def _non_null(t: Any) -> Any:
    t = _norm(t)
    if isinstance(t, list):
        rest = [x for x in t if _norm(x) != "null"]
        return rest[0] if len(rest) == 1 else None
    return t


def compile_program(writer: Mapping[str, Any], reader: Mapping[str, Any] | None) -> Program:
    """The ops reading records of `writer` as `reader` (None: the writer itself). Raises `Unsupported`."""
    reader = writer if reader is None else reader
    if writer.get("type") != "record" or reader.get("type") != "record":
        raise Unsupported("not a record")
    if writer.get("name", "").split(".")[-1] != reader.get("name", "").split(".")[-1] and reader is not writer:
        raise Unsupported("record names differ")
    r_fields = list(reader.get("fields", []))
    index = {f["name"]: i for i, f in enumerate(r_fields)}
    w_names = {f["name"] for f in writer.get("fields", [])}
    columns: list[Column] = []
    defaults: list[tuple[int, tuple[int, Any] | None]] = []
    for f in r_fields:
        if f.get("aliases"):
            raise Unsupported("field aliases")
        t = f["type"]
        _kind(t)  # raises for what is not read here
        if isinstance(_norm(t), list):
            for b in _norm(t):
                if _kind(b) == "union":
                    raise Unsupported("a union inside a union")
        nn = _non_null(t)
        logical = None
        symbols = None
        if nn is not None and _kind(nn).startswith("logical:"):
            logical = _kind(nn)[8:]
        if nn is not None and _kind(nn) == "enum":
            symbols = tuple(nn["symbols"])
        columns.append(Column(f["name"], logical, symbols))
        if f["name"] not in w_names:
            defaults.append((len(columns) - 1, _default(f, nn)))
    b = _Builder(columns)
    for f in writer.get("fields", []):
        col = index.get(f["name"], -1)
        b.value(f["type"], r_fields[col]["type"] if col >= 0 else None, col)
    return Program(np.array(b.ops, dtype=np.int64).reshape(-1, 6), tuple(columns), tuple(defaults),
                   np.array(b.enum_maps or [0], dtype=np.int64))


def _default(f: Mapping[str, Any], non_null: Any) -> tuple[int, Any] | None:
    """A reader field the writer lacks: its default as (tag, value), or None without one (fastavro then raises
    for every record). Defaults fastavro turns into something else (strings, logical types) are not read here."""
    if "default" not in f:
        return None
    d = f["default"]
    kind = _kind(f["type"])
    if kind == "union":
        if d is None and _norm(f["type"])[0] == "null":
            return TAG_NULL, None
        raise Unsupported("a union's non-null default")
    if kind == "boolean" and isinstance(d, bool):
        return TAG_BOOL, int(d)
    if kind in ("int", "long") and isinstance(d, int) and not isinstance(d, bool):
        return TAG_INT, d
    if kind in ("float", "double") and isinstance(d, float):
        return TAG_FLOAT, d
    if kind == "enum" and non_null is not None and d in non_null["symbols"]:
        return TAG_ENUM, list(non_null["symbols"]).index(d)
    raise Unsupported(f"a default of type {kind}")


# -- the compiled pass ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _varint(buf: np.ndarray, pos: int, end: int) -> tuple[int, int, bool]:
    """A zigzag varint at `pos`: (value, next position, ok). At most 10 bytes; the 10th may only hold bit 63."""
    result = np.uint64(0)
    shift = 0
    while pos < end and shift < 70:
        b = np.uint64(buf[pos])
        pos += 1
        if shift == 63 and b > 1:
            return 0, pos, False
        result |= (b & np.uint64(0x7F)) << np.uint64(shift)
        if b < 0x80:
            value = np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1))
            return int(value), pos, True
        shift += 7
    return 0, pos, False


@njit(cache=True, nogil=True)
def _utf8_ok(buf: np.ndarray, pos: int, end: int) -> bool:
    """Strict UTF-8 as Python decodes it: no overlong forms, no surrogates, nothing past U+10FFFF."""
    while pos < end:
        c = buf[pos]
        if c < 0x80:
            pos += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n = 1
            lo, hi = 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            n = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            n = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if pos + n >= end:
            return False
        if not (lo <= buf[pos + 1] <= hi):
            return False
        for k in range(2, n + 1):
            if not (0x80 <= buf[pos + k] <= 0xBF):
                return False
        pos += n + 1
    return True


@njit(cache=True, nogil=True)
def _run(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray, ops: np.ndarray,
         enum_maps: np.ndarray, ivals: np.ndarray, fvals: np.ndarray, tags: np.ndarray, flags: np.ndarray) -> None:
    """Decode the records `rows` (indexes into starts/ends) with `ops`, into column `c`, row `i` of
    ivals (int values, span starts, enum indexes), fvals (floats, span lengths as floats are not used),
    tags. A record not decoded here gets flags[i] = FLAGGED."""
    n_ops = ops.shape[0]
    for r in range(rows.shape[0]):
        i = rows[r]
        pos = starts[i]
        end = ends[i]
        ok = True
        pc = 0
        while pc < n_ops and ok:
            op = ops[pc, 0]
            col = ops[pc, 1]
            nxt = pc + 1
            if op == T_UNION:
                branch, pos, ok = _varint(buf, pos, end)
                if not ok or branch < 0 or branch >= ops[pc, 2]:
                    ok = False
                    break
                nxt = pc + 1 + ops[pc, 2]
                pc = pc + 1 + branch
                op = ops[pc, 0]
                col = ops[pc, 1]
            if op == T_NULL:
                if col >= 0:
                    tags[col, i] = TAG_NULL
            elif op == T_BOOL:
                if pos >= end:
                    ok = False
                    break
                if col >= 0:
                    ivals[col, i] = 1 if buf[pos] != 0 else 0
                    tags[col, i] = TAG_BOOL
                pos += 1
            elif op in (T_INT, T_LONG):
                v, pos, ok = _varint(buf, pos, end)
                if not ok or v < ops[pc, 4] or v > ops[pc, 5]:
                    ok = False
                    break
                if col >= 0:
                    if ops[pc, 2] == 1:
                        fvals[col, i] = float(v)
                        tags[col, i] = TAG_FLOAT
                    else:
                        ivals[col, i] = v
                        tags[col, i] = TAG_INT
            elif op in (T_FLOAT, T_DOUBLE):
                size = 4 if op == T_FLOAT else 8
                if pos + size > end:
                    ok = False
                    break
                if col >= 0:
                    if size == 4:
                        fvals[col, i] = float(buf[pos:pos + 4].copy().view(np.float32)[0])
                    else:
                        fvals[col, i] = buf[pos:pos + 8].copy().view(np.float64)[0]
                    tags[col, i] = TAG_FLOAT
                pos += size
            elif op in (T_STRING, T_BYTES, T_FIXED):
                if op == T_FIXED:
                    length = ops[pc, 3]
                else:
                    length, pos, ok = _varint(buf, pos, end)
                    if not ok or length < 0:
                        ok = False
                        break
                if pos + length > end:
                    ok = False
                    break
                if ops[pc, 3] == 1 and op != T_FIXED and not _utf8_ok(buf, pos, pos + length):
                    ok = False
                    break
                if col >= 0:
                    ivals[col, i] = pos
                    fvals[col, i] = float(length)
                    tags[col, i] = TAG_STR if ops[pc, 2] == 1 else TAG_BYTES
                pos += length
            elif op == T_ENUM:
                k, pos, ok = _varint(buf, pos, end)
                if not ok or k < 0 or k >= ops[pc, 3]:
                    ok = False
                    break
                if col >= 0:
                    target = enum_maps[ops[pc, 2] + k]
                    if target < 0:
                        ok = False
                        break
                    ivals[col, i] = target
                    tags[col, i] = TAG_ENUM
            else:  # T_ERR
                ok = False
                break
            pc = nxt
        if not ok or pos != end:
            flags[i] = FLAGGED




# -- a batch -------------------------------------------------------------------------------------------------


def concat(payloads: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One buffer of all payloads, with each one's start and end."""
    lengths = np.fromiter((0 if p is None else len(p) for p in payloads), dtype=np.int64, count=len(payloads))
    buf = np.frombuffer(b"".join(p or b"" for p in payloads), dtype=np.uint8)
    ends = np.cumsum(lengths)
    return buf, ends - lengths, ends


@dataclass(frozen=True, slots=True)
class BatchColumns:
    """A decoded batch: each reader field as a column over all records, which records decoded, why not."""

    columns: dict[str, RawColumn]
    valid: np.ndarray  # bool per record
    errors: dict[int, DecodeError]  # record -> why it is not valid
    schema_ids: np.ndarray  # int64 per record, -1 without one (plain Avro, or no readable header)


class ColumnarDecoder:
    """Decodes batches of one topic's payloads into columns, with `AvroDecoder` (fastavro) for every record the
    compiled pass flags (so reasons and values are fastavro's) and for schemas it does not read."""

    def __init__(self, decoder: AvroDecoder) -> None:
        self.decoder = decoder
        self.reader = decoder.reader_schema
        self._programs: dict[int, Program | None] = {}  # writer schema id (-1: plain) -> program
        if self.reader is None:
            raise Unsupported("no reader schema")
        self.names = [f["name"] for f in self.reader["fields"]]
        plain = self._program(-1)  # raises Unsupported for a reader schema this decoder does not read
        assert plain is not None
        self.plain: Program = plain

    def _program(self, schema_id: int) -> Program | None:
        if schema_id not in self._programs:
            try:
                writer = self.reader if schema_id < 0 else self.decoder._writer_schema(schema_id)
                self._programs[schema_id] = compile_program(writer, self.reader)  # type: ignore[arg-type]
            except Unsupported:
                if schema_id < 0:
                    raise
                self._programs[schema_id] = None
        return self._programs[schema_id]

    def decode(self, payloads: Sequence[bytes | None]) -> BatchColumns:
        n = len(payloads)
        buf, starts, ends = concat(payloads)
        lengths = ends - starts
        flags = ((lengths == 0) | (lengths > self.decoder.max_payload_bytes)).astype(np.uint8)
        schema_ids = np.full(n, -1, dtype=np.int64)
        k = len(self.names)
        ivals = np.zeros((k, n), dtype=np.int64)
        fvals = np.zeros((k, n), dtype=np.float64)
        tags = np.zeros((k, n), dtype=np.uint8)
        if self.decoder.wire_format == "confluent":
            header = WIRE_HEADER.size
            ok = flags == 0
            ok &= lengths > header
            heads = np.flatnonzero(ok)
            if len(heads):
                ok[heads] &= buf[starts[heads]] == WIRE_MAGIC
            heads = np.flatnonzero(ok)
            if len(heads):
                raw = np.stack([buf[starts[heads] + j].astype(np.int64) for j in range(1, 5)])
                schema_ids[heads] = (raw[0] << 24) | (raw[1] << 16) | (raw[2] << 8) | raw[3]
            flags[~ok] = FLAGGED
            for sid in np.unique(schema_ids[heads]).tolist():
                rows = heads[schema_ids[heads] == sid]
                try:
                    program = self._program(int(sid))
                except DecodeError:  # an unknown schema id: each record gets fastavro's (the registry's) error
                    program = None
                if program is None:
                    flags[rows] = FLAGGED
                    continue
                self._run(program, buf, starts + header, ends, rows, ivals, fvals, tags, flags)
        else:
            rows = np.flatnonzero(flags == 0)
            self._run(self.plain, buf, starts, ends, rows, ivals, fvals, tags, flags)
        columns = {name: RawColumn(col, tags[c], ivals[c], fvals[c], buf)
                   for c, (name, col) in enumerate(zip(self.names, self.plain.columns, strict=True))}
        errors: dict[int, DecodeError] = {}
        for i in np.flatnonzero(flags).tolist():  # fastavro decides, record by record
            try:
                row = self.decoder.decode(payloads[i])
            except DecodeError as exc:
                errors[i] = exc
                continue
            for name, column in columns.items():
                column.objects[i] = row.get(name)
        valid = np.ones(n, dtype=bool)
        valid[list(errors)] = False
        return BatchColumns(columns, valid, errors, schema_ids)

    @staticmethod
    def _run(program: Program, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray,
             ivals: np.ndarray, fvals: np.ndarray, tags: np.ndarray, flags: np.ndarray) -> None:
        _run(buf, starts, ends, rows, program.ops, program.enum_maps, ivals, fvals, tags, flags)
        for c, default in program.defaults:
            if default is None:  # no default: fastavro raises for each record
                flags[rows] = FLAGGED
                continue
            tag, value = default
            tags[c, rows] = tag
            if tag == TAG_FLOAT:
                fvals[c, rows] = value
            elif tag != TAG_NULL:
                ivals[c, rows] = value
