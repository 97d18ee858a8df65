"""The compiled columnar decoder agrees with fastavro on every record: generated schemas (nullable numerics,
strings, bytes, enums, fixed, booleans, logical types, defaults, resolution from a writer schema), generated
records, and damaged payloads."""

from __future__ import annotations

import io
import math
import zlib
from typing import Any

import numpy as np
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.categories import category_text
from monitor.core.columns import CRC_TABLE, crc32_decimals, crc32_spans, event_time_ms
from monitor.core.partition import numeric_column
from monitor.errors import DecodeError
from monitor.io.avro import AvroDecoder, encode_confluent
from monitor.io.columnar import ColumnarDecoder, Unsupported, compile_program

PRIMS = ["boolean", "int", "long", "float", "double", "string", "bytes"]
LOGICAL = [("long", "timestamp-millis"), ("long", "timestamp-micros"), ("long", "local-timestamp-millis"),
           ("int", "date")]
SYMBOLS = ["A", "B", "C", "D"]


def base_types() -> st.SearchStrategy[Any]:
    enum = st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=4, unique=True).map(
        lambda s: {"type": "enum", "name": "E", "symbols": s})
    fixed = st.integers(0, 4).map(lambda n: {"type": "fixed", "name": "F", "size": n})
    logical = st.sampled_from(LOGICAL).map(lambda t: {"type": t[0], "logicalType": t[1]})
    return st.one_of(st.sampled_from(PRIMS), enum, fixed, logical)


def field_type() -> st.SearchStrategy[Any]:
    return st.one_of(base_types(), base_types().map(lambda t: ["null", t]), base_types().map(lambda t: [t, "null"]),
                     st.just(["null", "long", "string"]))


def _named_once(types: list[Any]) -> list[Any]:
    """Named types (enum E, fixed F) get a name per field so each is defined once."""
    out = []
    for k, t in enumerate(types):
        def rename(x: Any, k: int = k) -> Any:
            if isinstance(x, dict) and x.get("type") in ("enum", "fixed"):
                return {**x, "name": f"{x['type']}{k}"}
            return x
        out.append([rename(x) for x in t] if isinstance(t, list) else rename(t))
    return out


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    types = _named_once(draw(st.lists(field_type(), min_size=1, max_size=6)))
    return {"type": "record", "name": "R", "fields": [{"name": f"x{k}", "type": t} for k, t in enumerate(types)]}


def value_for(t: Any) -> st.SearchStrategy[Any]:
    if isinstance(t, list):
        return st.one_of(*[value_for(x) for x in t])
    if isinstance(t, dict):
        if t["type"] == "enum":
            return st.sampled_from(t["symbols"])
        if t["type"] == "fixed":
            return st.binary(min_size=t["size"], max_size=t["size"])
        lo, hi = {"timestamp-millis": (-62_135_596_800_000, 253_402_300_799_999),
                  "local-timestamp-millis": (-62_135_596_800_000, 253_402_300_799_999),
                  "timestamp-micros": (-62_135_596_800_000_000, 253_402_300_799_999_999),
                  "date": (-719_162, 2_932_896)}[t["logicalType"]]
        return st.integers(lo, hi)  # written through a plain writer schema (see `encode`)
    return {
        "null": st.none(), "boolean": st.booleans(), "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(1_600_000_000_000, 1_900_000_000_000)),
        "float": st.floats(width=32), "double": st.floats(allow_nan=True),
        "string": st.text(max_size=6), "bytes": st.binary(max_size=6),
    }[t]


def plain(t: Any) -> Any:
    """The type without logical types (to write raw ints)."""
    if isinstance(t, list):
        return [plain(x) for x in t]
    if isinstance(t, dict) and "logicalType" in t:
        return t["type"]
    return t


def encode(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    raw = {**schema, "fields": [{**f, "type": plain(f["type"])} for f in schema["fields"]]}
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(raw), record)
    return buf.getvalue()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return type(a) is type(b) and a == b


