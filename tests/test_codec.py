"""Avro decoding (plain and Confluent wire format) and its precise errors; alert encoding."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest

from monitor.core.schema import infer_fields
from monitor.core.types import Alert, AlertKind, Severity, Window
from monitor.errors import ConfigError, DecodeError
from monitor.io.avro import (
    AlertCodec,
    AvroDecoder,
    encode_confluent,
    encode_plain,
    load_schema,
    registry_client,
    registry_lookup,
    schemas_dir,
)
from tests.helpers import EXAMPLES

SCHEMA = load_schema(EXAMPLES / "churn_predictions.avsc")
RECORD = {"event_id": "e1", "event_time": 1_700_000_000_000, "model_version": "v1", "churn_score": 0.25,
          "predicted_churn": 0}


def _reason(decoder: AvroDecoder, payload: bytes | None) -> str:
    with pytest.raises(DecodeError) as info:
        decoder.decode(payload)
    return info.value.reason


def test_plain_round_trip() -> None:
    """A plain Avro record decodes to the dict that was written."""
    assert AvroDecoder(SCHEMA).decode(encode_plain(SCHEMA, RECORD)) == RECORD


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "empty_payload"),
        (b"", "empty_payload"),
        (encode_plain(SCHEMA, RECORD)[:-3], "truncated_payload"),
        (encode_plain(SCHEMA, RECORD) + b"\x00", "trailing_bytes"),
        (b"\x7f" * 10, "truncated_payload"),
    ],
)
def test_plain_rejects_bad_payloads(payload: bytes | None, reason: str) -> None:
    """Each malformed payload is a DecodeError with a stable reason code."""
    assert _reason(AvroDecoder(SCHEMA), payload) == reason


def test_payload_size_limit() -> None:
    """A payload above the configured limit is rejected before decoding."""
    decoder = AvroDecoder(SCHEMA, max_payload_bytes=16)
    assert _reason(decoder, encode_plain(SCHEMA, RECORD)) == "payload_too_large"


def test_invalid_utf8_is_its_own_reason() -> None:
    """A string whose bytes are not UTF-8 is reported as such."""
    payload = bytearray(encode_plain(SCHEMA, RECORD))
    payload[1] = 0xFF  # first byte of event_id's text
    assert _reason(AvroDecoder(SCHEMA), bytes(payload)) == "invalid_utf8"


@pytest.fixture
def registry() -> tuple[Any, int]:
    from confluent_kafka.schema_registry import Schema

    url = "mock://codec-test"
    client = registry_client({"url": url})
    schema_id = client.register_schema("preds-value", Schema(json.dumps(SCHEMA), "AVRO"))
    return registry_lookup({"url": url}), schema_id


def test_confluent_wire_format(registry: tuple[Any, int]) -> None:
    """Magic byte 0 + schema id + Avro body decodes through the (mock) schema registry."""
    lookup, schema_id = registry
    decoder = AvroDecoder(SCHEMA, wire_format="confluent", lookup=lookup)
    payload = encode_confluent(SCHEMA, schema_id, RECORD)
    assert payload[:5] == struct.pack(">bI", 0, schema_id)
    assert decoder.decode(payload) == RECORD
    assert decoder.schema_ids_seen == {schema_id}


def test_confluent_wire_format_errors(registry: tuple[Any, int]) -> None:
    """Wrong magic byte, short header and unknown schema id each have their reason."""
    lookup, schema_id = registry
    decoder = AvroDecoder(SCHEMA, wire_format="confluent", lookup=lookup)
    good = encode_confluent(SCHEMA, schema_id, RECORD)
    assert _reason(decoder, b"\x01" + good[1:]) == "bad_magic_byte"
    assert _reason(decoder, good[:5]) == "truncated_header"
    assert _reason(decoder, b"\x00\x00\x00\x99\x99" + good[5:]) == "unknown_schema_id"
    assert _reason(decoder, good + b"xx") == "trailing_bytes"


def test_infer_fields_of_the_example_schema() -> None:
    """Numeric fields are numeric, enum/string categorical; id/time/version fields are skipped."""
    schema = load_schema(EXAMPLES / "churn_features.avsc")
    fields = {f.name: (f.kind, f.nullable) for f in infer_fields(schema, skip={"event_id", "event_time",
                                                                                "model_version"})}
    assert fields["credit_score"] == ("numeric", True)
    assert fields["tenure_months"] == ("numeric", False)
    assert fields["plan"] == ("categorical", False)
    assert fields["region"] == ("categorical", False)
    assert "event_id" not in fields and len(fields) == 13


def test_infer_fields_rejects_unknown_monitored_field() -> None:
    """Asking to monitor a field the schema lacks is a config error naming it."""
    with pytest.raises(ConfigError, match="nope"):
        infer_fields(SCHEMA, skip=set(), monitor=["churn_score", "nope"])


def test_alert_encodes_with_the_published_schema() -> None:
    """An alert written by AlertCodec reads back with plain fastavro and schemas/alert.avsc."""
    alert = Alert("abc", "churn", None, AlertKind.DRIFT, "adwin", "age", Severity.WARNING, 0.5, 0.2,
                  Window(1, 9, 100, 200, 9), "t", 2, 9, 200, "msg", {"k": "v"})
    payload = AlertCodec().encode(alert)
    schema = fastavro.parse_schema(json.loads((schemas_dir() / "alert.avsc").read_text()))
    rec = fastavro.schemaless_reader(io.BytesIO(payload), schema, None)
    assert rec["kind"] == "DRIFT" and rec["window"]["count"] == 9 and rec["evidence"] == {"k": "v"}
    assert AlertCodec().decode(payload) == alert


def test_an_unreachable_registry_is_an_outage_and_a_bug_is_not() -> None:
    """Issue 11 #7: only the HTTP client's transport errors mean "registry unreachable" (the daemon pauses and
    retries); any other exception from the lookup is a programming error and surfaces as itself."""
    import socket

    from monitor.errors import DependencyUnavailable
    from monitor.io.avro import registry_client

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = {"url": f"http://127.0.0.1:{port}"}
    lookup = registry_lookup(conf)
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        lookup(1)

    client = registry_client(conf)

    def broken(_schema_id: int) -> None:
        raise KeyError("a bug in our code, not an outage")

    original = client.get_schema
    client.get_schema = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyError):
            lookup(1)
    finally:
        client.get_schema = original  # type: ignore[method-assign]
