"""Turn findings (a check crossed its threshold) into alerts: kind, severity, cooldown, deterministic ids.

Pure: the cooldown state lives in the `StreamPartition` and is counted in events, not wall-clock time.
"""

from __future__ import annotations

from monitor.events import Alert, AlertKind, Severity, Window, alert_id_for
from monitor.settings import CheckSettings
from monitor.stream_state import DecodedBatch, Finding, StreamPartition

RATE_CHECKS = {"nan_rate", "missing_rate"}


def _kind(check: str, stream: str) -> AlertKind:
    if check in RATE_CHECKS:
        return AlertKind.DATA_QUALITY
    return AlertKind.DRIFT if stream == "features" else AlertKind.PREDICTION_DRIFT


def _severity(f: Finding) -> Severity:
    if f.check in RATE_CHECKS and f.statistic >= 2 * f.threshold:
        return Severity.CRITICAL
    return Severity.WARNING


def _message(f: Finding, kind: AlertKind) -> str:
    if f.check in RATE_CHECKS:
        what = "NaN/inf" if f.check == "nan_rate" else "missing (null)"
        return f"{what} rate {f.statistic:.2%} over the last {f.window_count} events exceeds {f.threshold:.2%}"
    if f.check == "adwin":
        return (f"ADWIN: the mean of the recent window differs from the older one by {f.statistic:.3f} "
                f"warm-up standard deviations, above the bound {f.threshold:.3f}")
    return f"Page-Hinkley cumulative deviation {f.statistic:.1f} exceeds {f.threshold:g}"


def evaluate(
    findings: list[Finding],
    part: StreamPartition,
    batch: DecodedBatch,
    checks: dict[str, CheckSettings],
    version_field: str | None,
) -> list[Alert]:
    """Alerts for the findings of one batch, skipping a feature's check while it is cooling down."""
    alerts = []
    for f in findings:
        key = f"{f.feature}/{f.check}"
        if f.event_number <= part.quiet_until.get(key, 0):
            continue
        part.quiet_until[key] = f.event_number + checks[f.feature].cooldown_events
        offset = int(batch.offsets[f.index])
        row = batch.rows[f.index]
        version = row.get(version_field) if version_field else None
        kind = _kind(f.check, part.stream)
        alerts.append(
            Alert(
                alert_id=alert_id_for(part.topic, part.partition, offset, part.model, f.feature, f.check),
                model=part.model,
                model_version=None if version is None else str(version),
                kind=kind,
                check=f.check,
                feature=f.feature,
                severity=_severity(f),
                statistic=f.statistic,
                threshold=f.threshold,
                window=Window(f.first_offset, offset, f.first_event_time, batch.event_times[f.index],
                              f.window_count),
                source_topic=part.topic,
                source_partition=part.partition,
                source_offset=offset,
                event_time=batch.event_times[f.index],
                message=_message(f, kind),
                evidence=dict(f.evidence),
            )
        )
    return alerts