def check(decoder: AvroDecoder, payloads: list[bytes | None]) -> ColumnarDecoder:
    """Every record: valid where fastavro decodes it, with fastavro's values and every view of them; the same
    reason where it does not."""
    cd = ColumnarDecoder(decoder)
    out = cd.decode(payloads)
    for i, p in enumerate(payloads):
        try:
            row = decoder.decode(p)
        except DecodeError as exc:
            assert not out.valid[i]
            assert out.errors[i].reason == exc.reason
            continue
        assert out.valid[i], i
        for name, col in out.columns.items():
            assert same(col.value(i), row.get(name)), (name, col.value(i), row.get(name))
    keep = np.flatnonzero(out.valid)
    rows = [decoder.decode(payloads[i]) for i in keep.tolist()]
    for name, col in out.columns.items():
        part = col.take(keep)
        if not any(isinstance(r.get(name), str | bytes) for r in rows):  # a numeric field (or all null)
            want_f, want_m = numeric_column(rows, name)
            got_f, got_m = part.floats()
            assert np.array_equal(got_m, want_m)
            assert np.array_equal(got_f, want_f, equal_nan=True), name
        codes, names = part.categories()
        assert [None if c < 0 else names[c] for c in codes.tolist()] == \
            [None if r.get(name) is None else category_text(r.get(name)) for r in rows]
        assert names == list(dict.fromkeys(category_text(r[name]) for r in rows if r.get(name) is not None))
        hashed = part.text_hashes()  # the id hashes of the duplicate check, where compiled
        if hashed is not None:
            hashes, present = hashed
            assert [int(h) if ok else None for h, ok in zip(hashes.tolist(), present.tolist(), strict=True)] == \
                [None if r.get(name) is None else zlib.crc32(category_text(r.get(name)).encode()) for r in rows]
        times, present = part.event_times()
        assert [t if ok else None for t, ok in zip(times.tolist(), present.tolist(), strict=True)] == \
            [event_time_ms(r.get(name)) for r in rows]
    return cd


def decoder_for(schema: dict[str, Any]) -> AvroDecoder:
    return AvroDecoder(parse_schema(schema))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_agrees_with_fastavro_on_generated_schemas_and_records(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    records = data.draw(st.lists(st.fixed_dictionaries({f["name"]: value_for(f["type"]) for f in schema["fields"]}),
                                 min_size=1, max_size=12))
    payloads: list[bytes | None] = [encode(schema, r) for r in records]
    check(decoder_for(schema), payloads)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_agrees_with_fastavro_on_damaged_payloads(data: st.DataObject) -> None:
    """Truncated, extended and bit-flipped payloads: nothing fastavro refuses is accepted, and the other way."""
    schema = data.draw(schemas())
    records = data.draw(st.lists(st.fixed_dictionaries({f["name"]: value_for(f["type"]) for f in schema["fields"]}),
                                 min_size=1, max_size=6))
    payloads: list[bytes | None] = []
    for r in records:
        p = bytearray(encode(schema, r))
        how = data.draw(st.sampled_from(["cut", "extend", "flip", "bytes", "none"]))
        if how == "cut" and p:
            del p[data.draw(st.integers(0, len(p) - 1)):]
        elif how == "extend":
            p += data.draw(st.binary(min_size=1, max_size=3))
        elif how == "flip" and p:
            k = data.draw(st.integers(0, len(p) - 1))
            p[k] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "bytes":
            p = bytearray(data.draw(st.binary(max_size=20)))
        payloads.append(None if how == "none" else bytes(p))
    check(decoder_for(schema), payloads)


def _resolved_reader(draw: st.DrawFn, writer: dict[str, Any]) -> dict[str, Any]:
    """A reader schema for `writer`: fields dropped, reordered, promoted, added with defaults, enums changed."""
    promote = {"int": ["long", "float", "double"], "long": ["float", "double"], "float": ["double"],
               "string": ["bytes"], "bytes": ["string"]}
    fields = []
    for f in writer["fields"]:
        if draw(st.integers(0, 5)) == 0:
            continue  # dropped: the decoder skips it
        t = f["type"]
        if isinstance(t, str) and t in promote and draw(st.booleans()):
            t = draw(st.sampled_from(promote[t]))
        elif isinstance(t, list) and draw(st.booleans()):  # a nullable field widened the other way round
            t = [x if not (isinstance(x, str) and x in promote) else draw(st.sampled_from(promote[x])) for x in t]
        elif isinstance(t, dict) and t.get("type") == "enum" and draw(st.booleans()):
            symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=4, unique=True))
            t = {**t, "symbols": symbols}
            if draw(st.booleans()):
                t["default"] = symbols[0]
        fields.append({"name": f["name"], "type": t})
    fields = draw(st.permutations(fields))
    extra = draw(st.sampled_from([
        None, {"name": "new_long", "type": "long", "default": 7}, {"name": "new_opt", "type": ["null", "double"],
                                                                    "default": None},
        {"name": "new_bool", "type": "boolean", "default": True}, {"name": "new_required", "type": "double"}]))
    if extra is not None:
        fields.append(extra)
    return {"type": "record", "name": "R", "fields": fields or [{"name": "pad", "type": ["null", "int"],
                                                                  "default": None}]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_agrees_with_fastavro_resolving_a_writer_schema(data: st.DataObject) -> None:
    """Confluent wire format: records written with a writer schema (by id), read as the reader schema."""
    writer = data.draw(schemas())
    reader = _resolved_reader(data.draw, writer)
    records = data.draw(st.lists(st.fixed_dictionaries({f["name"]: value_for(f["type"]) for f in writer["fields"]}),
                                 min_size=1, max_size=8))
    schema_ids = {7: writer}
    decoder = AvroDecoder(parse_schema(reader), wire_format="confluent", lookup=lambda i: schema_ids[i])
    payloads: list[bytes | None] = [b"\x00\x00\x00\x00\x07" + encode(writer, r) for r in records]
    payloads.append(b"\x01\x00\x00\x00\x07" + encode(writer, records[0]))  # a bad magic byte
    payloads.append(b"\x00\x00")  # too short for the header
    check(decoder, payloads)


def test_unknown_schema_id_is_the_registrys_error() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "double"}]}

    def lookup(i: int) -> dict[str, Any]:
        if i != 1:
            raise DecodeError("unknown_schema_id", f"schema id {i} is not in the registry")
        return schema

    decoder = AvroDecoder(parse_schema(schema), wire_format="confluent", lookup=lookup)
    parsed = parse_schema(schema)
    payloads: list[bytes | None] = [encode_confluent(parsed, 1, {"x": 1.5}), encode_confluent(parsed, 2, {"x": 2.0})]
    out = ColumnarDecoder(decoder).decode(payloads)
    assert out.valid.tolist() == [True, False]
    assert out.errors[1].reason == "unknown_schema_id"
    assert out.schema_ids.tolist() == [1, 2]


