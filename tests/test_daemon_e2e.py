"""The daemon end to end on the real Kafka broker and Redis: alerts, dead letters, restarts, endpoints."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
import yaml

from monitor.app.pipeline import build_processors
from monitor.cli.simulate import NUMERIC
from monitor.core.types import RawRecord
from monitor.io.avro import schemas_dir
from monitor.io.kafka import to_raw
from monitor.io.redis_store import RedisStore
from monitor.ops.status import collect_status
from monitor.settings import load_settings
from tests.helpers import (
    EXAMPLES,
    FLUSH_S,
    PARTITIONS,
    DaemonProcess,
    Setup,
    _clean_env,
    assert_key_layout,
    assert_same_state,
    end_offsets,
    http_get,
    produce_labels,
    produce_simulated,
    read_topic,
    wait_until,
    with_labels,
)

pytestmark = pytest.mark.integration
START_MS, INTERVAL_MS = 1_767_225_600_000, 10  # the simulator's clock: event i has time START + i*INTERVAL


@pytest.fixture
def setup(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Setup:
    s = Setup(unique, kafka_bootstrap, redis_url, tmp_path)
    s.create_topics()
    return s


def _store(setup: Setup) -> RedisStore:
    return RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)


def _caught_up(setup: Setup) -> bool:
    store = _store(setup)
    for topic in (setup.features, setup.predictions):
        ends = end_offsets(setup.bootstrap, topic)
        for p in range(PARTITIONS):
            if ends[p] and store.read(topic, p).offset != ends[p]:
                return False
    return True


def _alerts(setup: Setup, expected: int | None = None, idle: float = 2.0) -> list[dict[str, Any]]:
    """Alerts decoded with plain fastavro and schemas/alert.avsc only (no project code)."""
    schema = fastavro.parse_schema(json.loads((schemas_dir() / "alert.avsc").read_text()))
    return [fastavro.schemaless_reader(io.BytesIO(m.value()), schema, None)
            for m in read_topic(setup.bootstrap, setup.alerts, expected, idle)]


def _event_index(alert: dict[str, Any]) -> int:
    return (alert["event_time"] - START_MS) // INTERVAL_MS


def _run_to_end(setup: Setup, daemons: list[DaemonProcess], tmp_path: Path, timeout: float = 120,
                config: Path | None = None) -> DaemonProcess:
    d = DaemonProcess(config or setup.write_config(), tmp_path / "daemon.log").start()
    daemons.append(d)
    wait_until(lambda: _caught_up(setup), timeout, "the daemon to checkpoint every input partition's end")
    return d


def test_clean_stream_raises_no_alert(setup: Setup, daemons: list[DaemonProcess], tmp_path: Path) -> None:
    """50,000 clean events: every one counted, zero alerts."""
    rows, _ = produce_simulated(setup, 50_000, seed=11)
    d = _run_to_end(setup, daemons, tmp_path)
    assert d.terminate() == 0
    assert _alerts(setup, idle=1.0) == []
    status = collect_status(load_settings(setup.write_config()), _store(setup))
    churn = status["models"]["churn"]
    assert churn["events"] == 50_000
    for name in NUMERIC:
        assert churn["features"][name]["count"] == 50_000
    # Nulls in credit_score: counted from the produced rows, independently of the monitor.
    assert churn["features"]["credit_score"]["missing"] == sum(r["credit_score"] is None for r in rows)
    # The same through the command line, as scripts would read it.
    out = subprocess.run([sys.executable, "-m", "monitor", "status", "--config", str(setup.write_config()),
                          "--json"], check=True, capture_output=True, text=True, env=_clean_env())
    as_json = json.loads(out.stdout)
    assert as_json["models"]["churn"]["events"] == 50_000
    # Issue 11 #17: the events of each stream, not only the features' (one prediction per event here).
    assert as_json["models"]["churn"]["events_by_stream"] == {"features": 50_000, "predictions": 50_000}
    assert as_json["models"]["churn"]["features"]["age"]["count"] == 50_000


@pytest.fixture
def incident_run(setup: Setup, daemons: list[DaemonProcess], tmp_path: Path) -> tuple[Setup, list[dict[str, Any]],
                                                                                         list[dict[str, Any]]]:
    rows, _ = produce_simulated(setup, 30_000, seed=5, incidents=[
        "nan_burst:feature=credit_score,start=10000,length=2000,rate=0.3",
        "shift:feature=monthly_charges,start=20000,size=1.0",
    ])
    d = _run_to_end(setup, daemons, tmp_path)
    assert d.terminate() == 0
    return setup, rows, _alerts(setup)


def test_mean_shift_raises_drift_for_that_feature_only(incident_run: Any) -> None:
    """A 1-std mean shift at event 20,000: DRIFT for that feature within 2,000 events, none for others."""
    _setup, _rows, alerts = incident_run
    drift = [a for a in alerts if a["kind"] == "DRIFT"]
    assert {a["feature"] for a in drift} == {"monthly_charges"}
    first = min(_event_index(a) for a in drift)
    assert 20_000 <= first < 22_000
    assert {a["check"] for a in drift} == {"adwin", "page_hinkley"}


def test_nan_burst_raises_data_quality_with_observed_rate(incident_run: Any) -> None:
    """30% NaN for 2,000 events from 10,000: DATA_QUALITY nan_rate naming the feature, with the true rate."""
    _setup, rows, alerts = incident_run
    every = [a for a in alerts if a["kind"] == "DATA_QUALITY"]
    assert every and {(a["feature"], a["check"]) for a in every} == {("credit_score", "nan_rate")}
    dq = [a for a in every if a["status"] == "OPEN"]
    resolved = [a for a in every if a["status"] == "RESOLVED"]
    # One OPEN per input partition, each resolved once the burst has left its window.
    assert len(dq) == len(resolved) == PARTITIONS
    assert all(_event_index(r) > 12_000 for r in resolved)
    ids = [r["event_id"] for r in rows]
    by_offset = {}
    for msg in read_topic(_setup.bootstrap, _setup.features, len(rows)):
        by_offset[(msg.partition(), msg.offset())] = ids.index(msg.key().decode())
    for a in dq:
        assert 10_000 <= _event_index(a) < 12_000 + 1000
        # The observed rate over the alert's window, recomputed from the produced rows.
        p = a["source_partition"]
        window = [by_offset[(p, o)] for o in range(a["window"]["first_offset"], a["window"]["last_offset"] + 1)]
        assert len(window) == a["window"]["count"]
        nan = sum(1 for i in window if rows[i]["credit_score"] is not None and math.isnan(rows[i]["credit_score"]))
        assert a["statistic"] == pytest.approx(nan / len(window), abs=1e-12)
        assert a["statistic"] > a["threshold"] == 0.05


def test_alerts_carry_the_documented_fields(incident_run: Any) -> None:
    """Alerts decode with plain fastavro; ids are unique and keyed to the source event."""
    setup, _rows, alerts = incident_run
    assert alerts
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))
    for a in alerts:
        assert a["model"] == "churn" and a["model_version"] == "churn-2026.11"
        assert a["source_topic"] in (setup.features, setup.predictions)
        assert a["window"]["first_offset"] <= a["source_offset"] == a["window"]["last_offset"]
        assert a["severity"] == "INFO" if a["status"] == "RESOLVED" else a["severity"] in ("WARNING", "CRITICAL")


BAD_PAYLOADS: dict[str, bytes] = {
    "empty": b"",
    "short": b"\x01\x02",
    "truncated": b"\x14evt-1\x02",
    "garbage": bytes(range(200, 256)) * 3,
}


def test_bad_records_go_to_dead_letter_and_sigterm_restart_loses_nothing(
    setup: Setup, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """Undecodable records land in the DLQ with error headers; SIGTERM mid-stream + restart counts exactly."""
    setup.batch = 100
    rng = np.random.default_rng(3)
    positions = sorted(rng.choice(np.arange(100, 19_900), size=40, replace=False).tolist())
    labels = list(BAD_PAYLOADS)
    bad = {pos: (labels[i % len(labels)], BAD_PAYLOADS[labels[i % len(labels)]]) for i, pos in enumerate(positions)}
    rows, bad_sent = produce_simulated(setup, 20_000, seed=9, bad=bad,
                                       incidents=["shift:feature=age,start=12000,size=1.5"])
    assert bad_sent == 40
    config = setup.write_config()

    first = DaemonProcess(config, tmp_path / "first.log").start()
    daemons.append(first)
    store = _store(setup)

    def progressed() -> bool:
        done = sum(store.read(setup.features, p).offset or 0 for p in range(PARTITIONS))
        return done > 2_000

    wait_until(progressed, 60, "the first daemon to checkpoint some batches")
    assert first.terminate() == 0
    total = sum(end_offsets(setup.bootstrap, setup.features).values())
    stopped_at = sum(store.read(setup.features, p).offset or 0 for p in range(PARTITIONS))
    assert stopped_at < total, "SIGTERM should land mid-stream"

    _run_to_end(setup, daemons, tmp_path)
    dead = read_topic(setup.bootstrap, setup.dead_letter, bad_sent)
    status = collect_status(load_settings(config), store)
    churn = status["models"]["churn"]
    assert churn["events"] + len(dead) == len(rows) + bad_sent
    assert churn["events"] == len(rows)
    assert churn["rejects"] == bad_sent
    for name in NUMERIC:
        values = [r[name] for r in rows]
        assert churn["features"][name]["count"] == len(rows)
        assert churn["features"][name]["missing"] == sum(v is None for v in values)
    assert len(dead) == bad_sent
    for msg in dead:
        headers = dict(msg.headers())
        assert headers["case"].decode() in BAD_PAYLOADS
        assert BAD_PAYLOADS[headers["case"].decode()] == (msg.value() or b"")
        assert headers["mm.error.reason"].decode() in {"empty_payload", "truncated_payload", "avro_decode_error",
                                                       "trailing_bytes", "invalid_utf8"}
        assert headers["mm.error.topic"].decode() == setup.features
        assert int(headers["mm.error.offset"]) >= 0
        assert headers["mm.error.exception"]
    reasons = {dict(m.headers())["case"].decode(): dict(m.headers())["mm.error.reason"].decode() for m in dead}
    assert reasons["empty"] == "empty_payload"
    # The same records, read back per partition and processed uninterrupted in this process, give exactly
    # the counts the interrupted daemon stored, and the same alerts.
    settings = load_settings(config, environ={})
    processors = build_processors(settings)
    expected_alerts: set[str] = set()
    for topic in (setup.features, setup.predictions):
        by_partition: dict[int, list[RawRecord]] = {}
        for msg in read_topic(setup.bootstrap, topic, sum(end_offsets(setup.bootstrap, topic).values())):
            by_partition.setdefault(msg.partition(), []).append(to_raw(msg))
        for p, records in by_partition.items():
            part = processors[topic].new_partition(p)
            records.sort(key=lambda r: r.offset)
            expected_alerts |= {a.alert_id for a in processors[topic].process(part, records).alerts}
            stored = processors[topic].new_partition(p)
            stored.load_fields(store.read(topic, p).fields)
            assert_same_state(stored, part, (topic, p))
    assert expected_alerts, "the shift should raise alerts after the restart"
    assert {a["alert_id"] for a in _alerts(setup, idle=1.0)} == expected_alerts
    # No payload value reaches the logs: no event id, no categorical value, no numeric value.
    logs = (tmp_path / "first.log").read_text() + (tmp_path / "daemon.log").read_text()
    assert "dead_lettered" in logs
    for r in rows[:200]:
        assert r["event_id"] not in logs
        assert repr(r["age"]) not in logs
    assert "premium" not in logs and "bank_transfer" not in logs


def test_a_closed_log_stream_neither_stops_nor_hangs_the_daemon(setup: Setup, tmp_path: Path) -> None:
    """The daemon logs to stderr; when whatever reads it goes away (a log shipper that died, `| head`), it goes
    on monitoring without its log lines and stops on SIGTERM with exit 0. (Before, the next line raised
    BrokenPipeError in the stage's thread, and the process hung in the consumer's close.)"""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(setup.write_config())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_clean_env())
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if b'"partitions.assigned"' in line:
                break
        proc.stderr.close()  # the reader goes away: every line from now on meets a closed pipe
        bad = {i: ("garbage", b"\x00\xff not avro") for i in (100, 2_000)}
        rows, n_bad = produce_simulated(setup, 5_000, seed=12, bad=bad,
                                        incidents=["nan_burst:feature=credit_score,start=1000,length=1000,rate=0.5"])
        wait_until(lambda: _caught_up(setup), 120, "the daemon to read on with its log stream closed")
        assert proc.poll() is None
        status = collect_status(load_settings(setup.write_config()), _store(setup))
        assert status["models"]["churn"]["events"] == len(rows) == 5_000 and n_bad == 2
        assert _alerts(setup, idle=1.0), "the NaN burst's alert (each alert is also a log line it could not write)"
        code, body = http_get(setup.http_port, "/metrics")
        dropped = [float(line.split()[-1]) for line in body.decode().splitlines()
                   if line.startswith("monitor_log_lines_dropped ")]
        assert code == 200 and dropped and dropped[0] >= 2, dropped  # two dead letters, one alert at least
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_http_endpoints(setup: Setup, daemons: list[DaemonProcess], tmp_path: Path) -> None:
    """/healthz, /readyz (after assignment) and /metrics with event counts."""
    produce_simulated(setup, 2_000, seed=1)
    d = _run_to_end(setup, daemons, tmp_path)
    assert http_get(setup.http_port, "/healthz")[0] == 200
    wait_until(lambda: http_get(setup.http_port, "/readyz")[0] == 200, 30, "readiness")
    status, body = http_get(setup.http_port, "/metrics")
    assert status == 200
    text = body.decode()
    assert 'monitor_events_total{model="churn",stream="features"} 2000.0' in text
    assert "monitor_consumer_lag" in text
    assert http_get(setup.http_port, "/nope")[0] == 404
    assert d.terminate() == 0


def test_confluent_wire_format_through_the_daemon(setup: Setup, tmp_path: Path) -> None:
    """Features in Confluent wire format (schema id from a mock:// registry) are decoded and monitored;
    a record with an unknown schema id is dead-lettered with its reason."""
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import Schema

    from monitor.app.daemon import Daemon
    from monitor.cli.simulate import Simulator
    from monitor.io.avro import encode_confluent, load_schema, registry_client

    registry = {"url": f"mock://{setup.unique}"}
    schema = load_schema(EXAMPLES / "churn_features.avsc")
    schema_id = registry_client(registry).register_schema(
        f"{setup.features}-value", Schema((EXAMPLES / "churn_features.avsc").read_text(), "AVRO"))
    config = setup.write_config({"schema_registry": registry})
    cfg = yaml.safe_load(config.read_text())
    cfg["models"][0]["features"]["format"] = "confluent"
    del cfg["models"][0]["predictions"]
    config.write_text(yaml.safe_dump(cfg))
    settings = load_settings(config, environ={})

    rows = [f for feats, _ in Simulator(seed=2).batches(3_000) for f in feats]
    producer = Producer({"bootstrap.servers": setup.bootstrap})
    for r in rows:
        producer.produce(setup.features, key=r["event_id"].encode(), value=encode_confluent(schema, schema_id, r))
    producer.produce(setup.features, key=b"bad", value=encode_confluent(schema, schema_id + 999, rows[0]))
    assert producer.flush(FLUSH_S) == 0

    daemon = Daemon(settings, _store(setup))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        ends = end_offsets(setup.bootstrap, setup.features)
        store = _store(setup)
        wait_until(lambda: all(store.read(setup.features, p).offset == ends[p] for p in range(PARTITIONS) if ends[p]),
                   60, "the in-process daemon to reach the end")
    finally:
        daemon.stop()
        thread.join(30)
    status = collect_status(settings, _store(setup))["models"]["churn"]
    assert status["events"] == 3_000 and status["rejects"] == 1
    assert status["features"]["plan"]["count"] == 3_000
    (dead,) = read_topic(setup.bootstrap, setup.dead_letter, 1)
    assert dict(dead.headers())["mm.error.reason"] == b"unknown_schema_id"


def test_daemon_uses_the_active_reference_and_contract(
    setup: Setup, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """reference build + contract infer through the CLI; the daemon raises reference-based alerts and picks
    up a newly activated reference while running."""
    env = _clean_env()
    config = setup.write_config({"reference_poll_s": 0.5})
    train = tmp_path / "train.parquet"

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "monitor", *args, "--config", str(config)], check=True,
                             capture_output=True, text=True, env=env)
        return out.stdout

    cli("simulate", "--model", "churn", "--events", "50000", "--seed", "77", "--out", str(train))
    assert cli("reference", "build", "--model", "churn", "--input", str(train)).strip() == "v1"
    contract = tmp_path / "churn.contract.yaml"
    cli("contract", "infer", "--model", "churn", "--out", str(contract))
    raw = yaml.safe_load(config.read_text())
    raw["models"][0]["contract"] = str(contract)
    config.write_text(yaml.safe_dump(raw))
    assert "* v1" in cli("reference", "list", "--model", "churn")

    produce_simulated(setup, 12_000, seed=8, incidents=[
        "new_category:feature=region,start=6000,rate=0.1,value=antarctica",
        "shift:feature=age,start=6000,size=1.0",
    ])
    d = _run_to_end(setup, daemons, tmp_path, config=config)
    alerts = _alerts(setup)
    opened = {(a["feature"], a["kind"], a["check"]) for a in alerts if a["status"] == "OPEN"}
    assert ("region", "DATA_QUALITY", "unseen_category") in opened
    assert ("age", "DRIFT", "psi") in opened
    assert {f for f, kind, _ in opened if kind != "PREDICTION_DRIFT"} == {"region", "age"}

    # A second reference, activated while the daemon runs, is loaded without a restart.
    exported = tmp_path / "v1.json"
    cli("reference", "export", "--model", "churn", "--out", str(exported))
    assert cli("reference", "import", "--model", "churn", "--file", str(exported), "--version", "v2",
               "--activate").strip() == "v2"
    wait_until(lambda: any(e.get("event") == "reference.loaded" and e.get("version") == "v2" for e in d.logs()),
               30, "the daemon to load reference v2")
    assert d.terminate() == 0


def _with_freshness(s: Setup, seconds: float) -> Path:
    """The test config with the model's `freshness_s` set."""
    config = s.write_config()
    raw = yaml.safe_load(config.read_text())
    raw["models"][0]["freshness_s"] = seconds
    config.write_text(yaml.safe_dump(raw))
    return config


def test_a_stopped_stream_raises_volume_and_resolves(setup: Setup, daemons: list[DaemonProcess],
                                                     tmp_path: Path) -> None:
    """No event for freshness_s: a VOLUME alert per silent partition, through the outbox; events resolve it."""
    config = _with_freshness(setup, 2)
    produce_simulated(setup, 1_500, seed=3)
    d = _run_to_end(setup, daemons, tmp_path, config=config)

    def volume(status: str) -> list[dict[str, Any]]:
        return [a for a in _alerts(setup, idle=0.5) if a["kind"] == "VOLUME" and a["status"] == status]

    # Both input topics of the model go silent: one alert per partition of each.
    stopped = wait_until(lambda: len(volume("OPEN")) == 2 * PARTITIONS and volume("OPEN"), 30, "VOLUME alerts")
    assert {a["check"] for a in stopped} == {"stream_stopped"}
    assert len({(a["source_topic"], a["source_partition"]) for a in stopped}) == 2 * PARTITIONS
    ends = end_offsets(setup.bootstrap, setup.features)
    for a in stopped:
        if a["source_topic"] == setup.features:
            assert a["source_offset"] == ends[a["source_partition"]] - 1  # the last event before the silence
    produce_simulated(setup, 300, seed=4)
    resolved = wait_until(lambda: len(volume("RESOLVED")) >= 2 * PARTITIONS and volume("RESOLVED"), 30,
                          "RESOLVED VOLUME alerts")
    assert {(a["source_topic"], a["source_partition"]) for a in resolved} == {
        (a["source_topic"], a["source_partition"]) for a in stopped}
    assert d.terminate() == 0


def test_records_deleted_by_retention_and_a_partition_that_never_delivers_are_said(
    setup: Setup, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """Issue 17: the daemon stops at stored offsets; retention then deletes the records past them on partition
    0 (DeleteRecords); on restart it says so (log `offset.out_of_range`, `monitor_records_unread_total` = the
    records it never read) and resumes at the log start, counting exactly the records still there. A fresh
    deployment on a topic with nothing to read raises one VOLUME `stream_stopped` per input partition after
    `freshness_s` (it used to sit ready at 0 events, silent), resolved by the first event."""
    from confluent_kafka import TopicPartition as TP
    from confluent_kafka.admin import AdminClient

    config = _with_freshness(setup, 3)
    produce_simulated(setup, 600, seed=5)
    d = _run_to_end(setup, daemons, tmp_path, config=config)
    assert d.terminate() == 0
    store = _store(setup)
    stored = store.read(setup.features, 0).offset
    assert stored is not None
    events_before = collect_status(load_settings(config), store)["models"]["churn"]["events"]
    produce_simulated(setup, 600, seed=6)
    ends = end_offsets(setup.bootstrap, setup.features)
    cut = stored + (ends[0] - stored) // 2  # half of what the daemon has not read yet goes
    admin = AdminClient({"bootstrap.servers": setup.bootstrap})
    for fut in admin.delete_records([TP(setup.features, 0, cut)]).values():
        fut.result(30)
    d2 = DaemonProcess(config, tmp_path / "daemon2.log").start()
    daemons.append(d2)
    wait_until(lambda: _caught_up(setup), 120, "the restarted daemon to reach every end")
    log_text = (tmp_path / "daemon2.log").read_text()
    out_of_range = [json.loads(line) for line in log_text.splitlines() if '"offset.out_of_range"' in line]
    assert [(e["partition"], e["stored_offset"], e["log_start"], e["unread"]) for e in out_of_range] == [
        (0, stored, cut, cut - stored)]
    code, body = http_get(setup.http_port, "/metrics")
    assert code == 200
    assert f'monitor_records_unread_total{{partition="0",topic="{setup.features}"}} {float(cut - stored)}' \
        in body.decode()
    events_after = collect_status(load_settings(config), store)["models"]["churn"]["events"]
    assert events_after - events_before == 600 - (cut - stored)  # every record still there, once
    assert d2.terminate() == 0

    # A fresh group and key prefix on topics with nothing new to read: silent partitions are said.
    fresh = Setup(setup.unique + "n", setup.bootstrap, setup.redis_url, tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    fresh.create_topics()
    config = _with_freshness(fresh, 3)
    d3 = DaemonProcess(config, tmp_path / "daemon3.log").start()
    daemons.append(d3)

    def volume(status: str) -> list[dict[str, Any]]:
        return [a for a in _alerts(fresh, idle=0.5) if a["kind"] == "VOLUME" and a["status"] == status]

    opened = wait_until(lambda: len(volume("OPEN")) == 2 * PARTITIONS and volume("OPEN"), 60,
                        "a VOLUME alert per silent input partition")
    assert {a["check"] for a in opened} == {"stream_stopped"}
    assert all(a["evidence"]["detail"] == "no event since this partition was assigned" for a in opened)
    assert '"partition.never_delivered"' in (tmp_path / "daemon3.log").read_text()
    produce_simulated(fresh, 300, seed=7)
    wait_until(lambda: len(volume("RESOLVED")) == 2 * PARTITIONS, 60, "the first events to resolve them")
    assert len(volume("OPEN")) == 2 * PARTITIONS  # said once each
    assert d3.terminate() == 0


@pytest.mark.parametrize("labels", ["behind", "ahead"])
def test_labels_join_whatever_topic_is_read_first_over_months_of_event_time(
    setup: Setup, daemons: list[DaemonProcess], tmp_path: Path, labels: str
) -> None:
    """Issue 17: 9,000 events ten minutes apart (62 days; the join's ttl is 7), labels 500 events (3.5 days)
    late, 20% never sent, the labelling rule changed at event 4,500. The labels topic is read only after every
    prediction was ("behind": a backfill of labels), or entirely before any prediction ("ahead"). Every label
    sent is joined, none expires, and the accuracy drop raises CONCEPT_DRIFT. (Before, expiry followed each
    topic alone: all but the last week's labels were lost, silently.)"""
    config = with_labels(setup.write_config())
    incidents, minutes = ["concept:start=4500"], 10 * 60_000
    d = DaemonProcess(config, tmp_path / "daemon.log")
    store = _store(setup)
    if labels == "ahead":
        sent = produce_labels(setup, 9_000, seed=23, delay=500, missing=0.2, incidents=incidents,
                              interval_ms=minutes)
        daemons.append(d.start())
        ends = end_offsets(setup.bootstrap, setup.labels)
        wait_until(lambda: all(store.read(setup.labels, p).offset == ends[p] for p in range(PARTITIONS) if ends[p]),
                   120, "labels consumed before any prediction")
        produce_simulated(setup, 9_000, seed=23, incidents=incidents, interval_ms=minutes)
    else:
        produce_simulated(setup, 9_000, seed=23, incidents=incidents, interval_ms=minutes)
        daemons.append(d.start())
        wait_until(lambda: _caught_up(setup), 120, "every prediction consumed before any label")
        sent = produce_labels(setup, 9_000, seed=23, delay=500, missing=0.2, incidents=incidents,
                              interval_ms=minutes)
    settings = load_settings(config, environ={})

    def labels_status() -> dict[str, Any]:
        return collect_status(settings, store)["models"]["churn"]["labels"]

    seen: list[dict[str, Any]] = []

    def all_joined() -> dict[str, Any] | None:
        seen[:] = [labels_status()]
        return seen[0] if seen[0].get("joined") == sent else None

    try:
        status = wait_until(all_joined, 120, "every label joined")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {sent} sent, status {seen}") from None
    assert status["labels"] == sent
    assert status["expired"] == status["pending"] == status["duplicates"] == 0
    alerts = _alerts(setup)
    assert [a for a in alerts if a["kind"] == "CONCEPT_DRIFT" and a["status"] == "OPEN"], "the drop is found"
    assert not [a for a in alerts if a["check"] == "label_join"]
    assert d.terminate() == 0


def test_delayed_labels_are_joined_and_concept_drift_is_found(
    setup: Setup, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """Labels 500 events late, 20% missing, joined through the Redis join store; the labelling rule changes
    at event 6,000 (inputs unchanged): a CONCEPT_DRIFT alert, and exact join counts in `status`."""
    config = with_labels(setup.write_config())
    incidents = ["concept:start=6000"]
    produce_simulated(setup, 12_000, seed=21, incidents=incidents)
    sent = produce_labels(setup, 12_000, seed=21, delay=500, missing=0.2, incidents=incidents)
    d = DaemonProcess(config, tmp_path / "daemon.log").start()
    daemons.append(d)
    store = _store(setup)
    ends = end_offsets(setup.bootstrap, setup.labels)
    wait_until(lambda: _caught_up(setup) and all(store.read(setup.labels, p).offset == ends[p]
                                                 for p in range(PARTITIONS) if ends[p]), 120, "labels consumed")
    settings = load_settings(config, environ={})

    def labels_status() -> dict[str, Any]:
        return collect_status(settings, store)["models"]["churn"]["labels"]

    # Labels consumed before their prediction wait and are joined on the daemon's next look (every 2 s).
    status = wait_until(lambda: (s := labels_status())["joined"] == sent and s, 30, "every label joined")
    assert status["labels"] == sent
    assert status["duplicates"] == status["expired"] == status["pending"] == 0
    assert status["mean_label_lag_s"] == pytest.approx(500 * 0.010, rel=1e-6)  # 500 events x 10 ms
    concept = [a for a in _alerts(setup) if a["kind"] == "CONCEPT_DRIFT" and a["status"] == "OPEN"]
    assert concept, "the changed labelling rule should be found"
    assert {a["source_topic"] for a in concept} == {setup.labels}
    code, body = http_get(setup.http_port, "/metrics")
    assert code == 200 and b"monitor_label_lag_seconds_count" in body
    assert d.terminate() == 0
    families = assert_key_layout(setup.redis_url, setup.prefix, setup.group)
    assert {"join store", "join index", "join progress", "partition state"} <= set(families), families
