"""Issue 16 #1 and #2, without Kafka: what notify posts to Alertmanager and webhooks (against a real local HTTP
server), how it retries and gives up, the incident key the three transitions share, and registry-framed alerts
read by confluent-kafka's own AvroDeserializer."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.app.notify import (
    AlertmanagerReceiver,
    Notifier,
    WebhookReceiver,
    am_labels,
    incident_key,
    slack_message,
)
from monitor.core.incidents import CheckResult, Incidents, WindowSpan
from monitor.core.types import Alert, AlertKind, Severity, Window
from monitor.errors import ConfigError
from monitor.io.avro import AlertCodec, alert_schema_text
from monitor.io.notify_store import MemoryNotifyStore
from monitor.settings import AlertmanagerSettings, SecretSource, Settings, WebhookSettings
from tests.receivers import Receiver

NOW = 1_790_000_000_000  # epoch ms


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _lifecycle() -> list[Alert]:
    """OPEN (WARNING), UPDATED (CRITICAL), RESOLVED of one model-view incident, made by `Incidents`."""
    inc = Incidents("churn", "features", "t.features", features=10, resolve_windows=1, model_share=0.3)
    warn = CheckResult("age", "nan_rate", AlertKind.DATA_QUALITY, 0.08, 0.05, True, {"nan": "8"}, (1,))
    crit = CheckResult("age", "nan_rate", AlertKind.DATA_QUALITY, 0.30, 0.05, True, {"nan": "30"}, (2,))
    ok = CheckResult("age", "nan_rate", AlertKind.DATA_QUALITY, 0.0, 0.05, False)
    out: list[Alert] = []
    for i, results in enumerate([[warn], [crit], [ok], [ok]]):
        out += inc.update(results, WindowSpan(i, NOW - 60_000 + i, NOW - 60_000 + i, 100))
    assert [a.status for a in out] == ["OPEN", "UPDATED", "RESOLVED"]
    return out


def _settings(tmp_path: Path, notify: dict[str, Any]) -> Settings:
    return Settings.model_validate({"models": [{"name": "m", "features": {
        "topic": "f", "schema": str(tmp_path / "x.avsc")}}], "notify": notify})


def test_an_incidents_three_transitions_share_one_key_and_per_partition_alerts_get_one() -> None:
    opened, updated, resolved = _lifecycle()
    assert len({opened.alert_id, updated.alert_id, resolved.alert_id}) == 3
    assert incident_key(opened) == incident_key(updated) == incident_key(resolved)
    other = Incidents("churn", "features", "t.features", features=10, resolve_windows=1, model_share=0.3)
    later = other.update([CheckResult("age", "nan_rate", AlertKind.DATA_QUALITY, 0.08, 0.05, True)],
                         WindowSpan(9, 9, 9, 100))[0]
    assert incident_key(later) != incident_key(opened)  # the same check opening later is another incident
    part = Alert("x", "churn", None, AlertKind.DRIFT, "adwin", "age", Severity.WARNING, 1.0, 0.5,
                 Window(1, 2, None, None, 2), "t.features", 3, 2, None, "m", status="OPEN")
    assert incident_key(part) == incident_key(replace(part, alert_id="y", status="RESOLVED"))
    assert am_labels(replace(opened, segment="country=MT"))["segment"] == "country=MT"
    assert "segment" not in am_labels(opened)
    assert incident_key(part) != incident_key(replace(part, source_partition=4))


def test_alertmanager_gets_the_incident_firing_then_a_new_label_set_then_its_end() -> None:
    opened, updated, resolved = _lifecycle()
    store = MemoryNotifyStore()
    with Receiver() as am:
        rx = AlertmanagerReceiver(AlertmanagerSettings(url=am.url, resend_s=60,
                                                       generator_url="http://mon.example/{model}"),
                                  store, "unused")
        assert rx.deliver(opened, incident_key(opened), NOW).ok
        [[first]] = [p["body"] for p in am.received("/api/v2/alerts")]
        assert first["labels"] == {"alertname": "ModelMonitorDataQuality", "model": "churn", "feature": "age",
                                   "kind": "DATA_QUALITY", "check": "nan_rate", "severity": "warning",
                                   "stream": "t.features"}
        assert _ms(first["endsAt"]) == NOW + 240_000  # the lease: 4 x resend_s
        assert _ms(first["startsAt"]) == NOW - 60_000  # the incident's first event time
        assert first["generatorURL"] == "http://mon.example/churn"
        assert first["annotations"]["alert_id"] == opened.alert_id and "nan" in first["annotations"]["description"]

        assert rx.deliver(updated, incident_key(updated), NOW + 1000).ok
        ended, rising = am.received("/api/v2/alerts")[1]["body"]
        assert ended["labels"] == first["labels"] and _ms(ended["endsAt"]) == NOW + 1000
        assert rising["labels"]["severity"] == "critical" and rising["startsAt"] == first["startsAt"]

        assert rx.refresh(NOW + 60_000).ok  # the resend keeps the open one firing
        [again] = am.received("/api/v2/alerts")[2]["body"]
        assert again["labels"] == rising["labels"] and _ms(again["endsAt"]) == NOW + 60_000 + 240_000

        assert rx.deliver(resolved, incident_key(resolved), NOW + 2000).ok
        [end] = am.received("/api/v2/alerts")[3]["body"]
        assert end["labels"] == rising["labels"] and _ms(end["endsAt"]) == NOW + 2000
        assert store.firing() == {}
        assert rx.refresh(NOW + 3000).ok and len(am.posts) == 4  # nothing firing: nothing posted


def test_webhooks_post_json_or_slack_with_the_alert_id_and_a_token_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    opened, _, _ = _lifecycle()
    monkeypatch.setenv("HOOK_TOKEN", "s3cret")
    with Receiver() as hook:
        monkeypatch.setenv("HOOK_URL", hook.url + "/slack")
        generic = WebhookReceiver(WebhookSettings(name="ops", url=hook.url + "/json",
                                                  bearer_token=SecretSource(env="HOOK_TOKEN")))
        slack = WebhookReceiver(WebhookSettings(name="chat", url_secret=SecretSource(env="HOOK_URL"),
                                                format="slack"))
        assert generic.deliver(opened, "inc-1", NOW).ok and slack.deliver(opened, "inc-1", NOW).ok
        [body] = [p for p in hook.received("/json")]
        assert body["headers"]["Authorization"] == "Bearer s3cret"
        assert body["headers"]["Idempotency-Key"] == opened.alert_id
        alert = body["body"]["alert"]
        assert body["body"]["incident"] == "inc-1" and alert["kind"] == "DATA_QUALITY"
        assert alert["severity"] == "WARNING" and alert["evidence"] == opened.evidence
        text = hook.received("/slack")[0]["body"]["text"]
        assert "*OPEN*" in text and "churn" in text and "`age`" in text and "nan: 8" in text
    assert slack_message(opened)["text"].count("```") == 2


def test_a_secret_url_that_is_not_set_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_URL", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_URL is not set"):
        WebhookReceiver(WebhookSettings(name="x", url_secret=SecretSource(env="NOT_SET_URL")))


def test_retries_while_the_receiver_is_busy_and_gives_up_on_a_refusal(tmp_path: Path) -> None:
    """503 then 429 then 200: delivered on the third try; 400: refused for good at once (no retry)."""
    opened, _, _ = _lifecycle()
    with Receiver() as hook:
        hook.status["/busy"] = [503, 429, 200]
        hook.status["/bad"] = [400]
        settings = _settings(tmp_path, {"give_up_s": 30, "webhooks": [
            {"name": "busy", "url": hook.url + "/busy"}, {"name": "bad", "url": hook.url + "/bad"}]})
        notifier = Notifier(settings, MemoryNotifyStore())
        busy, bad = notifier.receivers
        got = notifier._deliver(busy, opened, "i")
        assert got is not None and got.ok and [p["status"] for p in hook.received("/busy", None)] == [503, 429, 200]
        refused = notifier._deliver(bad, opened, "i")
        assert refused is not None and refused.permanent and refused.status == 400
        assert len(hook.received("/bad", None)) == 1
        assert notifier.metrics.notify_retries.labels("busy")._value.get() == 2


def test_notify_settings_need_a_receiver_and_unique_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="configure alertmanager or at least one webhook"):
        _settings(tmp_path, {})
    with pytest.raises(ValueError, match="unique"):
        _settings(tmp_path, {"webhooks": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]})
    with pytest.raises(ValueError, match="exactly one of url or url_secret"):
        _settings(tmp_path, {"webhooks": [{"name": "a"}]})


def test_registry_framed_alerts_are_read_by_confluents_avro_deserializer() -> None:
    """alerts_format: confluent: magic byte, the registered id, the Avro body; Confluent's AvroDeserializer with
    a registry client (an in-process mock registry here; the integration test uses a registry process) reads
    the alert back with no code of ours, and AlertCodec reads both framings."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    opened, updated, resolved = _lifecycle()
    client = SchemaRegistryClient.new_client({"url": "mock://notify-unit"})
    schema_id = client.register_schema("alerts-value", Schema(alert_schema_text(), "AVRO"))
    framed = AlertCodec(schema_id)
    deserialize = AvroDeserializer(client)
    for alert in (opened, updated, resolved):
        payload = framed.encode(alert)
        assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == schema_id
        assert payload[5:] == AlertCodec().encode(alert)
        record = deserialize(payload, SerializationContext("alerts", MessageField.VALUE))
        assert record["alert_id"] == alert.alert_id and record["status"] == alert.status
        assert record["severity"] == str(alert.severity) and record["evidence"] == alert.evidence
        assert AlertCodec().decode(payload) == alert == AlertCodec().decode(AlertCodec().encode(alert))
    assert json.loads(alert_schema_text())["name"] == "Alert"


