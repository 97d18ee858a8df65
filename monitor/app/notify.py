"""`model-monitor notify`: the alerts topic forwarded to Prometheus Alertmanager and to webhooks.

A consumer group of its own reads the alerts topic (plain or registry-framed) one alert at a time. For each
receiver not yet marked as having it (`io.notify_store`), the alert is posted, retried while the receiver is
unreachable or busy (5xx, 408, 429) for up to `give_up_s`, and sent to the dead-letter topic with the receiver's
answer when refused for good (another 4xx) or given up. The receiver's mark is written as soon as it accepted,
the offset committed once every receiver is done: a restart (or a kill -9) reads the uncommitted alerts again and
skips what each receiver already has. A delivery is recorded as begun before its request goes out: an alert
found begun and not marked after a crash may or may not have arrived, and a webhook then never gets it twice
(`in_doubt: dead_letter`, the default: it goes to the dead-letter topic as `delivery_in_doubt`) or gets it again
(`in_doubt: resend`, for receivers that de-duplicate by the `Idempotency-Key` header every delivery carries).
Alertmanager is always sent again: it de-duplicates by labels.

Alertmanager sees incidents, not events: an OPEN (or UPDATED) posts the incident as a firing alert (labels
model, feature, kind, check, severity, stream, and partition or segment when there is one), an UPDATED whose
labels changed ends the old label set, a RESOLVED ends it (endsAt now). Firing incidents are posted again every
`resend_s` with endsAt a lease ahead, as Prometheus does, so an incident stays firing while it is open and
expires if notify stops for good. Routing, grouping, inhibition and silences are Alertmanager's.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from monitor.core.types import Alert, Reject
from monitor.errors import ConfigError, DependencyUnavailable
from monitor.io.avro import AlertCodec
from monitor.io.kafka import dead_letter_headers, poll_paused, to_raw
from monitor.io.notify_store import NotifyStore
from monitor.io.receivers import Outcome, post_json
from monitor.ops.logs import librdkafka_logger
from monitor.ops.metrics import Metrics
from monitor.settings import AlertmanagerSettings, NotifySettings, Settings, WebhookSettings

log = structlog.get_logger("monitor.notify")
SEVERITY_RANK = {"INFO": 0, "POSSIBLE": 1, "WARNING": 2, "CRITICAL": 3}
MARK_TRIM_S = 3600.0


def incident_key(alert: Alert) -> str:
    """The key an incident's OPEN, UPDATED and RESOLVED share: the model view's `incident` evidence, or for a
    per-partition alert its model, partition, feature and check."""
    given = alert.evidence.get("incident")
    if given:
        return given
    text = "\x1f".join((alert.model, alert.source_topic, str(alert.source_partition), alert.feature, alert.check))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def alert_record(alert: Alert) -> dict[str, Any]:
    """The alert as JSON-ready values (enums as their names), as in schemas/alert.avsc."""
    record = asdict(alert)
    record["kind"] = str(alert.kind)
    record["severity"] = str(alert.severity)
    return record


def _iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _camel(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


def am_labels(alert: Alert) -> dict[str, str]:
    labels = {"alertname": f"ModelMonitor{_camel(str(alert.kind))}", "model": alert.model,
              "feature": alert.feature, "kind": str(alert.kind), "check": alert.check,
              "severity": str(alert.severity).lower(), "stream": alert.source_topic}
    if alert.source_partition >= 0:
        labels["partition"] = str(alert.source_partition)
    if alert.segment:
        labels["segment"] = alert.segment
    return labels


def evidence_text(alert: Alert) -> str:
    return "\n".join(f"{k}: {v}" for k, v in sorted(alert.evidence.items()))


def am_alert(alert: Alert, now_ms: int, lease_ms: int, generator_url: str) -> dict[str, Any]:
    """An OPEN or UPDATED alert as one of Alertmanager's v2 postable alerts, firing for `lease_ms`."""
    first = alert.evidence.get("first_event_time") or ""
    starts = min(int(first) if first.isdigit() else (alert.event_time or now_ms), now_ms)
    annotations = {"summary": alert.message, "description": evidence_text(alert), "alert_id": alert.alert_id,
                   "statistic": repr(alert.statistic), "threshold": repr(alert.threshold)}
    if alert.model_version:
        annotations["model_version"] = alert.model_version
    return {"labels": am_labels(alert), "annotations": annotations, "startsAt": _iso(starts),
            "endsAt": _iso(now_ms + lease_ms), "generatorURL": generator_url.replace("{model}", alert.model)}


