"""Fuzzing the decoders (issue 11): random and mutated payloads, plain Avro and the Confluent framing.

Whatever the bytes, a decoder returns a record or raises `DecodeError` with a dead-letter reason; never any
other exception (one would stop the partition). Where it returns a record, fastavro reading the same bytes
returns the same one. Fixed seed (`derandomize`) and a bounded number of examples, so the run is part of
`make test` and gives the same verdict every time.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.cli.simulate import Simulator
from monitor.errors import DecodeError
from monitor.io.avro import (
    WIRE_HEADER,
    WIRE_MAGIC,
    AvroDecoder,
    BlockCodec,
    encode_confluent,
    encode_plain,
    load_schema,
)
from tests.helpers import EXAMPLES

REASONS = {"empty_payload", "payload_too_large", "truncated_header", "bad_magic_byte", "unknown_schema_id",
           "truncated_payload", "invalid_utf8", "schema_mismatch", "avro_decode_error", "trailing_bytes",
           "not_a_record", "not_avro"}
FUZZ = settings(derandomize=True, max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Every kind of Avro type a record can hold, so the mutations reach each reader.
RICH = fastavro.parse_schema({"type": "record", "name": "Rich", "fields": [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "long"},
    {"name": "x", "type": ["null", "double"]},
    {"name": "f", "type": "float"},
    {"name": "ok", "type": "boolean"},
    {"name": "plan", "type": {"type": "enum", "name": "Plan", "symbols": ["free", "pro", "team"]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "counts", "type": {"type": "map", "values": "long"}},
    {"name": "raw", "type": "bytes"},
    {"name": "h", "type": {"type": "fixed", "name": "H", "size": 4}},
    {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
        {"name": "a", "type": ["null", "string", "int"]}]}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2}},
]})
RICH_RECORD = {"id": "é-1", "n": -123456789, "x": 2.5, "f": 0.25, "ok": True, "plan": "pro",
               "tags": ["a", "bb"], "counts": {"k": 3}, "raw": b"\x00\xff", "h": b"abcd",
               "inner": {"a": 7}, "ts": 1_767_225_600_000, "amount": Decimal("12.34")}
FEATURES = load_schema(EXAMPLES / "churn_features.avsc")


def _features_record() -> dict[str, Any]:
    feats, _preds = next(iter(Simulator(seed=1).batches(1, 1)))
    return dict(feats[0])


SCHEMAS = {"rich": (RICH, RICH_RECORD), "features": (FEATURES, _features_record())}


def _outcome(decoder: AvroDecoder, payload: bytes) -> dict[str, Any] | str:
    """The record, or the dead-letter reason; anything else escapes and fails the test."""
    try:
        return decoder.decode(payload)
    except DecodeError as exc:
        assert exc.reason in REASONS, exc.reason
        return exc.reason


def _fastavro(schema: Any, payload: bytes) -> Any:
    buf = io.BytesIO(payload)
    return fastavro.schemaless_reader(buf, schema, schema)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid payload with a few byte flips, insertions, deletions and a cut or an extension."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "extend"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 4))]
        elif op == "cut":
            data = data[:at]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@FUZZ
@given(data=st.data())
def test_plain_decoder_on_mutated_payloads(name: str, data: st.DataObject) -> None:
    schema, record = SCHEMAS[name]
    decoder = AvroDecoder(schema, max_payload_bytes=10_000)
    payload = data.draw(mutated(encode_plain(schema, record)))
    got = _outcome(decoder, payload)
    if isinstance(got, dict):
        assert got == _fastavro(schema, payload)  # agrees with fastavro on whatever decoded


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@FUZZ
@given(payload=st.binary(max_size=300))
def test_plain_decoder_on_random_bytes(name: str, payload: bytes) -> None:
    _outcome(AvroDecoder(SCHEMAS[name][0], max_payload_bytes=10_000), payload)


def _lookup(known: Mapping[int, Any]) -> Any:
    def lookup(schema_id: int) -> Mapping[str, Any]:
        if schema_id not in known:
            raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry")
        return known[schema_id]

    return lookup


@FUZZ
@given(data=st.data())
def test_confluent_decoder_on_mutated_and_random_payloads(data: st.DataObject) -> None:
    """The wire format's header (magic byte, schema id) mutated too: an unknown id is a reason, not a crash."""
    decoder = AvroDecoder(RICH, wire_format="confluent", lookup=_lookup({1: RICH}), max_payload_bytes=10_000)
    valid = encode_confluent(RICH, 1, RICH_RECORD)
    payload = data.draw(st.one_of(mutated(valid), st.binary(max_size=64),
                                  st.binary(max_size=64).map(lambda b: WIRE_HEADER.pack(WIRE_MAGIC, 1) + b)))
    got = _outcome(decoder, payload)
    if isinstance(got, dict):
        assert got == _fastavro(RICH, payload[WIRE_HEADER.size:])


def _a_block() -> dict[str, Any]:
    """A real stage-1 block summary (two numeric fields and a categorical one, 5 events)."""
    import tempfile
    from pathlib import Path

    from monitor.core.types import RawRecord
    from tests.helpers import small_model

    with tempfile.TemporaryDirectory() as tmp:
        proc, _models = small_model(Path(tmp), [{"name": "x", "type": "double"}, {"name": "c", "type": "string"}])
        schema = proc.decoder.reader_schema
        records = [RawRecord("m.f", 0, i, None, encode_plain(schema, {"event_id": f"e{i}", "event_time": 400 * i,
                                                                       "x": float(i), "c": "ab"[i % 2]}))
                   for i in range(6)]
        blocks: list[dict[str, Any]] = proc.process(proc.new_partition(0), records).blocks
    return blocks[0]


BLOCK = _a_block()


@FUZZ
@given(data=st.data())
def test_blocks_decoder_on_mutated_payloads(data: st.DataObject) -> None:
    """The blocks topic is ours, but its bytes come from Kafka too: a corrupt message is a `DecodeError`."""
    codec = BlockCodec()
    block = BLOCK
    payload = data.draw(mutated(codec.encode([block])))
    try:
        codec.decode(payload)
    except DecodeError as exc:
        assert exc.reason in REASONS | {"bad_block"}, exc.reason


def test_the_fuzz_reaches_the_error_paths() -> None:
    """The mutations are not all caught by one check: a seeded run of them meets most dead-letter reasons,
    and some mutated payloads still decode (to what fastavro reads)."""
    import random

    rng = random.Random(2026)
    decoder = AvroDecoder(RICH, wire_format="confluent", lookup=_lookup({1: RICH}), max_payload_bytes=200)
    valid = bytearray(encode_confluent(RICH, 1, RICH_RECORD))
    seen: dict[str, int] = {}
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data)) if data else 0
            op = rng.choice(["flip", "insert", "cut", "extend"])
            if op == "flip" and data:
                data[at] ^= 1 << rng.randrange(8)
            elif op == "insert":
                data[at:at] = rng.randbytes(rng.randint(1, 6))
            elif op == "cut":
                data = data[:at]
            else:
                data += rng.randbytes(rng.randint(1, 200))
        got = _outcome(decoder, bytes(data))
        key = "decoded" if isinstance(got, dict) else got
        seen[key] = seen.get(key, 0) + 1
    reasons = set(seen) - {"decoded"}
    assert seen.get("decoded", 0) > 0, seen
    assert {"truncated_payload", "trailing_bytes", "unknown_schema_id", "bad_magic_byte",
            "payload_too_large"} <= reasons, seen
    assert len(reasons) >= 7, seen
