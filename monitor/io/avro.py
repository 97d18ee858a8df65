"""Avro in and out: plain (schemaless) Avro and the Confluent Schema Registry wire format.

fastavro and registry errors are re-raised as our own (`DecodeError`, `DependencyUnavailable`).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import fastavro
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from monitor.core.schema import field_types
from monitor.core.types import Alert, AlertKind, Severity, Window
from monitor.errors import ConfigError, DecodeError, DependencyUnavailable

WIRE_MAGIC = 0
WIRE_HEADER = struct.Struct(">bI")


def schemas_dir() -> Path:
    """The schemas folder: inside the installed package, or at the repository root in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "schemas", package.parent / "schemas"):
        if (candidate / "alert.avsc").exists():
            return candidate
    raise ConfigError("schemas/alert.avsc not found next to the monitor package")


def load_schema(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read schema {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"schema {path} is not JSON: {exc}") from exc
    try:
        parsed = parse_schema(raw)
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise ConfigError(f"schema {path} is not a valid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ConfigError(f"schema {path} must be an Avro record schema")
    return parsed


SchemaLookup = Callable[[int], Mapping[str, Any]]


class AvroDecoder:
    """Decodes one topic's values to dicts, plain Avro or Confluent wire format.

    Every failure is a `DecodeError` with a stable reason code; a registry outage is
    `DependencyUnavailable` (never a reason to dead-letter).
    """

    def __init__(
        self,
        reader_schema: Mapping[str, Any] | None,
        *,
        wire_format: Literal["plain", "confluent"] = "plain",
        lookup: SchemaLookup | None = None,
        max_payload_bytes: int = 1_000_000,
    ) -> None:
        if wire_format == "plain" and reader_schema is None:
            raise ConfigError("plain Avro needs a reader schema")
        if wire_format == "confluent" and lookup is None:
            raise ConfigError("Confluent wire format needs a schema registry")
        self.reader_schema = reader_schema
        self.wire_format = wire_format
        self._lookup = lookup
        self._writers: dict[int, Any] = {}
        self.max_payload_bytes = max_payload_bytes
        self.schema_ids_seen: set[int] = set()
        self.last_schema_id: int | None = None

    def _writer_schema(self, schema_id: int) -> Any:
        writer = self._writers.get(schema_id)
        if writer is None:
            assert self._lookup is not None
            writer = parse_schema(dict(self._lookup(schema_id)))
            self._writers[schema_id] = writer
        return writer

    def writer_fields(self, schema_id: int) -> dict[str, str] | None:
        """Field name -> type name of a writer schema already fetched, or None."""
        writer = self._writers.get(schema_id)
        return field_types(writer) if isinstance(writer, dict) else None

    def decode(self, payload: bytes | None) -> dict[str, Any]:
        if not payload:
            raise DecodeError("empty_payload", "the record has no value")
        if len(payload) > self.max_payload_bytes:
            raise DecodeError("payload_too_large", f"{len(payload)} bytes exceeds {self.max_payload_bytes}")
        start = 0
        writer = self.reader_schema
        if self.wire_format == "confluent":
            if len(payload) <= WIRE_HEADER.size:
                raise DecodeError("truncated_header", f"{len(payload)} bytes is too short for the wire format")
            magic, schema_id = WIRE_HEADER.unpack_from(payload)
            if magic != WIRE_MAGIC:
                raise DecodeError("bad_magic_byte", f"magic byte {magic} is not 0")
            self.last_schema_id = schema_id
            writer = self._writer_schema(schema_id)
            self.schema_ids_seen.add(schema_id)
            start = WIRE_HEADER.size
        buf = io.BytesIO(payload)
        buf.seek(start)
        try:
            record = schemaless_reader(buf, writer, self.reader_schema)  # type: ignore[arg-type]
        except (EOFError, StopIteration) as exc:
            raise DecodeError("truncated_payload", "the payload ends before the record does") from exc
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid_utf8", "a string field is not valid UTF-8") from exc
        except fastavro.read.SchemaResolutionError as exc:
            raise DecodeError("schema_mismatch", f"writer schema does not resolve to reader: {exc}") from exc
        except (ValueError, IndexError, TypeError, OverflowError, MemoryError) as exc:
            raise DecodeError("avro_decode_error", f"{type(exc).__name__} while decoding") from exc
        if buf.tell() != len(payload):
            raise DecodeError("trailing_bytes", f"{len(payload) - buf.tell()} bytes left after the record")
        if not isinstance(record, dict):
            raise DecodeError("not_a_record", "the payload is not an Avro record")
        return record


_REGISTRY_CLIENTS: dict[tuple[tuple[str, str], ...], Any] = {}


def registry_client(conf: Mapping[str, str]) -> Any:
    """One SchemaRegistryClient per configuration in a process, so a `mock://` registry is shared."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    key = tuple(sorted(conf.items()))
    if key not in _REGISTRY_CLIENTS:
        if not conf.get("url"):
            raise ConfigError("Confluent wire format needs schema_registry.url in the config")
        _REGISTRY_CLIENTS[key] = SchemaRegistryClient.new_client(registry_conf(conf))
    return _REGISTRY_CLIENTS[key]


# The client's own retries stay short: the daemon retries a registry outage itself (pause, not ready, read the
# batch again), and a lookup must not block the loop past the consumer's max.poll.interval.ms.
REGISTRY_DEFAULTS: dict[str, float] = {"timeout": 10, "max.retries": 1, "retries.wait.ms": 200,
                                       "retries.max.wait.ms": 1000}


def registry_conf(conf: Mapping[str, str]) -> dict[str, Any]:
    """The client's configuration: ours by default; numbers given as text (YAML, env) become numbers."""
    out: dict[str, Any] = {**REGISTRY_DEFAULTS, **conf}
    for name in (*REGISTRY_DEFAULTS, "cache.capacity", "cache.latest.ttl.sec"):
        value = out.get(name)
        if isinstance(value, str):
            try:
                out[name] = float(value) if "." in value else int(value)
            except ValueError as exc:
                raise ConfigError(f"schema_registry.{name} must be a number, not {value!r}") from exc
    return out


def _http_transport_errors() -> tuple[type[BaseException], ...]:
    """The registry client's HTTP library's transport errors (httpx or its successor httpx2, whichever it uses)."""
    try:
        from confluent_kafka.schema_registry.common._httpx_compat import httpx
    except ImportError:  # a client version without the shim: connection errors are OSErrors underneath
        return ()
    error = getattr(httpx, "TransportError", None)
    return (error,) if isinstance(error, type) and issubclass(error, BaseException) else ()


def _registry_unreachable() -> tuple[type[BaseException], ...]:
    """What "the registry cannot be reached" looks like; anything else is a bug and is not called an outage."""
    from confluent_kafka.schema_registry.error import OAuthTokenError

    return (OAuthTokenError, OSError, *_http_transport_errors())


def register_schema(conf: Mapping[str, str], subject: str, schema_text: str) -> int:
    """Register an Avro schema under `subject` (or find it there); its id. `DependencyUnavailable` while the
    registry cannot be reached; `ConfigError` when it refuses the schema (e.g. incompatible with the subject's
    compatibility setting)."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = registry_client(conf)
    unreachable = _registry_unreachable()
    try:
        return int(client.register_schema(subject, Schema(schema_text, "AVRO")))
    except SchemaRegistryError as exc:
        if exc.http_status_code is not None and 400 <= exc.http_status_code < 500 and exc.http_status_code != 408:
            raise ConfigError(f"the schema registry refused {subject}: {exc.http_status_code} "
                              f"{exc.error_message}") from exc
        raise DependencyUnavailable(f"schema registry error {exc.http_status_code}",
                                    dependency="schema_registry") from exc
    except unreachable as exc:
        raise DependencyUnavailable(f"schema registry unreachable: {type(exc).__name__}",
                                    dependency="schema_registry") from exc


def registry_lookup(conf: Mapping[str, str]) -> SchemaLookup:
    """A schema-id lookup backed by confluent-kafka's SchemaRegistryClient (`mock://` works in tests)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = registry_client(conf)
    unreachable = _registry_unreachable()

    def lookup(schema_id: int) -> Mapping[str, Any]:
        try:
            schema = client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry") from exc
            raise DependencyUnavailable(f"schema registry error {exc.http_status_code}",
                                        dependency="schema_registry") from exc
        except unreachable as exc:
            raise DependencyUnavailable(f"schema registry unreachable: {type(exc).__name__}",
                                        dependency="schema_registry") from exc
        if schema.schema_type not in (None, "AVRO"):
            raise DecodeError("not_avro", f"schema id {schema_id} is {schema.schema_type}, not Avro")
        parsed: Mapping[str, Any] = json.loads(schema.schema_str)
        return parsed

    return lookup


def encode_plain(schema: Any, record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, dict(record))
    return buf.getvalue()


def encode_confluent(schema: Any, schema_id: int, record: Mapping[str, Any]) -> bytes:
    return WIRE_HEADER.pack(WIRE_MAGIC, schema_id) + encode_plain(schema, record)


# Fields appended to alert.avsc since 0.1, the newest last (each with a default).
ADDED = ("segment",)


def alert_schema_text() -> str:
    """schemas/alert.avsc as the registry gets it."""
    return (schemas_dir() / "alert.avsc").read_text()


class AlertCodec:
    """Alerts with schemas/alert.avsc (namespace monitor.v1): plain Avro, or with `schema_id` the Confluent wire
    format (magic byte 0, the id as 4 big-endian bytes, then the same Avro body; `alerts_format: confluent`).

    `decode` reads both: a plain alert never starts with a zero byte (its first field, a non-empty string,
    starts with its length)."""

    def __init__(self, schema_id: int | None = None) -> None:
        self.schema = load_schema(schemas_dir() / "alert.avsc")
        self.schema_id = schema_id
        # Plain alerts written before the last fields were added (they have defaults): read as written.
        raw = json.loads(alert_schema_text())
        self.older = [parse_schema({**raw, "fields": raw["fields"][:-k]}) for k in range(1, len(ADDED) + 1)]

    def encode(self, alert: Alert) -> bytes:
        record = asdict(alert)
        record["kind"] = str(alert.kind)
        record["severity"] = str(alert.severity)
        if self.schema_id is not None:
            return encode_confluent(self.schema, self.schema_id, record)
        return encode_plain(self.schema, record)

    def decode(self, payload: bytes) -> Alert:
        if payload[:1] == WIRE_HEADER.pack(WIRE_MAGIC, 0)[:1] and len(payload) > WIRE_HEADER.size:
            payload = payload[WIRE_HEADER.size:]
        rec = None
        for schema in (self.schema, *self.older):
            buf = io.BytesIO(payload)
            try:
                rec = schemaless_reader(buf, schema, None)
            except (EOFError, StopIteration, IndexError, ValueError):
                continue
            if buf.tell() == len(payload):
                break
        if not isinstance(rec, dict) or buf.tell() != len(payload):
            raise DecodeError("not_an_alert", "the payload is not an alert of schemas/alert.avsc")
        rec = {**{name: None for name in ADDED}, **rec}
        rec["kind"] = AlertKind(rec["kind"])
        rec["severity"] = Severity(rec["severity"])
        rec["window"] = Window(**rec["window"])
        return Alert(**rec)


class BlockCodec:
    """Messages of the blocks topic (stage 1 -> stage 2): the block summaries one input partition closed in one
    batch, as plain Avro with schemas/block.avsc (namespace monitor.v1)."""

    def __init__(self, max_payload_bytes: int = 16_000_000) -> None:
        self.schema = load_schema(schemas_dir() / "block.avsc")
        self.decoder = AvroDecoder(self.schema, max_payload_bytes=max_payload_bytes)

    def encode(self, blocks: Sequence[Mapping[str, Any]]) -> bytes:
        return encode_plain(self.schema, {"blocks": blocks})

    def encode_chunks(self, blocks: Sequence[Mapping[str, Any]], max_bytes: int
                      ) -> list[tuple[Sequence[Mapping[str, Any]], bytes]]:
        """The blocks in order, as few messages as keep each within `max_bytes` (a block alone may exceed it)."""
        if not blocks:
            return []
        value = self.encode(blocks)
        if len(value) <= max_bytes or len(blocks) == 1:
            return [(blocks, value)]
        half = len(blocks) // 2
        return self.encode_chunks(blocks[:half], max_bytes) + self.encode_chunks(blocks[half:], max_bytes)

    def decode(self, payload: bytes | None) -> list[dict[str, Any]]:
        """The blocks, or `DecodeError` with the decoder's reasons (it then goes to the dead-letter topic)."""
        blocks: list[dict[str, Any]] = self.decoder.decode(payload)["blocks"]
        return blocks
