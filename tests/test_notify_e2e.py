"""Issue 16 #1 and #2 on real parts: `model-monitor notify` between a real Kafka alerts topic, a real Redis, and
Debian's real `prometheus-alertmanager` on loopback (its own webhook receiver and ours are local HTTP servers of
the test); a kill -9 of notify sends nothing twice; a registry-framed daemon run is read by confluent-kafka's
`AvroDeserializer` with a registry client (a registry process: tests/registry_server.py) and notified from
`run` itself. `.ci/run` installs Debian's prometheus-alertmanager; without it the Alertmanager test is skipped
locally and fails in CI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from monitor.core.types import Alert, AlertKind, Severity, Window
from monitor.io.avro import AlertCodec
from tests.helpers import (
    FAST_GROUP,
    MODEL_VIEW,
    DaemonProcess,
    Setup,
    assert_key_layout,
    both_stages_done,
    debian_tool,
    free_port,
    produce_simulated,
    read_topic,
    wait_until,
)
from tests.receivers import Receiver

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def _alert(model: str, status: str, n: int = 0, severity: Severity = Severity.WARNING) -> Alert:
    """A model-view alert as stage 2 writes it (the OPEN and RESOLVED of one incident share `incident`)."""
    return Alert(alert_id=f"{model}-{n}-{status}", model=model, model_version="v1", kind=AlertKind.DATA_QUALITY,
                 check="nan_rate", feature="age", severity=Severity.INFO if status == "RESOLVED" else severity,
                 statistic=0.3, threshold=0.05, window=Window(-1, -1, None, None, 500),
                 source_topic="features", source_partition=-1, source_offset=-1, event_time=None,
                 message="NaN rate 30.00% over the last 500 events exceeds 5.00%",
                 evidence={"incident": f"{model}-{n}", "partitions": "0,1"}, status=status)


def _produce(setup: Setup, alerts: list[Alert]) -> list[bytes]:
    codec = AlertCodec()
    producer = Producer({"bootstrap.servers": setup.bootstrap, "enable.idempotence": True})
    values = [codec.encode(a) for a in alerts]
    for alert, value in zip(alerts, values, strict=True):
        producer.produce(setup.alerts, key=alert.model.encode(), value=value)
    assert producer.flush(60) == 0
    return values


def _tool(name: str) -> str:
    return debian_tool(name, name)


def _http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@contextmanager
def alertmanager(tmp: Path, webhook_url: str) -> Iterator[str]:
    """Debian's Alertmanager on loopback, no clustering, routing every alert to `webhook_url` within ~1 s."""
    binary = _tool("prometheus-alertmanager")
    port = free_port()
    config = tmp / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "test", "group_by": ["alertname", "model"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}]}))
    log = (tmp / "alertmanager.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 60, "alertmanager to be ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _am_alerts(url: str) -> list[dict[str, Any]]:
    return list(_http("GET", url + "/api/v2/alerts"))


def _am_notified(am_hook: Receiver, model: str, status: str) -> list[dict[str, Any]]:
    """Alertmanager's own webhook notifications (its payload) naming `model` with `status`."""
    return [a for p in am_hook.received("/am") for a in p["body"]["alerts"]
            if a["labels"].get("model") == model and a["status"] == status]


def _setup(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Setup:
    setup = Setup(uuid.uuid4().hex[:10], kafka_bootstrap, redis_url, tmp_path)
    setup.create_topics()
    return setup


def test_alertmanager_fires_resolves_and_silences_what_notify_forwards(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """An OPEN incident is a firing alert in Alertmanager (and Alertmanager notifies its receiver); its RESOLVED
    ends it; a silence set in Alertmanager suppresses the other model's notification. The webhooks get each
    alert once; the one that refuses everything (400) leaves each alert on the dead-letter topic with why."""
    setup = _setup(kafka_bootstrap, redis_url, tmp_path)
    with Receiver() as hooks, alertmanager(tmp_path, hooks.url + "/am") as am:
        hooks.status["/refuse"] = [400]
        now = datetime.now(UTC)
        silence = _http("POST", am + "/api/v2/silences", {
            "matchers": [{"name": "model", "value": "quiet", "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test", "comment": "maintenance"})["silenceID"]
        config = setup.write_config({"notify": {
            "alertmanager": {"url": am, "resend_s": 2, "generator_url": "http://status.example/{model}"},
            "webhooks": [{"name": "hook", "url": hooks.url + "/hook"},
                         {"name": "refuse", "url": hooks.url + "/refuse"}]}})
        daemons.append(notify := DaemonProcess(config, tmp_path / "notify.log", "notify").start())
        first = _produce(setup, [_alert("churn", "OPEN"), _alert("quiet", "OPEN")])

        def states() -> dict[str, str]:
            return {a["labels"]["model"]: a["status"]["state"] for a in _am_alerts(am)}

        wait_until(lambda: states() == {"churn": "active", "quiet": "suppressed"}, 60,
                   "churn firing and quiet silenced in Alertmanager")
        [quiet] = [a for a in _am_alerts(am) if a["labels"]["model"] == "quiet"]
        assert quiet["status"]["silencedBy"] == [silence]
        [churn] = [a for a in _am_alerts(am) if a["labels"]["model"] == "churn"]
        assert churn["labels"] == {"alertname": "ModelMonitorDataQuality", "model": "churn", "feature": "age",
                                   "kind": "DATA_QUALITY", "check": "nan_rate", "severity": "warning",
                                   "stream": "features"}
        assert churn["generatorURL"] == "http://status.example/churn"
        wait_until(lambda: _am_notified(hooks, "churn", "firing"), 60, "Alertmanager to notify churn firing")

        resolved = _produce(setup, [_alert("churn", "RESOLVED")])
        wait_until(lambda: _am_notified(hooks, "churn", "resolved"), 60, "Alertmanager to notify churn resolved")
        assert "churn" not in states()  # ended: no longer an active alert
        # Both groups have long passed their group_wait: the silenced one was never notified.
        assert _am_notified(hooks, "quiet", "firing") == [] and len(_am_notified(hooks, "churn", "firing")) == 1

        wait_until(lambda: len(hooks.received("/hook")) == 3, 30, "the webhook to get the three alerts")
        got = [p["body"]["alert"]["alert_id"] for p in hooks.received("/hook")]
        assert got == ["churn-0-OPEN", "quiet-0-OPEN", "churn-0-RESOLVED"]
        assert [p["headers"]["Idempotency-Key"] for p in hooks.received("/hook")] == got
        dead = read_topic(setup.bootstrap, setup.dead_letter, expected=3)
        assert sorted(m.value() for m in dead) == sorted(first + resolved)
        for m in dead:
            headers = {k: v.decode() for k, v in m.headers()}
            assert headers["mm.error.reason"] == "receiver_refused" and headers["mm.error.receiver"] == "refuse"
            assert headers["mm.error.message"] == "refuse: HTTP 400" and headers["mm.error.topic"] == setup.alerts
        assert len(hooks.received("/refuse", None)) == 3  # refused for good: not retried
        assert notify.terminate() == 0
    families = assert_key_layout(redis_url, setup.prefix, setup.group)
    assert families.get("notify") == 4, families  # a sent set per receiver, and the firing hash (quiet's)


def test_a_kill_9_of_notify_sends_nothing_twice(kafka_bootstrap: str, redis_url: str, tmp_path: Path,
                                                 daemons: list[DaemonProcess]) -> None:
    """300 alerts to a webhook; notify killed with SIGKILL three times, each right after the receiver took an
    alert (while notify waits for the answer: the worst moment), and restarted. The receiver gets no alert twice;
    an alert a kill left in flight is on the dead-letter topic as delivery_in_doubt; every other one arrived."""
    setup = _setup(kafka_bootstrap, redis_url, tmp_path)
    with Receiver(delay_s=0.01) as hooks:
        config = setup.write_config({"consumer": FAST_GROUP,
                                     "notify": {"webhooks": [{"name": "hook", "url": hooks.url + "/hook"}]}})
        alerts = [_alert(f"m{i % 7}", "OPEN", i) for i in range(300)]
        values = dict(zip(_produce(setup, alerts), (a.alert_id for a in alerts), strict=True))
        log = tmp_path / "notify.log"
        for at in (60, 150, 230):
            daemons.append(notify := DaemonProcess(config, log, "notify").start())
            wait_until(lambda at=at: len(hooks.received("/hook")) >= at, 120, f"{at} alerts delivered")
            notify.signal(signal.SIGKILL)
            assert notify.proc is not None and notify.proc.wait(10) == -signal.SIGKILL
        daemons.append(notify := DaemonProcess(config, log, "notify").start())

        def accounted() -> bool:
            got = {p["body"]["alert"]["alert_id"] for p in hooks.received("/hook")}
            doubt = {values[m.value()] for m in read_topic(setup.bootstrap, setup.dead_letter, idle=0.5)}
            return len(got | doubt) == 300

        wait_until(accounted, 120, "every alert delivered or dead-lettered")
        assert notify.terminate() == 0
        ids = [p["body"]["alert"]["alert_id"] for p in hooks.received("/hook")]
        assert len(ids) == len(set(ids)), "an alert reached the receiver twice"
        dead = read_topic(setup.bootstrap, setup.dead_letter)
        assert len(dead) <= 3  # at most the one in flight at each kill
        for m in dead:
            headers = {k: v.decode() for k, v in m.headers()}
            assert headers["mm.error.reason"] == "delivery_in_doubt" and headers["mm.error.receiver"] == "hook"
        # Nothing lost: each alert arrived, or is on the dead-letter topic (it may have arrived too: that is the doubt).
        assert set(ids) | {values[m.value()] for m in dead} == {a.alert_id for a in alerts}


def test_a_registry_framed_run_is_read_by_confluents_deserializer_and_notified_from_run(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """alerts_format: confluent with a registry process: the daemon registers alert.avsc under the alerts topic's
    value subject; a consumer made only of confluent-kafka parts (DeserializingConsumer, AvroDeserializer,
    SchemaRegistryClient) reads the NaN burst's OPEN and RESOLVED; the daemon's own notify (notify: in the
    config) sent the same alerts to a webhook."""
    from confluent_kafka import DeserializingConsumer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    from monitor.io.redis_store import RedisStore
    from monitor.io.references import RedisReferenceStore
    from tests.test_model_view import build_reference

    port = free_port()
    schemas = tmp_path / "registry.json"
    schemas.write_text("{}")
    registry_log = (tmp_path / "registry.log").open("wb")
    registry = subprocess.Popen([sys.executable, str(REPO / "tests" / "registry_server.py"), "--port", str(port),
                                 "--schemas", str(schemas)], stdout=registry_log, stderr=registry_log)
    registry_url = f"http://127.0.0.1:{port}"
    setup = _setup(kafka_bootstrap, redis_url, tmp_path)
    reference = build_reference(tmp_path)
    refs = RedisReferenceStore(RedisStore.from_url(redis_url, setup.prefix, setup.group).client, setup.prefix)
    refs.put(reference)
    refs.activate("churn", reference.version)
    try:
        with Receiver() as hooks:
            config = setup.write_config({**MODEL_VIEW, "alerts_format": "confluent",
                                         "schema_registry": {"url": registry_url},
                                         "notify": {"webhooks": [{"name": "hook", "url": hooks.url + "/hook"}]}})
            produce_simulated(setup, 12_000, seed=11, incidents=[
                "nan_burst:feature=credit_score,start=4000,length=2500,rate=0.3"])
            daemons.append(d := DaemonProcess(config, tmp_path / "daemon.log").start())
            wait_until(lambda: both_stages_done(setup), 180, "both stages to reach the end of their input")
            consumer = DeserializingConsumer({
                "bootstrap.servers": setup.bootstrap, "group.id": f"reader-{setup.unique}",
                "auto.offset.reset": "earliest",
                "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": registry_url}))})
            consumer.subscribe([setup.alerts])
            records: list[dict[str, Any]] = []
            raw = read_topic(setup.bootstrap, setup.alerts)

            def read_all() -> bool:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    records.append(msg.value())
                return len(records) >= len(raw) > 0

            wait_until(read_all, 60, "the deserializing consumer to read every alert")
            consumer.close()
            nan = [(r["status"], r["severity"]) for r in records
                   if r["feature"] == "credit_score" and r["check"] == "nan_rate"]
            assert nan[0][0] == "OPEN" and nan[-1] == ("RESOLVED", "INFO"), nan
            assert all(m.value()[0] == 0 for m in raw)  # the wire format: magic byte, then the schema id
            ids = {int.from_bytes(m.value()[1:5], "big") for m in raw}
            registered = _http("GET", registry_url + "/schemas/ids/" + str(ids.pop()))
            assert json.loads(registered["schema"])["name"] == "Alert" and not ids
            wanted = {r["alert_id"] for r in records if r["status"] == "RESOLVED" or r["severity"] != "POSSIBLE"}
            wait_until(lambda: {p["body"]["alert"]["alert_id"] for p in hooks.received("/hook")} == wanted, 60,
                       "run's notify to send every alert to the webhook")
            assert d.terminate() == 0
    finally:
        registry.terminate()
        registry.wait(10)
