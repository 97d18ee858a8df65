"""The model view on the real Kafka broker and Redis: stage 1 and stage 2 in one daemon, one incident per
problem whatever the partition count, exactly once across kill -9."""

from __future__ import annotations

import io
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml

from monitor.core.profiles import ReferenceProfile
from monitor.io.avro import schemas_dir
from monitor.io.redis_store import RedisStore
from monitor.io.references import RedisReferenceStore
from monitor.settings import load_settings
from tests.helpers import (
    FAST_GROUP,
    FLUSH_S,
    MODEL_VIEW,
    BackgroundProducer,
    DaemonProcess,
    Setup,
    assert_key_layout,
    both_stages_done,
    produce_simulated,
    read_topic,
    verify_model_view,
    wait_until,
)
from tests.test_model_view import END, ONSET, build_reference, delay_in_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    return build_reference(tmp_path_factory.mktemp("ref"))


def _setup(kafka_bootstrap: str, redis_url: str, tmp_path: Path, partitions: int, reference: ReferenceProfile,
           **extra: Any) -> tuple[Setup, Path]:
    import uuid

    setup = Setup(uuid.uuid4().hex[:10], kafka_bootstrap, redis_url, tmp_path, partitions=partitions)
    setup.create_topics()
    config = setup.write_config({**MODEL_VIEW, **extra})
    store = RedisStore.from_url(redis_url, setup.prefix, setup.group)
    refs = RedisReferenceStore(store.client, setup.prefix)
    refs.put(reference)
    refs.activate("churn", reference.version)
    return setup, config


def _store(setup: Setup) -> RedisStore:
    return RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)


_done = both_stages_done


def _alerts(setup: Setup, idle: float = 1.5) -> list[dict[str, Any]]:
    """Alerts decoded with plain fastavro and schemas/alert.avsc only (no project code)."""
    schema = fastavro.parse_schema(json.loads((schemas_dir() / "alert.avsc").read_text()))
    return [fastavro.schemaless_reader(io.BytesIO(m.value()), schema, None)
            for m in read_topic(setup.bootstrap, setup.alerts, idle=idle)]


def _run_until_done(setup: Setup, config: Path, daemons: list[DaemonProcess], tmp_path: Path,
                    timeout: float = 180) -> DaemonProcess:
    d = DaemonProcess(config, tmp_path / f"daemon-{setup.unique}.log").start()
    daemons.append(d)
    wait_until(lambda: _done(setup), timeout, "both stages to reach the end of their input")
    return d


def test_one_incident_per_shift_at_1_3_12_48_partitions(kafka_bootstrap: str, redis_url: str, tmp_path: Path,
                                                        reference: ReferenceProfile,
                                                        daemons: list[DaemonProcess]) -> None:
    """A 1-sigma shift of age that reverts: exactly one OPEN and one RESOLVED for age on the alerts topic at every
    partition count; the delay in events of the whole stream at 48 partitions within 1.5x that at 1, <= 500."""
    delays = {}
    for partitions in (1, 3, 12, 48):
        folder = tmp_path / f"p{partitions}"
        folder.mkdir()
        setup, config = _setup(kafka_bootstrap, redis_url, folder, partitions, reference)
        produce_simulated(setup, 30_000, seed=300,
                          incidents=[f"shift:feature=age,start={ONSET},length={END - ONSET},size=1"])
        d = _run_until_done(setup, config, daemons, folder)
        alerts = wait_until(lambda s=setup: (a := _alerts(s)) and any(x["status"] == "RESOLVED" for x in a) and a,
                            30, "the RESOLVED alert")
        d.terminate()
        got = [(a["feature"], a["status"]) for a in alerts if a["status"] != "UPDATED"]
        assert got == [("age", "OPEN"), ("age", "RESOLVED")], (partitions, [(a["feature"], a["check"],
                                                                              a["status"]) for a in alerts])
        opened = alerts[0]
        assert opened["kind"] == "DRIFT" and opened["evidence"]["scope"] == "feature"
        delays[partitions] = delay_in_events(opened["window"]["last_event_time"])
    assert delays[48] <= 1.5 * delays[1] and delays[48] <= 500, delays