def _message(alert: Alert, timestamp_ms: int, offset: int = 0) -> Any:
    from confluent_kafka import Message

    return Message(topic="alerts", partition=0, offset=offset, key=alert.model.encode(),
                   value=AlertCodec().encode(alert), timestamp=(1, timestamp_ms), headers=None)


def test_handle_forwards_once_skips_what_is_below_the_floor_and_pages_nobody_for_history(tmp_path: Path) -> None:
    """One alert, two receivers: each gets it once (a second read is skipped by the marks); an OPEN below
    min_severity goes nowhere, its RESOLVED still goes; an alert older than max_age_s reaches Alertmanager (it
    learns what is open) but no webhook; with in_doubt: resend, an alert a crash left in flight is sent again."""
    opened, _, resolved = _lifecycle()
    now_s = NOW / 1000
    with Receiver() as rx:
        settings = _settings(tmp_path, {"max_age_s": 3600, "min_severity": "CRITICAL", "alertmanager": {
            "url": rx.url}, "webhooks": [{"name": "hook", "url": rx.url + "/hook", "in_doubt": "resend"}]})
        store = MemoryNotifyStore()
        notifier = Notifier(settings, store, clock=lambda: now_s)
        assert notifier.handle(_message(opened, NOW))  # WARNING < CRITICAL: not forwarded, but marked
        assert rx.posts == [] and store.sent("hook", opened.alert_id) and store.sent("alertmanager", opened.alert_id)
        assert notifier.handle(_message(resolved, NOW))  # RESOLVED always goes (Alertmanager: nothing firing)
        assert [p["body"]["alert"]["alert_id"] for p in rx.received("/hook")] == [resolved.alert_id]
        assert rx.received("/api/v2/alerts") == []

        critical = replace(opened, alert_id="c1", severity=Severity.CRITICAL,
                           evidence={**opened.evidence, "incident": "other"})
        old = _message(critical, NOW - 3_601_000)
        assert notifier.handle(old) and notifier.handle(old)  # read twice: the marks keep it to once
        assert len(rx.received("/api/v2/alerts")) == 1 and len(rx.received("/hook")) == 1  # too old for the hook
        assert store.firing().keys() == {"other"}

        fresh = replace(critical, alert_id="c2")
        store.begin("hook", "c2", NOW - 1)  # a crash while it was in flight
        assert notifier.handle(_message(fresh, NOW))
        assert [p["body"]["alert"]["alert_id"] for p in rx.received("/hook")] == [resolved.alert_id, "c2"]
        assert not store.in_doubt("hook", "c2") and store.sent("hook", "c2")
        counts = {s.labels["result"]: s.value for m in notifier.metrics.registry.collect() for s in m.samples
                  if s.name == "monitor_notify_alerts_total" and s.labels.get("receiver") == "hook"}
        assert counts == {"below_min_severity": 1, "delivered": 2, "too_old": 1, "duplicate_skipped": 1}


