"""Pure inspection of Avro record schemas: which fields are monitored and how a writer schema differs.

No fastavro here: these functions read the schema as a dict (the decoder lives in `monitor.io.avro`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from monitor.errors import ConfigError

_NUMERIC = {"int", "long", "float", "double", "boolean", "decimal"}
_CATEGORICAL = {"string", "enum"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: Literal["numeric", "categorical"]
    nullable: bool


def _base_type(avro_type: Any) -> tuple[str | None, bool]:
    """The single non-null type name of a field type, and whether null is allowed."""
    nullable = False
    if isinstance(avro_type, list):
        non_null = [t for t in avro_type if t != "null"]
        nullable = len(non_null) < len(avro_type)
        if len(non_null) != 1:
            return None, nullable
        avro_type = non_null[0]
    if isinstance(avro_type, dict):
        # A decimal (bytes or fixed underneath) is a number; the other logical types keep their base type.
        avro_type = "decimal" if avro_type.get("logicalType") == "decimal" else avro_type.get("type")
    return (avro_type if isinstance(avro_type, str) else None), nullable


def infer_fields(
    schema: Mapping[str, Any],
    *,
    skip: set[str],
    monitor: list[str] | None = None,
    exclude: list[str] | None = None,
    categorical: list[str] | None = None,
) -> list[FieldSpec]:
    """Monitored fields of a record schema: numeric types are numeric, string/enum categorical.

    >>> schema = {"type": "record", "name": "r", "fields": [
    ...     {"name": "id", "type": "string"}, {"name": "age", "type": ["null", "double"]},
    ...     {"name": "plan", "type": {"type": "enum", "name": "P", "symbols": ["a", "b"]}},
    ...     {"name": "tags", "type": {"type": "array", "items": "string"}}]}
    >>> [(f.name, f.kind, f.nullable) for f in infer_fields(schema, skip={"id"})]
    [('age', 'numeric', True), ('plan', 'categorical', False)]
    """
    forced_categorical = set(categorical or [])
    excluded = set(exclude or []) | skip
    by_name: dict[str, FieldSpec] = {}
    for fld in schema.get("fields", []):
        base, nullable = _base_type(fld["type"])
        name = fld["name"]
        if base is None:
            continue
        if name in forced_categorical or base in _CATEGORICAL:
            by_name[name] = FieldSpec(name, "categorical", nullable)
        elif base in _NUMERIC:
            by_name[name] = FieldSpec(name, "numeric", nullable)
    if monitor is not None:
        missing = [m for m in monitor if m not in by_name]
        if missing:
            raise ConfigError(f"monitored fields not in the schema (or not numeric/string): {missing}")
        return [by_name[m] for m in monitor if m not in excluded]
    return [spec for name, spec in by_name.items() if name not in excluded]


def type_name(avro_type: Any) -> str:
    """A short, comparable name of an Avro type: `double`, `null|double`, `enum`, `array`...

    >>> type_name(["null", {"type": "long", "logicalType": "timestamp-millis"}])
    'null|long'
    """
    if isinstance(avro_type, list):
        return "|".join(type_name(t) for t in avro_type)
    if isinstance(avro_type, dict):
        return type_name(avro_type.get("type"))
    return str(avro_type).rsplit(".", 1)[-1] if avro_type in _NUMERIC | {"string", "null", "bytes"} else (
        "named" if "." in str(avro_type) else str(avro_type))


def field_types(schema: Mapping[str, Any]) -> dict[str, str]:
    return {f["name"]: type_name(f["type"]) for f in schema.get("fields", [])}


def schema_changes(expected: Mapping[str, str], writer: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(field, check, detail) for each field missing from, added to, or retyped in the writer schema.

    >>> for change in schema_changes({"a": "double", "b": "string"}, {"a": "long", "c": "int"}):
    ...     print(change)
    ('a', 'schema_type_changed', 'a: double -> long')
    ('b', 'schema_field_missing', 'b is gone')
    ('c', 'schema_field_added', 'c (int) is new')
    """
    out = []
    for name in sorted(set(expected) | set(writer)):
        if name not in writer:
            out.append((name, "schema_field_missing", f"{name} is gone"))
        elif name not in expected:
            out.append((name, "schema_field_added", f"{name} ({writer[name]}) is new"))
        elif expected[name] != writer[name]:
            out.append((name, "schema_type_changed", f"{name}: {expected[name]} -> {writer[name]}"))
    return out