def test_200000_clean_events_on_48_partitions_raise_nothing(kafka_bootstrap: str, redis_url: str, tmp_path: Path,
                                                            reference: ReferenceProfile,
                                                            daemons: list[DaemonProcess]) -> None:
    """Zero alerts of any kind on 200,000 clean events over 48 partitions, every event counted once."""
    setup, config = _setup(kafka_bootstrap, redis_url, tmp_path, 48, reference)
    produce_simulated(setup, 200_000, seed=301)
    d = _run_until_done(setup, config, daemons, tmp_path, timeout=300)
    assert d.terminate() == 0
    assert _alerts(setup) == []
    from monitor.ops.status import collect_status

    view = collect_status(load_settings(config, environ={}), _store(setup))["models"]["churn"]["model_view"]
    # Every block stage 1 closed reached stage 2 once (the last open block of each partition stays open).
    assert 200_000 - 48 * 100 <= view["features"]["events"] <= 200_000
    assert view["features"]["duplicate_blocks"] == 0 and view["features"]["late_blocks"] == 0


def test_nan_burst_new_category_and_an_upstream_break_through_the_daemon(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path, reference: ReferenceProfile,
        daemons: list[DaemonProcess]) -> None:
    """On 12 partitions: a NaN burst and a new category are one OPEN each, naming their checks and the
    partitions that saw them; then every numeric field x100 (a unit change upstream) is one model-wide
    incident, not one per feature."""
    from tests.test_model_view import contract_model

    numeric = {"age", "monthly_charges", "total_charges", "session_minutes", "days_since_login",
               "data_usage_gb", "discount_rate", "credit_score"}
    model = contract_model(tmp_path, reference)
    setup, config = _setup(kafka_bootstrap, redis_url, tmp_path, 12, reference)
    raw = yaml.safe_load(config.read_text())
    raw["models"][0]["contract"] = model["contract"]
    config.write_text(yaml.safe_dump(raw))
    broken_at = 14_000

    def upstream_break(i: int, row: dict[str, Any]) -> dict[str, Any]:
        if i < broken_at:
            return row
        return {k: (v * 100 if k in numeric and isinstance(v, float) else v) for k, v in row.items()}

    produce_simulated(setup, 20_000, seed=303, transform=upstream_break, incidents=[
        "nan_burst:feature=credit_score,start=5000,length=2000,rate=0.3",
        "new_category:feature=region,start=9000,length=2000,rate=0.3,value=atlantis"])
    d = _run_until_done(setup, config, daemons, tmp_path)
    alerts = _alerts(setup)
    d.terminate()
    features = [a for a in alerts if a["source_topic"] == setup.features]
    opened = [(a["feature"], a["kind"], a["check"]) for a in features if a["status"] == "OPEN"]
    assert opened == [("credit_score", "DATA_QUALITY", "nan_rate"), ("region", "DATA_QUALITY", "unseen_category"),
                      ("*", "DATA_QUALITY", "model_incident")] or \
        (opened[:2] == [("credit_score", "DATA_QUALITY", "nan_rate"), ("region", "DATA_QUALITY", "unseen_category")] \
        and [o for o in opened[2:] if o[0] != "*"] == [] and len(opened) == 3), opened
    nan, cat, wide = (a for a in features if a["status"] == "OPEN")
    assert "nan_rate" in nan["evidence"]["checks"] and nan["evidence"]["partitions"] == ",".join(map(str, range(12)))
    assert "unseen_category" in cat["evidence"]["checks"] and "atlantis" in cat["evidence"]["new_values"]
    assert wide["evidence"]["scope"] == "model-wide"
    assert set(wide["evidence"]["features"].split(", ")) >= numeric - {"credit_score"}
    # The burst and the new category ended: each resolved once; the break lasts, so it stays open.
    resolved = sorted(a["feature"] for a in features if a["status"] == "RESOLVED")
    assert resolved == ["credit_score", "region"], resolved
    # Both stages' state, the references and the drift history: each key in its family, each tag one slot.
    families = assert_key_layout(redis_url, setup.prefix, setup.group)
    assert {"partition state", "partition index", "references", "history"} <= set(families), families
    assert families["partition state"] >= 3 * (12 + 12), families  # offset, fence, state of each input
    assert any(_store(setup).read(setup.blocks, p).offset for p in range(3)), "stage 2's state"


