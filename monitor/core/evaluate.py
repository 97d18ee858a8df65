"""Turn findings into alerts: severity, message, deterministic ids.

Pure: window checks and detector incidents already went through their OPEN/RESOLVED lifecycle in the
partition (counted in events, not wall-clock time).
"""

from __future__ import annotations

from typing import Protocol

from monitor.core.partition import Finding
from monitor.core.types import Alert, AlertKind, Severity, Window, alert_id_for
from monitor.settings import CheckSettings


class PartitionLike(Protocol):
    model: str
    topic: str
    partition: int
    quiet_until: dict[str, int]

_RATE_WORDS = {
    "missing_rate": "missing (null)",
    "nan_rate": "NaN/inf",
    "sentinel_rate": "sentinel-value",
    "out_of_range": "out-of-range",
    "unseen_category": "unseen-category",
}


def severity_for(f: Finding) -> Severity:
    if f.status == "RESOLVED":
        return Severity.INFO
    if f.evidence.get("level") == "possible":
        return Severity.POSSIBLE
    if f.kind in (AlertKind.SCHEMA, AlertKind.VOLUME) or f.check in ("constant", "concept_drift"):
        return Severity.CRITICAL
    if f.kind == AlertKind.DATA_QUALITY and f.statistic >= 2 * f.threshold:
        return Severity.CRITICAL
    return Severity.WARNING


def message_for(f: Finding) -> str:
    if f.status == "RESOLVED":
        return f"{f.check} on {f.feature} is back within its threshold"
    if f.check == "stream_stopped" and f.evidence.get("partitions"):
        return f"no event on partitions {f.evidence['partitions']} for {f.statistic:.0f} s (limit {f.threshold:.0f} s)"
    if f.check in _RATE_WORDS:
        return (f"{_RATE_WORDS[f.check]} rate {f.statistic:.2%} over the last {f.window_count} events "
                f"exceeds {f.threshold:.2%}")
    if f.check == "label_join":
        return (f"only {f.statistic:.1%} of the last {f.window_count} settled labels joined a prediction "
                f"(limit {f.threshold:.0%}); the rest expired or were evicted: see join_ttl_s and max_pending")
    if f.check == "constant":
        return f"{f.feature} has a single value over the last {f.window_count} events"
    if f.check == "adwin":
        return (f"ADWIN: the mean of the recent window differs from the older one by {f.statistic:.3f} "
                f"standard deviations, above the bound {f.threshold:.3f}")
    if f.check == "cusum":
        return (f"CUSUM of the standardised {f.feature} over all partitions reached {f.statistic:.1f} "
                f"(threshold {f.threshold:g}): its mean moved {f.evidence.get('direction', '')}")
    if f.check == "page_hinkley":
        return f"Page-Hinkley cumulative deviation {f.statistic:.1f} exceeds {f.threshold:g}"
    if f.kind == AlertKind.SCHEMA:
        return f"writer schema {int(f.statistic)}: {f.evidence.get('detail', f.check)}"
    if f.check == "cbpe_accuracy":
        return (f"ESTIMATED accuracy (CBPE, from prediction scores, assuming calibration; no labels) "
                f"{f.statistic:.3f} is below {f.threshold:.3f}")
    if f.check == "concept_drift":
        return (f"{f.feature} over the last {f.window_count} labelled events is {f.statistic:.4f}, significantly "
                f"worse than the reference {f.evidence.get('reference_value', '?')}")
    if f.kind == AlertKind.CONCEPT_DRIFT:
        return f"{f.check.upper()} detects a rise in the error stream ({f.statistic:.4g} beyond {f.threshold:.4g})"
    if f.check == "stream_stopped":
        return f"no event for {f.statistic:.0f} s (limit {f.threshold:.0f} s)"
    if f.check == "multivariate":
        return (f"the features moved together off the reference's correlations: the reconstruction error's "
                f"{f.evidence.get('statistic', 'drift')} over the last {f.window_count} events is {f.statistic:.4f}, "
                f"above {f.threshold:g} (p={f.evidence.get('p_value', '?')}; mean error "
                f"{f.evidence.get('window_mean', '?')}, reference {f.evidence.get('reference_mean', '?')})")
    return (f"{f.check} {f.statistic:.4f} between the last {f.window_count} events and the reference "
            f"exceeds {f.threshold:g} (p={f.evidence.get('p_value', '?')})")


def evaluate(findings: list[Finding], part: PartitionLike, checks: dict[str, CheckSettings]) -> list[Alert]:
    """Alerts for the findings of one batch (a detector's repeat firings were already held in its incident by
    the partition: `detector_fired`). `checks` is unused since then, kept for the callers."""
    alerts = []
    for f in findings:
        check_key = f.check if f.status == "OPEN" else f"{f.check}/resolved"
        alerts.append(
            Alert(
                alert_id=alert_id_for(part.topic, part.partition, f.offset, part.model, f.feature, check_key),
                model=part.model,
                model_version=f.model_version,
                kind=f.kind,
                check=f.check,
                feature=f.feature,
                severity=severity_for(f),
                statistic=f.statistic,
                threshold=f.threshold,
                window=Window(f.first_offset, f.offset, f.first_event_time, f.event_time, f.window_count),
                source_topic=part.topic,
                source_partition=part.partition,
                source_offset=f.offset,
                event_time=f.event_time,
                message=message_for(f),
                evidence=dict(f.evidence),
                status=f.status,
            )
        )
    return alerts