def test_what_it_does_not_read_is_left_to_fastavro() -> None:
    nested = {"type": "record", "name": "R", "fields": [
        {"name": "x", "type": {"type": "array", "items": "double"}}]}
    with pytest.raises(Unsupported):
        compile_program(parse_schema(nested), None)
    decimal = {"type": "record", "name": "R", "fields": [
        {"name": "x", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}}]}
    with pytest.raises(Unsupported):
        compile_program(parse_schema(decimal), None)


def test_one_pass_reads_the_bench_record_as_fastavro_does() -> None:
    """A hand-checked record: a zigzag long, a double, a nullable string, an enum (bytes written by hand)."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "x", "type": "double"},
        {"name": "s", "type": ["null", "string"]}, {"name": "e", "type": {"type": "enum", "name": "E",
                                                                          "symbols": ["a", "b", "c"]}}]}
    payload = bytes([0x03]) + np.float64(2.5).tobytes() + bytes([0x02, 0x04]) + b"hi" + bytes([0x04])
    assert schemaless_reader(io.BytesIO(payload), parse_schema(schema), None) == {"id": -2, "x": 2.5, "s": "hi",
                                                                                  "e": "c"}
    out = ColumnarDecoder(decoder_for(schema)).decode([payload])
    assert [out.columns[n].value(0) for n in ("id", "x", "s", "e")] == [-2, 2.5, "hi", "c"]
    assert not out.columns["id"].objects  # read by the compiled pass, not handed to fastavro


def test_every_boolean_byte_and_a_string_of_every_utf8_shape() -> None:
    """fastavro reads any non-zero boolean byte as True; strings of 1- to 4-byte characters and the invalid
    shapes (overlong, surrogate, past U+10FFFF, cut short) are accepted or refused as Python's decoder does."""
    schema = {"type": "record", "name": "R", "fields": [{"name": "b", "type": "boolean"}]}
    check(decoder_for(schema), [bytes([k]) for k in range(256)])
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
    samples = [b"a", "é".encode(), "€".encode(), "😀".encode(), b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
               b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xff", b"\x80", b"\xf0\x9f\x98"]
    check(decoder_for(schema), [bytes([2 * len(s)]) + s for s in samples])


@settings(max_examples=200, deadline=None)
@given(ints=st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, -(2**63), 2**63 - 1, 10**18])),
                     max_size=20),
       texts=st.lists(st.text(max_size=12), max_size=20))
def test_compiled_crc32_is_zlibs(ints: list[int], texts: list[str]) -> None:
    """The duplicate check's compiled id hashes: zlib.crc32 of the decimal text of an int64, of a str's UTF-8."""
    present = np.ones(len(ints), dtype=bool)
    got = crc32_decimals(np.array(ints, dtype=np.int64), present, CRC_TABLE).tolist()
    assert got == [zlib.crc32(str(v).encode()) for v in ints]
    raw = [t.encode() for t in texts]
    buf = np.frombuffer(b"".join(raw) or b"\0", dtype=np.uint8)
    lengths = np.array([len(r) for r in raw], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    got = crc32_spans(buf, starts, lengths, np.ones(len(raw), dtype=bool), CRC_TABLE).tolist()
    assert got == [zlib.crc32(r) for r in raw]