def test_20_kill_9_of_both_stages_lose_and_double_nothing(kafka_bootstrap: str, redis_url: str, tmp_path: Path,
                                                          daemons: list[DaemonProcess]) -> None:
    """20 kill -9 of a daemon running both stages at random moments, restarted each time: every stage-1 state
    (segment children included) and the model stage's counts and sums (segment views included) equal an
    uninterrupted in-process replay, and every incident's alerts arrive, each id byte-identical however often
    it was re-sent. Segments on `region` and the multivariate check are on: their state is exactly-once too."""
    from monitor.cli.main import _model_specs
    from tests.test_model_view import build_reference, settings_for

    features = [s.name for s in _model_specs(settings_for(tmp_path), "churn", ("features",))]
    reference = build_reference(tmp_path, feature_fields=features, segments=["region"], max_segments=3)
    # Static membership: a restarted daemon takes its partitions back at once instead of after the session timeout.
    setup, config = _setup(kafka_bootstrap, redis_url, tmp_path, 6, reference,
                           consumer={**FAST_GROUP, "group.instance.id": "kill-test"},
                           http={"host": "127.0.0.1", "port": 0}, batch={"max_messages": 200, "timeout_s": 0.2})
    raw = yaml.safe_load(config.read_text())
    raw["models"][0].update({"segments": ["region"], "max_segments": 3, "multivariate": {"enabled": True}})
    config.write_text(yaml.safe_dump(raw))
    incidents = [f"shift:feature=age,start={ONSET},length={END - ONSET},size=1",
                 "nan_burst:feature=credit_score,start=30000,length=3000,rate=0.3",
                 "new_category:feature=region,start=45000,length=3000,rate=0.3,value=atlantis"]
    producer = BackgroundProducer(setup, 60_000, rate=1_000.0, seed=302, incidents=incidents)  # a live stream
    rng = random.Random(5)
    log = tmp_path / "daemon.log"

    def assigned() -> int:
        return sum('"partitions.assigned"' in line for line in log.read_text().splitlines()) if log.exists() else 0

    kills = 0
    while kills < 20:
        before = assigned()
        d = DaemonProcess(config, log).start()
        daemons.append(d)
        wait_until(lambda b=before: assigned() >= b + 2, 60, "both stages to get their partitions")
        time.sleep(rng.uniform(0.1, 1.5))  # a random moment of the run: not synchronisation
        d.signal(signal.SIGKILL)
        assert d.proc is not None
        d.proc.wait(10)
        kills += 1
    rows, bad = producer.join(120)
    d = DaemonProcess(config, log).start()
    daemons.append(d)
    wait_until(lambda: _done(setup), 240, "both stages to reach the end after the kills, every alert sent")
    d.terminate()
    figures, expected = verify_model_view(setup, config, reference, len(rows) + bad)
    assert {(a.feature, a.status) for a in expected.alerts} >= {("age", "OPEN"), ("credit_score", "OPEN")}
    print(f"20 kill -9 of both stages: {figures}")