def slack_message(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message (also read by Mattermost, Rocket.Chat, Teams' Slack-compatible hooks)."""
    mark = {"OPEN": ":rotating_light:", "UPDATED": ":arrow_double_up:", "RESOLVED": ":white_check_mark:"}
    head = (f"{mark.get(alert.status, '')} *{alert.status}* {alert.kind} on *{alert.model}* / `{alert.feature}` "
            f"({alert.check}, {str(alert.severity).lower()})")
    lines = [head.strip(), alert.message]
    if alert.evidence:
        lines.append("```" + evidence_text(alert)[:2500] + "```")
    return {"text": "\n".join(line for line in lines if line)}


class Receiver(Protocol):
    name: str
    in_doubt: str  # "dead_letter" or "resend": an alert a crash left in flight

    def deliver(self, alert: Alert, incident: str, now_ms: int) -> Outcome: ...


class WebhookReceiver:
    """A generic JSON POST ({"receiver", "incident", "alert"}) or a Slack-compatible message."""

    def __init__(self, cfg: WebhookSettings) -> None:
        self.name = cfg.name
        self.format = cfg.format
        self.in_doubt: str = cfg.in_doubt
        self.timeout = cfg.timeout_s
        self.url = cfg.url if cfg.url is not None else (
            cfg.url_secret.read(f"webhook {cfg.name} url") if cfg.url_secret else "")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook {cfg.name}: its url must be http:// or https://")
        self.headers = {"Authorization": f"Bearer {cfg.bearer_token.read(f'webhook {cfg.name} token')}"} \
            if cfg.bearer_token else {}

    def deliver(self, alert: Alert, incident: str, now_ms: int) -> Outcome:
        body = slack_message(alert) if self.format == "slack" else {
            "receiver": self.name, "incident": incident, "alert": alert_record(alert)}
        return post_json(self.url, body, {**self.headers, "Idempotency-Key": alert.alert_id,
                                          "X-Model-Monitor-Alert-Id": alert.alert_id}, self.timeout)


class AlertmanagerReceiver:
    name = "alertmanager"

    in_doubt = "resend"  # a repeated post of the same labels is the same alert to Alertmanager

    def __init__(self, cfg: AlertmanagerSettings, store: NotifyStore, default_generator_url: str) -> None:
        self.url = cfg.url.rstrip("/") + "/api/v2/alerts"
        self.timeout = cfg.timeout_s
        self.resend_s = cfg.resend_s
        self.lease_ms = int(max(4 * cfg.resend_s, 180.0) * 1000)
        self.generator_url = cfg.generator_url or default_generator_url
        self.headers = {"Authorization": f"Bearer {cfg.bearer_token.read('alertmanager token')}"} \
            if cfg.bearer_token else {}
        self.store = store

    def _post(self, alerts: list[dict[str, Any]]) -> Outcome:
        return post_json(self.url, alerts, self.headers, self.timeout)

    def deliver(self, alert: Alert, incident: str, now_ms: int) -> Outcome:
        before = self.store.firing().get(incident)
        if alert.status == "RESOLVED":
            if before is None:
                return Outcome(True, detail="not firing")  # opened before this group's history: nothing to end
            outcome = self._post([{**before, "endsAt": _iso(now_ms)}])
            if outcome.ok:
                self.store.end_firing(incident)
            return outcome
        posted = am_alert(alert, now_ms, self.lease_ms, self.generator_url)
        if before is not None:
            posted["startsAt"] = before["startsAt"]
        batch = [posted]
        if before is not None and before["labels"] != posted["labels"]:
            batch.insert(0, {**before, "endsAt": _iso(now_ms)})  # a new severity or lead check: a new label set
        outcome = self._post(batch)
        if outcome.ok:
            self.store.set_firing(incident, posted)
        return outcome

    def refresh(self, now_ms: int) -> Outcome:
        """Post every firing incident again with a new lease (what keeps it firing in Alertmanager)."""
        firing = self.store.firing()
        if not firing:
            return Outcome(True)
        return self._post([{**a, "endsAt": _iso(now_ms + self.lease_ms)} for a in firing.values()])


def build_receivers(settings: Settings, store: NotifyStore) -> list[Receiver]:
    n = settings.notify
    if n is None:
        raise ConfigError("notify needs a notify: section in the config (alertmanager and/or webhooks)")
    receivers: list[Receiver] = []
    if n.alertmanager is not None:
        default_url = f"http://{settings.http.host}:{settings.http.port}/"
        receivers.append(AlertmanagerReceiver(n.alertmanager, store, default_url))
    receivers += [WebhookReceiver(w) for w in n.webhooks]
    return receivers


class Notifier:
    """One consumer of the alerts topic; `run` until `stop`."""

    def __init__(self, settings: Settings, store: NotifyStore, metrics: Metrics | None = None,
                 receivers: Sequence[Receiver] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if settings.notify is None:
            raise ConfigError("notify needs a notify: section in the config (alertmanager and/or webhooks)")
        self.settings = settings
        self.n: NotifySettings = settings.notify
        self.group = settings.notify_group()
        self.store = store
        self.metrics = metrics or Metrics()
        self.receivers = list(receivers) if receivers is not None else build_receivers(settings, store)
        self.codec = AlertCodec()
        self.clock = clock
        self.stop_event = threading.Event()
        self.alive = True
        self.ready = False
        self.producer: Producer | None = None
        self._next_refresh = 0.0
        self._next_trim = 0.0

    def is_live(self) -> bool:
        return self.alive

    def is_ready(self) -> bool:
        return self.alive and self.ready

    def stop(self) -> None:
        self.stop_event.set()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- one alert ------------------------------------------------------------------------------
    def handle(self, msg: Message) -> bool:
        """Every receiver's part of one alert. False: stopped before the end (do not commit it)."""
        value = msg.value()
        try:
            if value is None:
                raise ValueError("no value")
            alert = self.codec.decode(value)
        except Exception as exc:
            self._dead_letter(msg, "undecodable_alert", type(exc).__name__, "the alerts topic has a message that "
                              "is not an alert of schemas/alert.avsc", None)
            return True
        incident = incident_key(alert)
        ts_type, ts = msg.timestamp()
        age_s = (self._now_ms() - ts) / 1000 if ts_type != 0 and ts > 0 else 0.0
        forward = alert.status == "RESOLVED" or \
            SEVERITY_RANK.get(str(alert.severity), 2) >= SEVERITY_RANK[self.n.min_severity]
        for receiver in self.receivers:
            if self.store.sent(receiver.name, alert.alert_id):
                self.metrics.notify.labels(receiver.name, "duplicate_skipped").inc()
                continue
            if not forward:
                result = "below_min_severity"
            elif age_s > self.n.max_age_s and not isinstance(receiver, AlertmanagerReceiver):
                result = "too_old"  # Alertmanager still learns what is open; people are not paged for history
            elif receiver.in_doubt == "dead_letter" and \
                    self.store.in_doubt(receiver.name, alert.alert_id):
                # A crash came while this alert was in flight: it may have arrived. Never twice: it goes to the
                # dead-letter topic, named, for a person to check.
                result = "in_doubt"
                self._dead_letter(msg, "delivery_in_doubt", "NotifyInDoubt", f"{receiver.name}: a restart found "
                                  "this delivery begun and not confirmed; not sent again", receiver.name)
            else:
                self.store.begin(receiver.name, alert.alert_id, self._now_ms())
                outcome = self._deliver(receiver, alert, incident)
                if outcome.stopped:
                    if not outcome.maybe_delivered:  # refused or never reached: it did not take the alert
                        self.store.abandon(receiver.name, alert.alert_id)
                    return False
                if outcome.ok:
                    result = "delivered"
                else:
                    result = "dead_lettered"
                    self._dead_letter(msg, "receiver_refused" if outcome.permanent else "receiver_unavailable",
                                      "NotifyFailed", f"{receiver.name}: {outcome.detail}", receiver.name)
            self.store.mark(receiver.name, alert.alert_id, self._now_ms())
            self.metrics.notify.labels(receiver.name, result).inc()
            log.info("notify.alert", receiver=receiver.name, result=result, alert_id=alert.alert_id,
                     incident=incident, model=alert.model, feature=alert.feature, status=alert.status)
        return True

    def _deliver(self, receiver: Receiver, alert: Alert, incident: str) -> Outcome:
        """Retried with backoff while worth it, up to give_up_s; `stopped` when the process stops meanwhile
        (with the last attempt's answer)."""
        deadline = time.monotonic() + self.n.give_up_s
        pause = 0.5
        while True:
            outcome = receiver.deliver(alert, incident, self._now_ms())
            if outcome.ok or outcome.permanent:
                return outcome
            self.metrics.notify_retries.labels(receiver.name).inc()
            if time.monotonic() + pause > deadline:
                return Outcome(False, False, f"gave up after {self.n.give_up_s:g} s: {outcome.detail}",
                               outcome.status)
            log.warning("notify.retry", receiver=receiver.name, detail=outcome.detail, alert_id=alert.alert_id,
                        in_s=pause)
            if self.stop_event.wait(pause):
                return Outcome(False, False, "stopped", outcome.status, stopped=True,
                               maybe_delivered=outcome.maybe_delivered)
            pause = min(pause * 2, 30.0)

    def _dead_letter(self, msg: Message, reason: str, error_class: str, message: str,
                     receiver: str | None) -> None:
        record = to_raw(msg)
        headers = dead_letter_headers(Reject(record, reason, error_class, message))
        if receiver is not None:
            headers.append(("mm.error.receiver", receiver.encode()))
        log.warning("notify.dead_letter", reason=reason, receiver=receiver, topic=record.topic,
                    partition=record.partition, offset=record.offset, detail=message)
        failed: list[KafkaError] = []

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        assert self.producer is not None
        while True:
            failed.clear()
            self.producer.produce(self.settings.dead_letter_topic, key=record.key, value=record.value,
                                  headers=headers, on_delivery=report)
            if self.producer.flush(30) == 0 and not failed:
                return
            log.warning("notify.dead_letter_failed", error=str(failed[0]) if failed else "timeout")
            if self.stop_event.wait(5.0):
                raise DependencyUnavailable("dead-letter topic unreachable while stopping", dependency="kafka")

    # -- the loop -------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic()
        for receiver in self.receivers:
            if isinstance(receiver, AlertmanagerReceiver) and now >= self._next_refresh:
                outcome = receiver.refresh(self._now_ms())
                self._next_refresh = now + (receiver.resend_s if outcome.ok else min(receiver.resend_s, 5.0))
                if not outcome.ok:
                    log.warning("notify.refresh_failed", receiver=receiver.name, detail=outcome.detail)
                self.metrics.notify_firing.set(len(self.store.firing()))
        if now >= self._next_trim:
            before = self._now_ms() - int(self.n.keep_marks_days * 86_400_000)
            for receiver in self.receivers:
                self.store.forget_before(receiver.name, before)
            self._next_trim = now + MARK_TRIM_S

    def consumer_config(self) -> dict[str, Any]:
        s = self.settings
        conf: dict[str, Any] = {**s.consumer_config(), "group.id": self.group,
                                "auto.offset.reset": self.n.start_from}
        conf.pop("group.instance.id", None)
        # One alert may wait give_up_s per receiver before the next poll.
        wait_ms = int((self.n.give_up_s * max(len(self.receivers), 1) + 120) * 1000)
        conf["max.poll.interval.ms"] = str(min(max(int(conf.get("max.poll.interval.ms", 300000)), wait_ms),
                                               86_400_000))
        return conf

    def run(self) -> int:
        s = self.settings
        hooks = {"logger": librdkafka_logger()}
        try:
            consumer = Consumer({**self.consumer_config(), **hooks})
            self.producer = Producer({**s.producer_config(), **hooks})
        except KafkaException as exc:
            raise ConfigError(f"kafka/consumer settings: {exc.args[0].str()}") from exc
        consumer.subscribe([s.alerts_topic])
        log.info("notify.started", group=self.group, topic=s.alerts_topic,
                 receivers=[r.name for r in self.receivers], pid=os.getpid())
        pending: Message | None = None  # an alert a dependency outage interrupted: done again, not re-read
        try:
            while not self.stop_event.is_set():
                try:
                    self._housekeeping()
                    msg = pending if pending is not None else consumer.poll(0.5)
                    if msg is None:
                        self.ready = True
                        continue
                    error = msg.error()
                    if error is not None:
                        if error.fatal():
                            log.error("notify.kafka_fatal", error=str(error))
                            return 1
                        continue
                    if not self.handle(msg):
                        break  # stopped mid-alert: its offset stays uncommitted
                except DependencyUnavailable as exc:
                    if pending is None:
                        log.warning("dependency.down", dependency=exc.dependency, error=str(exc))
                        consumer.pause(consumer.assignment())
                    self.ready = False
                    pending = msg if pending is None else pending
                    deadline = time.monotonic() + 2.0
                    while time.monotonic() < deadline and not self.stop_event.is_set():
                        poll_paused(consumer, 0.2)  # keeps the group membership; a message is put back
                    continue
                if pending is not None:
                    pending = None
                    consumer.resume(consumer.assignment())
                    log.info("dependency.up")
                self.ready = True
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None
                try:
                    consumer.commit(offsets=[TopicPartition(topic, partition, offset + 1)], asynchronous=False)
                except KafkaException as exc:  # the marks keep a re-read alert from going out again
                    log.warning("notify.commit_failed", error=str(exc))
        finally:
            self.alive = False
            consumer.close()
            if self.producer is not None:
                self.producer.flush(10)
        log.info("notify.stopped")
        return 0
