"""A batch's fields as columns: what the compiled decoder (`monitor.io.columnar`) writes, and the views the
checks read (floats with a null mask, category codes, event times, id hashes) without a Python object per
record.

A `RawColumn` holds, per record, a tag saying what fastavro would have returned (null, int, float, bool, str,
bytes, enum symbol) and the value: ints in `ivals`, floats in `fvals`, strings and bytes as spans of the batch
buffer (start in `ivals`, length in `fvals`), enum symbols as indexes. Records the compiled decoder left to
fastavro keep fastavro's value in `objects`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from numba import njit

from monitor.core.categories import category_text

TAG_NULL, TAG_INT, TAG_FLOAT, TAG_BOOL, TAG_STR, TAG_BYTES, TAG_ENUM = range(7)
_EXACT = 2**53  # integers up to this convert to float64 exactly


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)


def to_number(value: Any) -> float:
    """A numeric field's value as a float, including what fastavro returns for logical types: timestamps
    (-millis, -micros, local-) as epoch milliseconds, a date as days since the epoch (Avro's `int`), a time of
    day as milliseconds since midnight, a decimal as its value.

    >>> from decimal import Decimal
    >>> to_number(datetime(1970, 1, 1, 0, 0, 1, 500, tzinfo=UTC)), to_number(date(1970, 1, 11))
    (1000.5, 10.0)
    >>> to_number(time(0, 1, 2)), to_number(Decimal("12.50")), to_number(True)
    (62000.0, 12.5, 1.0)
    """
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH).total_seconds() * 1000.0
    if isinstance(value, date):
        return float((value - _EPOCH_DAY).days)
    if isinstance(value, time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1000.0 + value.microsecond / 1000.0
    return float(value)


def event_time_ms(value: Any) -> int | None:
    """Event times arrive as epoch ms (long) or, with a timestamp-millis logical type, as datetimes."""
    if value is None:
        return None
    if isinstance(value, datetime):  # exact integer milliseconds (a naive, local-timestamp value read as UTC)
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


@dataclass(frozen=True, slots=True)
class Column:
    """A reader field: its logical type (None, timestamp-*, local-timestamp-*, date) and enum symbols."""

    name: str
    logical: str | None = None
    symbols: tuple[str, ...] | None = None


@dataclass(slots=True)
class RawColumn:
    column: Column
    tags: np.ndarray  # uint8, TAG_*
    ivals: np.ndarray  # int64
    fvals: np.ndarray  # float64
    buf: np.ndarray  # uint8: the batch buffer the spans point into
    objects: dict[int, Any] = field(default_factory=dict)  # row -> fastavro's value (rows it decoded)
    _floats: tuple[np.ndarray, np.ndarray] | None = None  # `floats()`, once (limits and features both read it)

    def __len__(self) -> int:
        return len(self.tags)

    def take(self, rows: np.ndarray) -> RawColumn:
        """The column at `rows` (int64 indexes, increasing)."""
        objects = {}
        if self.objects:
            where = {int(r): k for k, r in enumerate(rows.tolist())}
            objects = {where[i]: v for i, v in self.objects.items() if i in where}
        return RawColumn(self.column, self.tags[rows], self.ivals[rows], self.fvals[rows], self.buf, objects)

    def value(self, i: int) -> Any:
        """What fastavro returned for record `i` (for the few per-record uses: a finding's version, ...)."""
        if i in self.objects:
            return self.objects[i]
        tag = int(self.tags[i])
        if tag == TAG_NULL:
            return None
        if tag == TAG_BOOL:
            return bool(self.ivals[i])
        if tag == TAG_INT:
            return logical_value(self.column.logical, int(self.ivals[i]))
        if tag == TAG_FLOAT:
            return float(self.fvals[i])
        if tag == TAG_ENUM:
            assert self.column.symbols is not None
            return self.column.symbols[int(self.ivals[i])]
        start = int(self.ivals[i])
        raw = bytes(self.buf[start:start + int(self.fvals[i])])
        return raw.decode() if tag == TAG_STR else raw

    def values(self) -> list[Any]:
        return [self.value(i) for i in range(len(self))]

    def floats(self) -> tuple[np.ndarray, np.ndarray]:
        """As `numeric_column` has it: float64, None as NaN (and its mask); timestamps as epoch ms (to_number),
        dates as days. Computed once; do not change the arrays."""
        if self._floats is None:
            self._floats = self._to_floats()
        return self._floats

    def _to_floats(self) -> tuple[np.ndarray, np.ndarray]:
        tags = self.tags
        out = np.where(tags == TAG_FLOAT, self.fvals, np.nan)
        ints = (tags == TAG_INT) | (tags == TAG_BOOL)
        logical = self.column.logical
        if logical is None or logical == "date":
            out[ints] = self.ivals[ints].astype(np.float64)
        else:  # to_number(datetime): total seconds (micros / 1e6, correctly rounded), then * 1000
            micros = self.ivals[ints] * (1000 if logical.endswith("millis") else 1)
            converted = micros.astype(np.float64) / 1e6 * 1000.0
            big = np.flatnonzero(np.abs(micros) > _EXACT)  # beyond exact floats: Python's exact division
            converted[big] = [m / 10**6 * 1000.0 for m in micros[big].tolist()]
            out[ints] = converted
        missing = tags == TAG_NULL
        if self.objects:
            for i, v in self.objects.items():
                out[i] = math.nan if v is None else to_number(v)
                missing[i] = v is None
        return out, missing

    def event_times(self) -> tuple[np.ndarray, np.ndarray]:
        """`event_time_ms` of each value as int64, and where it is not None (an int or a timestamp)."""
        logical = self.column.logical
        ints = self.tags == TAG_INT
        out = np.zeros(len(self), dtype=np.int64)
        present = ints.copy() if logical != "date" else np.zeros(len(self), dtype=bool)
        if logical is None:
            out[ints] = self.ivals[ints]
        elif logical != "date":
            v = self.ivals[ints]
            out[ints] = v if logical.endswith("millis") else v // 1000
        if self.objects:
            for i, obj in self.objects.items():
                t = event_time_ms(obj)
                out[i], present[i] = (0, False) if t is None else (t, True)
        return out, present

    def maybe_longer_than(self, characters: int) -> np.ndarray:
        """Where a str value may have more than `characters` characters (its UTF-8 bytes do, or it is one of
        fastavro's); enum symbols too."""
        out = ((self.tags == TAG_STR) & (self.fvals > characters)) | (self.tags == TAG_ENUM)
        if self.column.symbols is not None:
            long_symbols = np.array([len(s) > characters for s in self.column.symbols])
            out &= (self.tags != TAG_ENUM) | long_symbols[np.where(self.tags == TAG_ENUM, self.ivals, 0)]
        for i in self.objects:
            out[i] = True
        return np.asarray(out, dtype=bool)

    def text_hashes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """`zlib.crc32(category_text(value).encode())` of each value and where there is one, compiled, for a
        column of strings or of plain integers (an id field); None for any other column (the caller hashes
        `categories()`'s names)."""
        if self.objects or self.column.logical is not None:
            return None
        tags = self.tags
        present = tags != TAG_NULL
        if bool(((tags == TAG_STR) | ~present).all()):  # a str's UTF-8 bytes are the buffer's span
            return crc32_spans(self.buf, self.ivals, self.fvals.astype(np.int64), present, CRC_TABLE), present
        if bool(((tags == TAG_INT) | ~present).all()):
            return crc32_decimals(self.ivals, present, CRC_TABLE), present
        return None

    def categories(self) -> tuple[np.ndarray, list[str]]:
        """Codes (-1: missing) of `category_text(value)` in order of first appearance, and the names of the
        codes."""
        tags = self.tags
        if not self.objects:
            present = tags != TAG_NULL
            kinds = set(np.unique(tags[present]).tolist())
            if kinds <= {TAG_STR}:
                codes, firsts = dict_encode(self.buf, self.ivals, self.fvals.astype(np.int64), present)
                return codes, [self.value(int(i)) for i in firsts.tolist()]
            if kinds <= {TAG_ENUM}:
                symbols = self.column.symbols
                assert symbols is not None
                return _first_order(self.ivals, present, symbols.__getitem__)
            if kinds <= {TAG_INT} and self.column.logical is None:
                return _first_order(self.ivals, present, str)
        index: dict[str, int] = {}
        codes = np.fromiter((-1 if v is None else index.setdefault(category_text(v), len(index))
                             for v in self.values()), dtype=np.int64, count=len(self))
        return codes, list(index)


def fill_floats(columns: list[RawColumn]) -> np.ndarray | None:
    """`floats()` of many columns in one pass: the plain numeric ones (no logical type, nothing fastavro
    decoded, not converted yet) as rows of one matrix, each column's `floats()` a row of it. Returns the
    matrix (None if no column qualified)."""
    plain = [c for c in columns if c._floats is None and c.column.logical is None and not c.objects]
    if not plain:
        return None
    tags = np.stack([c.tags for c in plain])
    out = np.where(tags == TAG_FLOAT, np.stack([c.fvals for c in plain]), np.nan)
    ints = (tags == TAG_INT) | (tags == TAG_BOOL)
    if ints.any():
        out[ints] = np.stack([c.ivals for c in plain])[ints].astype(np.float64)
    missing = tags == TAG_NULL
    for k, c in enumerate(plain):
        c._floats = (out[k], missing[k])
    return out


def _first_order(ints: np.ndarray, present: np.ndarray, name: Any) -> tuple[np.ndarray, list[str]]:
    """Integer values (where `present`) recoded in order of first appearance (-1 elsewhere), with `name` of
    each distinct value."""
    if not present.any():
        return np.full(len(ints), -1, dtype=np.int64), []
    uniq, first, inverse = np.unique(ints[present], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    codes = np.full(len(ints), -1, dtype=np.int64)
    codes[present] = rank[inverse.reshape(-1)]
    return codes, [str(name(int(k))) for k in uniq[order].tolist()]


def logical_value(logical: str | None, v: int) -> Any:
    """fastavro's value of a logical type from its underlying int."""
    if logical is None:
        return v
    if logical == "date":
        return date(1970, 1, 1) + timedelta(days=v)
    micros = v * 1000 if logical.endswith("millis") else v
    epoch = datetime(1970, 1, 1) if logical.startswith("local-") else datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + timedelta(microseconds=micros)


@njit(cache=True, nogil=True)
def dict_encode(buf: np.ndarray, spans: np.ndarray, lengths: np.ndarray, present: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Codes of byte strings (buf[spans[i]:spans[i] + lengths[i]]) in order of first appearance (-1 where not
    present), and the row where each code first appears. An open-addressing table of FNV-1a hashes."""
    n = spans.shape[0]
    size = 64
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, dtype=np.int64)  # slot -> code
    firsts = np.empty(n, dtype=np.int64)
    codes = np.full(n, -1, dtype=np.int64)
    k = 0
    for i in range(n):
        if not present[i]:
            continue
        s, ln = spans[i], lengths[i]
        h = np.uint64(14695981039346656037)
        for j in range(s, s + ln):
            h = (h ^ np.uint64(buf[j])) * np.uint64(1099511628211)
        slot = np.int64(h & np.uint64(size - 1))
        while True:
            code = table[slot]
            if code < 0:
                table[slot] = k
                firsts[k] = i
                codes[i] = k
                k += 1
                break
            f = firsts[code]
            if lengths[f] == ln:
                fs = spans[f]
                same = True
                for j in range(ln):
                    if buf[fs + j] != buf[s + j]:
                        same = False
                        break
                if same:
                    codes[i] = code
                    break
            slot = (slot + 1) & (size - 1)
    return codes, firsts[:k].copy()


@njit(cache=True, nogil=True)
def recent_duplicates(hashes: np.ndarray, present: np.ndarray, ring: np.ndarray, last: Any, filled: int,
                      pos: int) -> tuple[np.ndarray, int, int]:
    """`RecentIds.duplicates` over hashes: a ring of the last `len(ring)` hashes and, per hash, how many ids
    had been seen when it was last seen (`last`, a numba typed dict)."""
    size = ring.shape[0]
    out = np.zeros(hashes.shape[0], dtype=np.bool_)
    seen = pos
    for i in range(hashes.shape[0]):
        if not present[i]:
            continue
        h = hashes[i]
        prev = last.get(h, -1)
        out[i] = prev >= 0 and seen - prev < size
        slot = seen % size
        if filled == size:
            old = np.int64(ring[slot])
            if last.get(old, -2) == seen - size:
                del last[old]
        ring[slot] = h
        last[h] = seen
        seen += 1
        filled = min(filled + 1, size)
    return out, filled, seen


def _crc_table() -> np.ndarray:
    """The CRC-32 (IEEE 802.3, zlib's) lookup table."""
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else c >> 1
        table[i] = c
    return table


CRC_TABLE = _crc_table()


@njit(cache=True, nogil=True)
def crc32_spans(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, present: np.ndarray,
                table: np.ndarray) -> np.ndarray:
    """`zlib.crc32` of each byte string buf[starts[i]:starts[i] + lengths[i]] (0 where not present)."""
    out = np.zeros(starts.shape[0], dtype=np.int64)
    for i in range(starts.shape[0]):
        if not present[i]:
            continue
        c = np.uint32(0xFFFFFFFF)
        for j in range(starts[i], starts[i] + lengths[i]):
            c = table[(c ^ np.uint32(buf[j])) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        out[i] = np.int64(c ^ np.uint32(0xFFFFFFFF))
    return out


@njit(cache=True, nogil=True)
def crc32_decimals(ints: np.ndarray, present: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`zlib.crc32(str(v).encode())` of each int64 (0 where not present), without making the strings."""
    out = np.zeros(ints.shape[0], dtype=np.int64)
    digits = np.empty(20, dtype=np.uint8)
    for i in range(ints.shape[0]):
        if not present[i]:
            continue
        v = ints[i]
        negative = v < 0
        # the magnitude as unsigned (|int64 min| does not fit in int64)
        m = np.uint64(-(v + 1)) + np.uint64(1) if negative else np.uint64(v)
        k = 0
        while True:
            digits[k] = np.uint8(48 + m % np.uint64(10))
            m //= np.uint64(10)
            k += 1
            if m == 0:
                break
        c = np.uint32(0xFFFFFFFF)
        if negative:
            c = table[(c ^ np.uint32(45)) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        for j in range(k - 1, -1, -1):
            c = table[(c ^ np.uint32(digits[j])) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        out[i] = np.int64(c ^ np.uint32(0xFFFFFFFF))
    return out