def test_a_silent_partition_stops_holding_the_windows_and_its_late_blocks_are_counted(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path, reference: ReferenceProfile,
        daemons: list[DaemonProcess]) -> None:
    """Partition 2 stops after its share of the first 3,000 events while 0 and 1 go on, live. Once stage 1 has
    read it to its end and heard nothing for idle_timeout_s, the model's slots close without it while the
    others still flow; when its old events come after all, their blocks are counted late, nothing reopens."""
    import threading

    from confluent_kafka import Producer

    from monitor.cli.simulate import Simulator
    from monitor.io.avro import encode_plain, load_schema
    from monitor.ops.status import collect_status
    from tests.helpers import EXAMPLES

    setup, config = _setup(kafka_bootstrap, redis_url, tmp_path, 3, reference,
                           model_view={"enabled": True, "idle_timeout_s": 2.0, "grace_ms": 0})
    settings = load_settings(config, environ={})
    slot_ms = settings.window.block_ms
    schema = load_schema(EXAMPLES / "churn_features.avsc")
    rows = [f for feats, _ in Simulator(seed=8).batches(12_000, 4_000) for f in feats]
    cut = rows[3_000]["event_time"]
    early = {p: [f for f in rows[p::3] if f["event_time"] < cut] for p in range(3)}
    later = {p: [f for f in rows[p::3] if f["event_time"] >= cut] for p in range(3)}

    def send(part: int, feats: list[dict[str, Any]], rate: float = 0.0) -> None:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
        started = time.monotonic()
        for i, f in enumerate(feats):
            producer.produce(setup.features, key=f["event_id"].encode(), value=encode_plain(schema, f),
                             partition=part)
            producer.poll(0)
            if rate and i % 50 == 0 and (ahead := i / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)  # pacing a live stream, not synchronisation
        assert producer.flush(FLUSH_S) == 0

    for p in range(3):
        send(p, early[p])
    last_slot_of_2 = max(f["event_time"] for f in early[2]) // slot_ms

    def view() -> dict[str, Any]:
        return dict(collect_status(settings, _store(setup))["models"]["churn"]["model_view"].get("features", {}))

    d = DaemonProcess(config, tmp_path / "daemon.log").start()
    daemons.append(d)
    wait_until(lambda: view().get("last_closed_slot") is not None, 60, "the first closed slot")
    # Partitions 0 and 1 go on at 400 events/s each (about 7 s); partition 2 says nothing.
    live = [threading.Thread(target=send, args=(p, later[p], 400.0)) for p in (0, 1)]
    for t in live:
        t.start()
    wait_until(lambda: (view().get("last_closed_slot") or -1) > last_slot_of_2 + 30, 60,
               "slots to close past the silent partition")
    assert any(t.is_alive() for t in live), "the others stopped first: this would not show the idle rule"
    for t in live:
        t.join(60)
    before = view()
    assert before["late_blocks"] == 0
    send(2, later[2])  # partition 2's old events, at last
    wait_until(lambda: _done(setup) and view()["late_blocks"] > 0, 90, "the late blocks to be counted")
    after = view()
    assert d.terminate() == 0
    assert after["late_blocks"] > 0 and 0 < after["late_events"] <= len(later[2])
    assert after["last_closed_slot"] >= before["last_closed_slot"]  # nothing reopened
    assert after["events"] <= len(rows)
    assert _alerts(setup) == []


