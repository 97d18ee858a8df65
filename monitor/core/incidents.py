"""Incidents: one per (model stream, field), however many checks and partitions see the problem.

Every failing check joins its field's incident as evidence; the incident's kind is the most specific one
among the checks that opened it (a new category fails both `unseen_category` and `js`: one DATA_QUALITY
incident, with the drift as evidence). The alerts topic gets one OPEN when an incident
starts, an UPDATED only when its severity rises, and one RESOLVED when every check in it has passed for
`resolve_windows` evaluations. When a large share of a model's features fail together (an upstream break),
one model-wide incident (field `*`) names them all instead of one incident per feature. Pure and
deterministic: ids hash the model, stream, field, kind and the slot the incident opened at.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from monitor.core.evaluate import message_for, severity_for
from monitor.core.multivariate import MV_CHECK
from monitor.core.partition import Finding
from monitor.core.types import Alert, AlertKind, Severity, Window

MODEL_WIDE = "*"
WIDE_KEY = "__model__"  # the model-wide incident's key (stream checks such as low_rate have field "*" too)
_RANK = {Severity.INFO: 0, Severity.POSSIBLE: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}
# The most specific first: an incident opened by several checks at once takes the first kind of this list.
_SPECIFIC = [AlertKind.SCHEMA, AlertKind.DATA_QUALITY, AlertKind.VOLUME, AlertKind.CONCEPT_DRIFT,
             AlertKind.PREDICTION_DRIFT, AlertKind.DRIFT]
# Kinds a model-wide incident can gather: per-feature problems of the inputs.
_GATHERED = {AlertKind.DRIFT, AlertKind.DATA_QUALITY, AlertKind.PREDICTION_DRIFT}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check at one evaluation of a model window: failing or passing, with what it saw."""

    field: str
    check: str
    kind: AlertKind
    statistic: float
    threshold: float
    failing: bool
    evidence: dict[str, str] = dc_field(default_factory=dict)
    partitions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class WindowSpan:
    """What an evaluation covered: its slot, event-time bounds and event count."""

    slot: int
    first_time: int | None
    last_time: int | None
    count: int
    model_version: str | None = None


# The multivariate check's incident: its own, though its field is "*" as the stream checks' are.
MV_KEY = "__multivariate__"


def _key(r: CheckResult) -> str:
    return MV_KEY if r.check == MV_CHECK else r.field


def _inc_key(inc: dict[str, Any]) -> str:
    """What an incident's ids hash as its field."""
    return WIDE_KEY if inc.get("wide") else str(inc.get("key", inc["field"]))