def test_registry_framed_alerts_need_a_registry_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"set schema_registry\.url"):
        Settings.model_validate({"alerts_format": "confluent", "models": [
            {"name": "m", "features": {"topic": "f", "schema": str(tmp_path / "x.avsc")}}]})


def test_a_stop_while_retrying_a_refusing_receiver_leaves_the_alert_to_be_sent_again(tmp_path: Path) -> None:
    """SIGTERM while a receiver answers 503: the alert is not committed, not marked, and not in doubt (the
    receiver said no), so the next start sends it; a stop after an unanswered attempt leaves it in doubt."""
    opened, _, _ = _lifecycle()
    with Receiver() as rx:
        rx.status["/down"] = [503]
        settings = _settings(tmp_path, {"webhooks": [{"name": "hook", "url": rx.url + "/down"}]})
        store = MemoryNotifyStore()
        notifier = Notifier(settings, store, clock=lambda: NOW / 1000)
        notifier.stop_event.set()
        assert notifier.handle(_message(opened, NOW)) is False
        assert not store.sent("hook", opened.alert_id) and not store.in_doubt("hook", opened.alert_id)
    # Nothing listening: never reached, not in doubt either.
    store = MemoryNotifyStore()
    notifier = Notifier(_settings(tmp_path, {"webhooks": [{"name": "gone", "url": f"http://127.0.0.1:{_closed_port()}/"}]}),
                        store, clock=lambda: NOW / 1000)
    notifier.stop_event.set()
    assert notifier.handle(_message(opened, NOW)) is False
    assert not store.in_doubt("gone", opened.alert_id)
    # A receiver that reads the request and hangs up without answering: it may have taken it. In doubt.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        store = MemoryNotifyStore()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        notifier = Notifier(_settings(tmp_path, {"webhooks": [{"name": "mute", "url": url}]}), store,
                            clock=lambda: NOW / 1000)
        notifier.stop_event.set()
        assert notifier.handle(_message(opened, NOW)) is False
        assert store.in_doubt("mute", opened.alert_id)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: nothing listens there


def test_the_readmes_alertmanager_and_notify_examples_are_valid(tmp_path: Path) -> None:
    """What a newcomer copies: the README's `notify:` section loads, and its alertmanager.yml passes Debian's
    `amtool check-config`."""
    import re
    import subprocess

    import yaml

    from tests.helpers import debian_tool

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    notify = yaml.safe_load(re.search(r"```yaml\n(notify:.*?)```", readme, re.S).group(1))  # type: ignore[union-attr]
    settings = _settings(tmp_path, notify["notify"])
    assert settings.notify is not None and [w.name for w in settings.notify.webhooks] == ["oncall-slack",
                                                                                          "incident-service"]
    block = re.search(r"  ```yaml\n  # alertmanager.yml\n(.*?)  ```", readme, re.S).group(1)  # type: ignore[union-attr]
    (tmp_path / "alertmanager.yml").write_text("\n".join(line[2:] for line in block.splitlines()) + "\n")
    out = subprocess.run([debian_tool("amtool", "prometheus-alertmanager"), "check-config",
                          str(tmp_path / "alertmanager.yml")], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