def test_input_partitions_that_never_deliver_are_one_volume_incident(kafka_bootstrap: str, redis_url: str,
                                                                      tmp_path: Path, reference: ReferenceProfile,
                                                                      daemons: list[DaemonProcess]) -> None:
    """Issue 17, the model view: a fresh deployment on topics nobody writes to. After `freshness_s` each
    stream has one VOLUME `stream_stopped` incident naming its silent partitions (it sat ready at 0 events
    before); the first events resolve them."""
    setup, config = _setup(kafka_bootstrap, redis_url, tmp_path, 3, reference)
    raw = yaml.safe_load(config.read_text())
    raw["models"][0]["freshness_s"] = 3
    config.write_text(yaml.safe_dump(raw))
    d = DaemonProcess(config, tmp_path / "daemon.log").start()
    daemons.append(d)

    def volume(status: str) -> list[dict[str, Any]]:
        return [a for a in _alerts(setup, idle=0.5) if a["kind"] == "VOLUME" and a["status"] == status]

    opened = wait_until(lambda: len(volume("OPEN")) == 2 and volume("OPEN"), 90, "a VOLUME incident per stream")
    assert {a["source_topic"] for a in opened} == {setup.features, setup.predictions}
    # The incident opens with the partitions silent at that moment (the others join it without a new page).
    assert all(set(a["evidence"]["partitions"].split(",")) <= {"0", "1", "2"} for a in opened)
    produce_simulated(setup, 3_000, seed=9, rate=300)  # a live start: every partition delivers as it goes
    wait_until(lambda: len(volume("RESOLVED")) == 2, 90, "the stream, once every partition delivers")
    assert d.terminate() == 0


def test_a_seasonal_reference_and_a_false_alarm_budget_reach_the_daemon(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path, daemons: list[DaemonProcess],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14 through the real parts: `reference build --season` stores the season profiles in Redis, the
    daemon loads them (its drift evidence names the season, its CUSUM standardises by it), derives its
    thresholds from `alerts.false_alarms_per_day` (logged at start, shown by `status`), and a 1-sigma shift is
    one incident as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from monitor.cli.main import main
    from monitor.cli.simulate import Simulator
    from monitor.core.budget import derive

    setup = Setup(f"s{time.monotonic_ns() % 10**9}", kafka_bootstrap, redis_url, tmp_path, partitions=3)
    setup.create_topics()
    config = setup.write_config(MODEL_VIEW)
    raw = yaml.safe_load(config.read_text())
    raw["models"][0]["alerts"] = {"false_alarms_per_day": 1}
    config.write_text(yaml.safe_dump(raw))
    rows = [{**f, **p} for feats, preds in Simulator(seed=100).batches(100_000, 20_000)
            for f, p in zip(feats, preds, strict=True)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    assert main(["reference", "build", "--config", str(config), "--model", "churn", "--input",
                 str(tmp_path / "train.parquet"), "--season", "hour_of_day", "--season-min-rows", "200"]) == 0
    stored = RedisReferenceStore(_store(setup).client, setup.prefix).get("churn", "v1")
    assert stored.seasons is not None and stored.seasons["by"] == "hour_of_day"

    produce_simulated(setup, 30_000, seed=300,
                      incidents=[f"shift:feature=age,start={ONSET},length={END - ONSET},size=1"])
    d = _run_until_done(setup, config, daemons, tmp_path)
    alerts = wait_until(lambda: (a := _alerts(setup)) and any(x["status"] == "RESOLVED" for x in a) and a, 30,
                        "the RESOLVED alert")
    assert d.terminate() == 0
    assert [(a["feature"], a["status"]) for a in alerts if a["status"] != "UPDATED"] == [
        ("age", "OPEN"), ("age", "RESOLVED")]
    evidence = alerts[0]["evidence"]
    assert evidence.get("season", "").startswith("hour_of_day 00h") or \
        evidence.get("standardised_by", "").startswith("reference season hour_of_day 00h"), evidence
    budget = derive(1.0, float(stored.event_rate or 0), 1000, 15, 12, 0.5)
    logged = [e for e in d.logs() if e.get("event") == "budget.derived"]
    assert logged and logged[0]["cusum_h"] == pytest.approx(budget.cusum_h, abs=1e-3)
    assert logged[0]["drift_p_max"] == pytest.approx(budget.drift_p_max, rel=1e-3)
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["models"]["churn"]["budget"]
    assert shown["checks"] == 27 and shown["cusum_h"] == pytest.approx(budget.cusum_h, abs=1e-3)