def incident_id(model: str, stream: str, field_name: str, kind: str, opened: int, status: str,
                severity: str = "") -> str:
    """Deterministic: the same incident and transition always give the same id (and bytes)."""
    text = "\x1f".join((model, stream, field_name, kind, str(opened), status, severity))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Incidents:
    """The open incidents of one model stream and their OPEN / UPDATED / RESOLVED transitions."""

    def __init__(self, model: str, stream: str, topic: str, features: int, resolve_windows: int,
                 model_share: float, resolve_margin: float = 0.0, segment: str | None = None) -> None:
        self.model, self.stream, self.topic = model, stream, topic
        self.segment = segment  # "<field>=<value>": the incidents of one segment's view
        self._id_stream = stream if segment is None else f"{stream}#{segment}"
        self.features = features
        self.resolve_windows = resolve_windows
        self.resolve_margin = resolve_margin
        self.model_share = model_share
        # field -> {"field", "kind", "opened", "severity", "first_time", "checks": {key: {...}}}
        self.open: dict[str, dict[str, Any]] = {}

    @property
    def model_wide_needed(self) -> int:
        """Failing features that make one model-wide incident (at least two)."""
        if self.model_share <= 0 or self.features < 2:
            return self.features + 1
        return max(2, math.ceil(self.model_share * self.features))

    def update(self, results: list[CheckResult], span: WindowSpan, tick: bool = True) -> list[Alert]:
        """Apply one evaluation's check results; return the alerts to send, in a deterministic order.

        `tick` is false for results that arrive between window evaluations (a silence, a schema change):
        they may open or raise an incident, but they do not count as a quiet window for the others.
        """
        alerts: list[Alert] = []
        failing = [r for r in results if r.failing]
        gathered = {r.field for r in failing if r.kind in _GATHERED and r.field != MODEL_WIDE}
        wide_key = WIDE_KEY
        kinds_by_field: dict[str, list[AlertKind]] = {}
        for r in failing:
            kinds_by_field.setdefault(_key(r), []).append(r.kind)
        if wide_key not in self.open and len(gathered) >= self.model_wide_needed:
            kinds = sorted(r.kind for r in failing if r.field in gathered)
            kind = max(set(kinds), key=lambda k: (kinds.count(k), k))
            self.open[wide_key] = {"field": MODEL_WIDE, "kind": str(kind), "opened": span.slot, "severity": "",
                                   "first_time": span.first_time, "checks": {}, "wide": True}
        for r in failing:
            key = _key(r)
            if key not in self.open and wide_key in self.open and (r.field in gathered or r.check == MV_CHECK):
                key = wide_key  # part of the upstream break: evidence of the model-wide incident
            kind = next(k for k in _SPECIFIC if k in kinds_by_field[_key(r)])
            inc = self.open.setdefault(key, {"field": r.field, "kind": str(kind), "opened": span.slot,
                                             "severity": "", "first_time": span.first_time, "checks": {}})
            if key == MV_KEY:
                inc["key"] = MV_KEY
            check_key = r.check if key != wide_key else f"{r.field}/{r.check}"
            if key == wide_key:
                inc["wide"] = True
            prev = inc["checks"].get(check_key)
            parts = sorted(set(r.partitions) | set(prev["partitions"] if prev else []))
            inc["checks"][check_key] = {
                "field": r.field, "check": r.check, "kind": str(r.kind), "statistic": r.statistic,
                "threshold": r.threshold, "quiet": 0, "partitions": parts,
                "first_time": prev["first_time"] if prev else span.first_time, "last_time": span.last_time,
                "evidence": dict(r.evidence)}
        passing = {(r.field, r.check): r for r in results if not r.failing}
        failing_keys = {(r.field, r.check) for r in failing}
        for key in sorted(self.open):
            inc = self.open[key]
            for chk in inc["checks"].values():
                if (chk["field"], chk["check"]) in failing_keys or not tick:
                    continue
                # Event checks (detectors, schema changes) pass by not firing; window checks by passing.
                passed = passing.get((chk["field"], chk["check"]))
                if passed is not None and not self._clear(passed):
                    chk["quiet"] = 0  # back under its threshold, not yet by the margin: not resolving
                elif passed is not None or chk["check"] in EVENT_CHECKS:
                    chk["quiet"] += 1
                if passed is not None:  # what it is now: a RESOLVED alert shows the passing value
                    chk["statistic"], chk["threshold"] = passed.statistic, passed.threshold
            severity = self._severity(inc)
            status = ""
            if not inc["severity"]:
                status = "OPEN"
            elif _RANK[Severity(severity)] > _RANK[Severity(inc["severity"])]:
                status = "UPDATED"
            elif all(c["quiet"] >= self.resolve_windows for c in inc["checks"].values()):
                status = "RESOLVED"
            if status:
                if status != "RESOLVED":
                    inc["severity"] = severity
                alerts.append(self._alert(inc, status, span))
                if status == "RESOLVED":
                    del self.open[key]
        return alerts

    def _clear(self, passed: CheckResult) -> bool:
        """A passing window check clear of its threshold by `resolve_margin` (hysteresis against flapping)."""
        if passed.check in NO_MARGIN:
            return True
        if passed.check in LOWER_IS_WORSE:
            return passed.statistic >= passed.threshold * (1.0 + self.resolve_margin)
        return passed.statistic <= passed.threshold * (1.0 - self.resolve_margin)

    def _severity(self, inc: dict[str, Any]) -> str:
        ranks = [severity_for(_finding(c, "OPEN", 0)) for c in inc["checks"].values()]
        best = max(ranks, key=lambda s: _RANK[s]) if ranks else Severity.WARNING
        return str(best)

    def _alert(self, inc: dict[str, Any], status: str, span: WindowSpan) -> Alert:
        checks = inc["checks"]
        lead = max(checks.values(), key=lambda c: (c["statistic"] / c["threshold"] if c["threshold"] else
                                                   (1.0 if c["statistic"] else 0.0), c["field"], c["check"]))
        parts = sorted({p for c in checks.values() for p in c["partitions"]})
        evidence = dict(lead["evidence"]) if status != "RESOLVED" else {}
        evidence.update({
            "scope": "model-wide" if inc.get("wide") else ("stream" if inc["field"] == MODEL_WIDE else "feature"),
            "checks": ", ".join(sorted(checks)),
            "partitions": ",".join(str(p) for p in parts),
            "first_event_time": "" if inc["first_time"] is None else str(inc["first_time"]),
            "last_event_time": "" if span.last_time is None else str(span.last_time),
            "window_slot": str(span.slot),
            # The same for the incident's OPEN, UPDATED and RESOLVED: what receivers group its alerts by.
            "incident": incident_id(self.model, self._id_stream, _inc_key(inc), inc["kind"], inc["opened"], ""),
        })
        if self.segment is not None:
            evidence["segment"] = self.segment
        if inc.get("wide"):
            fields = sorted({c["field"] for c in checks.values()})
            evidence["features"] = ", ".join(fields)
            message = (f"{len(fields)} of {self.features} features failed together (an upstream break?): "
                       f"{', '.join(fields)}")
            if status == "RESOLVED":
                message = f"the {len(fields)} features of the model-wide incident are back within their thresholds"
        else:
            message = message_for(_finding(lead, "RESOLVED" if status == "RESOLVED" else "OPEN", span.count))
            if len(checks) > 1 and status != "RESOLVED":
                message += f" (and {len(checks) - 1} more check{'s' if len(checks) > 2 else ''})"
        severity = Severity.INFO if status == "RESOLVED" else Severity(inc["severity"])
        return Alert(
            alert_id=incident_id(self.model, self._id_stream, _inc_key(inc), inc["kind"], inc["opened"], status,
                                 inc["severity"] if status == "UPDATED" else ""),
            model=self.model,
            model_version=span.model_version,
            kind=AlertKind(inc["kind"]),
            check="model_incident" if inc.get("wide") else lead["check"],
            feature=inc["field"],
            severity=severity,
            statistic=float(lead["statistic"]),
            threshold=float(lead["threshold"]),
            window=Window(-1, -1, span.first_time, span.last_time, span.count),
            source_topic=self.topic,
            source_partition=-1,
            source_offset=-1,
            event_time=span.last_time,
            message=message,
            evidence=evidence,
            status=status,
            segment=self.segment,
        )

    def to_state(self) -> dict[str, Any]:
        return {"open": self.open}

    def load_state(self, state: dict[str, Any] | None) -> None:
        self.open = dict((state or {}).get("open", {}))


# Window checks that fire below their threshold (the others fire above it), and one whose threshold is not
# a scale (an accuracy: 1.2 x 0.87 is out of reach): it resolves by passing, as before.
LOWER_IS_WORSE = {"low_rate"}
NO_MARGIN = {"cbpe_accuracy"}
# Checks that are events rather than window states: they pass by not firing.
EVENT_CHECKS = {"cusum", "adwin", "page_hinkley", "schema_field_missing", "schema_field_added",
                "schema_type_changed", "schema_new_version"}


def _finding(c: dict[str, Any], status: str, count: int) -> Finding:
    return Finding(c["field"], c["check"], AlertKind(c["kind"]), float(c["statistic"]), float(c["threshold"]),
                   -1, c.get("last_time"), 0, -1, c.get("first_time"), count, status,  # type: ignore[arg-type]
                   None, dict(c.get("evidence", {})))
