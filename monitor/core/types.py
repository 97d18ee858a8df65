"""The values that flow through the pipeline (frozen): raw records, alerts, rejects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

# The Redis hash field of a partition's bookkeeping (the others are one per feature, `<model>/<feature>`).
META_FIELD = "__meta__"
# A segment child's state fields in its partition's hash: #seg/<field>=<value>/<its field> ("#" is in no model
# name, so no feature's field starts so).
SEGMENT_PREFIX = "#seg/"


class AlertKind(StrEnum):
    DATA_QUALITY = "DATA_QUALITY"
    DRIFT = "DRIFT"
    PREDICTION_DRIFT = "PREDICTION_DRIFT"
    SCHEMA = "SCHEMA"
    CONCEPT_DRIFT = "CONCEPT_DRIFT"
    VOLUME = "VOLUME"


class Severity(StrEnum):
    """INFO < POSSIBLE < WARNING < CRITICAL. POSSIBLE: a drift that is significant (its p-value passes the
    gate) but below the effect floor, sent only with `alerts.send_possible` (last in the Avro enum, so that
    the older symbols keep their positions; a reader with the older schema reads it as WARNING)."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    POSSIBLE = "POSSIBLE"


class RawRecord(NamedTuple):
    """One consumed Kafka message, as bytes; `offset` is its position in `topic`/`partition`. (A named tuple,
    not a frozen dataclass: the daemon makes one per message, and a tuple is made in a third of the time.)"""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """The span of events a statistic was computed over (offsets of one input partition)."""

    first_offset: int
    last_offset: int
    first_event_time: int | None
    last_event_time: int | None
    count: int


@dataclass(frozen=True, slots=True)
class Alert:
    """A typed alert event; serialised with schemas/alert.avsc. Equal inputs give byte-equal alerts."""

    alert_id: str
    model: str
    model_version: str | None
    kind: AlertKind
    check: str
    feature: str
    severity: Severity
    statistic: float
    threshold: float
    window: Window
    source_topic: str
    source_partition: int
    source_offset: int
    event_time: int | None
    message: str
    evidence: dict[str, str] = field(default_factory=dict)
    status: str = "OPEN"  # OPEN, or RESOLVED when a window check is back under its threshold
    segment: str | None = None  # "<field>=<value>" for an incident of one segment; None for the whole stream


def alert_id_for(topic: str, partition: int, offset: int, model: str, feature: str, check: str) -> str:
    """Deterministic id: the same triggering event and check always give the same id."""
    text = "\x1f".join((topic, str(partition), str(offset), model, feature, check))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that could not be used; it goes to the dead-letter topic with these error details."""

    record: RawRecord
    reason: str
    error_class: str
    message: str
