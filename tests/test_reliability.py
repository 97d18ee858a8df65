"""RELIABILITY.md's fault scenarios on the real Kafka broker and Redis: nothing lost, nothing twice.

Every test checks the same pass condition (helpers.verify_exactly_once) against an uninterrupted
in-process replay of the same partitions.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers import (
    FLUSH_S,
    PARTITIONS,
    BackgroundProducer,
    DaemonProcess,
    Setup,
    end_offsets,
    fast_config,
    http_get,
    produce_simulated,
    read_topic,
    set_max_message_bytes,
    stored_offsets,
    total_offsets,
    verify_exactly_once,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent
INCIDENTS = ["shift:feature=age,start=6000,size=1.5", "nan_burst:feature=credit_score,start=3000,length=1500,rate=0.4"]
BAD = {i: ("garbage", bytes(range(200, 230))) for i in (500, 4_000, 9_000, 13_000)}


@pytest.fixture
def setup(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Setup:
    s = Setup(unique, kafka_bootstrap, redis_url, tmp_path, batch=50)
    s.create_topics()
    return s


def _start(setup: Setup, config: Path, daemons: list[DaemonProcess], name: str) -> DaemonProcess:
    d = DaemonProcess(config, setup.tmp / f"{name}.log").start()
    daemons.append(d)
    return d


def test_kill_9_at_random_points(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 1: 20 kill -9 at random moments of the stream, a restart after each; then run to the end."""
    rows, bad = produce_simulated(setup, 16_000, seed=31, incidents=INCIDENTS, bad=BAD)
    config = fast_config(setup)
    rng = random.Random(1)
    total = total_offsets(setup)
    # Kill points spread over the stream: wait until the stored offsets pass a random target, then kill
    # after a random few milliseconds, so the kill lands anywhere in the next batch (mid-batch, after the
    # Redis write, before the Kafka commit...).
    targets = sorted(rng.sample(range(int(total * 0.05), int(total * 0.9)), 20))
    progress = []
    for k, target in enumerate(targets):
        d = _start(setup, config, daemons, f"kill{k}")
        wait_until(lambda t=target: stored_offsets(setup) >= t, 90, f"progress to {target}", interval=0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        d.kill()
        progress.append(stored_offsets(setup))
    # The kills must interrupt the stream: one after its end tests nothing. Stored offsets move in steps (batches
    # wait up to checkpoint_interval_ms for their write, a partition's first ones too), so a step can pass the
    # last target and reach the end before its kill: most kills, not every one, must land before it.
    mid_stream = sum(p < total for p in progress)
    assert mid_stream >= 15, f"only {mid_stream} of 20 kills landed before the end of the stream: {progress}"
    _start(setup, config, daemons, "final")
    wait_until(lambda: stored_offsets(setup) == total, 180, "the last daemon to reach the end")
    figures = verify_exactly_once(setup, config, len(rows) + bad)
    print(f"scenario 1: kills=20 progress={progress} {figures}")
    assert figures.events == len(rows) and figures.rejects == bad


def test_replicas_join_and_leave(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 2: three replicas in one group; members join and leave (SIGTERM and kill -9) mid-stream."""
    rows, bad = produce_simulated(setup, 30_000, seed=32, incidents=INCIDENTS, bad=BAD)
    config = fast_config(setup)
    total = total_offsets(setup)
    a = _start(setup, config, daemons, "a")
    wait_until(lambda: stored_offsets(setup) > total * 0.1, 60, "replica a to make progress")
    b = _start(setup, config, daemons, "b")
    c = _start(setup, config, daemons, "c")
    wait_for_log(b, "partitions.assigned", 60)
    wait_for_log(c, "partitions.assigned", 60)  # all three hold partitions (c is killed holding its own)
    wait_until(lambda: stored_offsets(setup) > total * 0.25, 90, "progress with three replicas")
    assert a.terminate() == 0  # leaves cleanly
    wait_until(lambda: stored_offsets(setup) > total * 0.4, 90, "progress after a left")
    c.kill()  # leaves by dying
    a2 = _start(setup, config, daemons, "a2")  # and a member joins again
    wait_for_log(a2, "partitions.assigned", 60)
    wait_until(lambda: stored_offsets(setup) == total, 180, "the replicas to reach the end")
    assigned = {name: any(e.get("event") == "partitions.assigned" for e in d.logs())
                for name, d in (("a", a), ("b", b), ("c", c), ("a2", a2))}
    assert all(assigned.values()), assigned
    figures = verify_exactly_once(setup, config, len(rows) + bad)
    print(f"scenario 2: replicas=a,b,c,a2 {figures}")


def test_a_paused_replica_is_fenced(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 3: a replica stopped (SIGSTOP) past the session timeout loses its partitions; when it
    continues (SIGCONT), its late writes are refused by the fence, not applied twice."""
    config = fast_config(setup)
    stream = BackgroundProducer(setup, 30_000, rate=1_500, seed=33, incidents=INCIDENTS, bad=BAD)
    a = _start(setup, config, daemons, "zombie")
    wait_for_log(a, "partitions.assigned", 60)
    b = _start(setup, config, daemons, "b")
    wait_for_log(b, "partitions.assigned", 60)
    wait_until(lambda: stored_offsets(setup) > 2_000, 60, "some progress")
    a.signal(signal.SIGSTOP)
    wait_until(lambda: len([e for e in b.logs() if e.get("event") == "partitions.assigned"]) >= 2, 60,
               "b to be given a's partitions")
    a.signal(signal.SIGCONT)
    rows, bad = stream.join()
    total = total_offsets(setup)
    wait_until(lambda: stored_offsets(setup) == total, 180, "the stream to be done")
    events = {e.get("event") for e in a.logs()}
    assert events & {"partition.fenced", "partitions.lost", "partitions.revoked"}, events
    figures = verify_exactly_once(setup, config, len(rows) + bad)
    print(f"scenario 3: zombie events={sorted(x for x in events if x and 'partition' in x)} {figures}")


def test_a_fenced_static_member_replaces_its_consumer(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """A static member the coordinator fences (`FENCED_INSTANCE_ID`: here another consumer joins with its
    group.instance.id; in the cluster chaos run, a broker failover did it to all three replicas) has a consumer
    librdkafka declares dead (`_FATAL`). The daemon makes a new one and carries on: it stays alive, takes its
    partitions back from the stored offsets, and nothing is lost or counted twice. (Before, it ran on with the
    dead consumer, alive and idle, until someone restarted it.)"""
    from confluent_kafka import Consumer

    config = fast_config(setup, instance_id=f"{setup.unique}-x")
    stream = BackgroundProducer(setup, 20_000, rate=1_500, seed=34, incidents=INCIDENTS, bad=BAD)
    a = _start(setup, config, daemons, "a")
    wait_for_log(a, "partitions.assigned", 60)
    wait_until(lambda: stored_offsets(setup) > 2_000, 60, "some progress")
    impostor = Consumer({"bootstrap.servers": setup.bootstrap, "group.id": setup.group,
                         "group.instance.id": f"{setup.unique}-x", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "partition.assignment.strategy": "cooperative-sticky"})
    impostor.subscribe([setup.features, setup.predictions])
    try:
        wait_until(lambda: (impostor.poll(0.2), any(e.get("event") == "kafka.consumer_replaced"
                                                     for e in a.logs()))[1], 60, "a to replace its consumer")
    finally:
        impostor.close()
    rows, bad = stream.join()
    total = total_offsets(setup)
    wait_until(lambda: stored_offsets(setup) == total, 180, "the stream to be done")
    assert a.proc is not None and a.proc.poll() is None, "the daemon must keep running"
    replaced = [e for e in a.logs() if e.get("event") == "kafka.consumer_replaced"]
    assert replaced and "fenced" in str(replaced[0].get("reason", "")).lower(), replaced
    assert sum(e.get("event") == "partitions.assigned" and bool(e.get("partitions")) for e in a.logs()) >= 2
    figures = verify_exactly_once(setup, config, len(rows) + bad)
    print(f"fenced static member: replaced {len(replaced)}x {figures}")


def _redis(setup: Setup) -> Any:
    from monitor.io.redis_client import connect

    return connect(setup.redis_url)


def test_alerts_topic_unwritable_for_a_while(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 7: the alerts topic refuses messages: alerts wait in the outbox (bounded by the alerts
    raised), consumption goes on, and every alert arrives once the topic takes messages again."""
    set_max_message_bytes(setup.bootstrap, setup.alerts, 100)
    rows, bad = produce_simulated(setup, 16_000, seed=34, incidents=INCIDENTS, bad=BAD)
    config = fast_config(setup)
    d = _start(setup, config, daemons, "d")
    total = total_offsets(setup)
    wait_until(lambda: stored_offsets(setup) == total, 120, "the stream to be processed")
    client = _redis(setup)
    outbox_keys = [k for k in client.scan_iter(match=f"*{setup.prefix}*:outbox")]
    pending = sum(client.hlen(k) for k in outbox_keys)
    assert pending > 0 and read_topic(setup.bootstrap, setup.alerts, idle=0.5) == []
    assert any(e.get("event") == "alert.delivery_failed" for e in d.logs())
    set_max_message_bytes(setup.bootstrap, setup.alerts, None)
    wait_until(lambda: sum(client.hlen(k) for k in outbox_keys) == 0, 60, "the outbox to drain")
    figures = verify_exactly_once(setup, config, len(rows) + bad)
    assert figures.alerts == pending
    print(f"scenario 7: outbox peaked at {pending} alerts, all delivered after the topic recovered; {figures}")
    assert d.terminate() == 0


def test_dead_letter_topic_unwritable(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 9: while the dead-letter topic refuses messages, the stored offset does not move past the
    first bad record and an alarm is raised; afterwards everything completes exactly once."""
    set_max_message_bytes(setup.bootstrap, setup.dead_letter, 100)
    rows, bad = produce_simulated(setup, 16_000, seed=35, incidents=INCIDENTS, bad=BAD)
    first_bad = min(((m.partition(), m.offset()) for m in read_topic(setup.bootstrap, setup.features, idle=1.0)
                     if dict(m.headers() or []).get("case")), key=lambda po: po[1])
    config = fast_config(setup)
    d = _start(setup, config, daemons, "d")
    wait_for_log(d, "dead_letter.unwritable", 60)
    from monitor.io.redis_store import RedisStore

    store = RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)
    for _ in range(3):  # it keeps retrying, and the offset stays put
        wait_until(lambda: sum(e.get("event") == "dead_letter.unwritable" for e in d.logs()) >= 2, 60, "retries")
        assert (store.read(setup.features, first_bad[0]).offset or 0) <= first_bad[1]
    set_max_message_bytes(setup.bootstrap, setup.dead_letter, None)
    total = total_offsets(setup)
    wait_until(lambda: stored_offsets(setup) == total, 120, "the stream to complete")
    figures = verify_exactly_once(setup, config, len(rows) + bad)
    print(f"scenario 9: first bad record {first_bad} held the offset until the topic recovered; {figures}")
    assert d.terminate() == 0


def test_redis_emptied(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 10: Redis loses the state (keys deleted) while the daemon is down. Default policy `halt`:
    an alarm, not ready, nothing processed. Policy `restart`: an alarm, then processing resumes from the
    group's committed offsets with fresh state — never a silent resume."""
    produce_simulated(setup, 6_000, seed=36)
    config = fast_config(setup, http={"host": "127.0.0.1", "port": setup.http_port})
    first = _start(setup, config, daemons, "first")
    total = total_offsets(setup)
    wait_until(lambda: stored_offsets(setup) == total, 120, "the first stream to be processed")
    assert first.terminate() == 0
    client = _redis(setup)
    for key in list(client.scan_iter(match=f"*{setup.prefix}:{setup.group}*")):
        client.delete(key)
    produce_simulated(setup, 2_000, seed=37)
    halted = _start(setup, config, daemons, "halted")
    lost = wait_for_log(halted, "state.lost", 60)
    assert lost["policy"] == "halt" and "Redis lost its data" in lost["problem"]
    wait_until(lambda: http_get(setup.http_port, "/metrics")[0] == 200, 30, "metrics")
    assert b"monitor_state_lost{" in http_get(setup.http_port, "/metrics")[1]
    assert http_get(setup.http_port, "/readyz")[0] == 503
    assert stored_offsets(setup) == 0  # nothing was processed or stored
    assert halted.terminate() == 0
    restart = fast_config(setup, http={"host": "127.0.0.1", "port": setup.http_port}, on_state_lost="restart")
    resumed = _start(setup, restart, daemons, "resumed")
    wait_for_log(resumed, "state.lost", 60)
    new_total = total_offsets(setup)
    wait_until(lambda: stored_offsets(setup) == new_total, 120, "processing from the committed offsets")
    from monitor.io.redis_store import RedisStore
    from monitor.ops.status import collect_status
    from monitor.settings import load_settings

    status = collect_status(load_settings(restart, environ={}),
                            RedisStore.from_url(setup.redis_url, setup.prefix, setup.group))
    assert status["models"]["churn"]["events"] == 2_000  # only what came after the committed offsets
    assert resumed.terminate() == 0
    print("scenario 10: halt -> alarm + not ready + nothing stored; restart -> alarm + 2,000 new events only")


def test_bad_records_each_get_their_reason(setup: Setup) -> None:
    """Scenario 8: every kind of bad record in RELIABILITY.md, mixed into a Confluent-wire-format stream,
    is dead-lettered with its own reason; valid ones are counted exactly; valid + dead-lettered = produced."""
    import json
    import threading

    import yaml
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import Schema

    from monitor.app.daemon import Daemon
    from monitor.cli.simulate import Simulator, without_field
    from monitor.io.avro import encode_confluent, load_schema, registry_client
    from monitor.io.redis_store import RedisStore
    from monitor.settings import load_settings
    from tests.helpers import EXAMPLES

    registry = {"url": f"mock://{setup.unique}"}
    config = fast_config(setup, schema_registry=registry)
    raw = yaml.safe_load(config.read_text())
    model = raw["models"][0]
    model["features"]["format"] = "confluent"
    model.update({"model_field": "model_version", "model_id": "churn-2026.11"})
    del model["predictions"]
    config.write_text(yaml.safe_dump(raw))
    settings = load_settings(config, environ={})

    text = (EXAMPLES / "churn_features.avsc").read_text()
    schema = load_schema(EXAMPLES / "churn_features.avsc")
    client = registry_client(registry)
    subject = f"{setup.features}-value"
    sid = client.register_schema(subject, Schema(text, "AVRO"))
    no_age = without_field(json.loads(text), "age")
    sid_no_age = client.register_schema(subject + "-b", Schema(json.dumps(no_age), "AVRO"))
    flood = json.loads(text)
    flood["fields"] = flood["fields"] + [{"name": f"extra_{i}", "type": "int"} for i in range(1_200)]
    sid_flood = client.register_schema(subject + "-c", Schema(json.dumps(flood), "AVRO"))
    from fastavro import parse_schema

    rows = [f for feats, _ in Simulator(seed=38).batches(3_000) for f in feats]
    good = encode_confluent(schema, sid, rows[0])
    rng = np.random.default_rng(8)
    flipped = bytearray(good)
    for i in rng.choice(np.arange(5, len(flipped)), 3, replace=False):
        flipped[i] ^= 0xFF
    cases: dict[str, tuple[bytes, set[str]]] = {
        "truncated": (good[:-4], {"truncated_payload"}),
        "empty": (b"", {"empty_payload"}),
        "five_bytes": (good[:5], {"truncated_header"}),
        "wrong_magic": (b"\x01" + good[1:], {"bad_magic_byte"}),
        "unknown_schema": (b"\x00\x00\x01\x86\xa0" + good[5:], {"unknown_schema_id"}),
        "trailing": (good + b"\x00\x01", {"trailing_bytes"}),
        "missing_field": (encode_confluent(parse_schema(no_age), sid_no_age, rows[1]), {"schema_mismatch"}),
        "huge_value": (encode_confluent(schema, sid, {**rows[2], "age": 1e308}), {"value_too_large"}),
        "huge_string": (encode_confluent(schema, sid, {**rows[3], "region": "x" * 100_000}), {"string_too_long"}),
        "unknown_model": (encode_confluent(schema, sid, {**rows[4], "model_version": "other-model"}),
                          {"unknown_model"}),
        "feature_flood": (encode_confluent(parse_schema(flood), sid_flood,
                                           {**rows[5], **{f"extra_{i}": i for i in range(1_200)}}),
                          {"too_many_fields"}),
        # A flipped byte may still decode into other values (then it is data) or fail in several ways.
        "byte_flips": (bytes(flipped), set()),
    }
    producer = Producer({"bootstrap.servers": setup.bootstrap})
    for i, r in enumerate(rows):
        r = {**r, "age": float("nan")} if i % 500 == 7 else r  # NaN in a feature is data: counted, not rejected
        producer.produce(setup.features, key=r["event_id"].encode(), value=encode_confluent(schema, sid, r))
        if i % 200 == 100:
            for name, (payload, _) in cases.items():
                producer.produce(setup.features, key=name.encode(), value=payload, headers=[("case", name.encode())])
    assert producer.flush(FLUSH_S) == 0
    produced = len(rows) + 15 * len(cases)

    daemon = Daemon(settings, RedisStore.from_url(setup.redis_url, setup.prefix, setup.group))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        total = sum(end_offsets(setup.bootstrap, setup.features).values())
        wait_until(lambda: stored_offsets(setup, [setup.features]) == total, 120, "the stream to be processed")
    finally:
        daemon.stop()
        thread.join(30)
    dead = read_topic(setup.bootstrap, setup.dead_letter, idle=1.0)
    reasons: dict[str, set[str]] = {}
    for m in dead:
        h = {k: v.decode() for k, v in m.headers()}
        reasons.setdefault(h.get("case", "?"), set()).add(h["mm.error.reason"])
        assert h["mm.error.topic"] == setup.features and h["mm.error.exception"] and h["mm.error.message"]
    for name, (_, expected) in cases.items():
        if expected:
            assert reasons.get(name) == expected, (name, reasons.get(name))
    figures = verify_exactly_once(setup, config, produced)
    assert figures.events >= len(rows)
    print(f"scenario 8: {len(cases)} kinds x 15 bad records; reasons={ {k: sorted(v) for k, v in reasons.items()} }; "
          f"{figures}")




def test_alerts_in_kafka_transactions(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """alerts_transactional: alerts go out in transactions; a read_committed reader sees each one, across a
    kill -9 and a restart."""
    rows, bad = produce_simulated(setup, 16_000, seed=39, incidents=INCIDENTS, bad=BAD)
    config = fast_config(setup, alerts_transactional=True)
    total = total_offsets(setup)
    first = _start(setup, config, daemons, "tx1")
    wait_until(lambda: stored_offsets(setup) > total * 0.4, 60, "progress")
    first.kill()
    _start(setup, config, daemons, "tx2")
    wait_until(lambda: stored_offsets(setup) == total, 120, "the end")
    # The state is stored before its alerts' transaction commits: read once every outbox is empty (each entry
    # leaves only after its transaction committed), not as soon as the offsets arrive.
    from monitor.io.redis_store import RedisStore

    store = RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)
    wait_until(lambda: not any(store.read(t, p).outbox for t in (setup.features, setup.predictions)
                               for p in range(PARTITIONS)), 60, "every alert's transaction to commit")
    figures = verify_exactly_once(setup, config, len(rows) + bad)  # reads with isolation.level=read_committed
    assert figures.alerts > 0
    print(f"transactions: {figures}")


def test_schema_registry_stopped_and_started_again(setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Issue 11 #1: the registry process is killed while records with a new schema id arrive; the daemon keeps
    running, is not ready and retries; once the registry is back it resumes with nothing lost, nothing
    dead-lettered and nothing applied twice. (It used to exit with code 2.)"""
    import json
    import subprocess
    import sys

    from fastavro import parse_schema

    from monitor.io.avro import encode_confluent, load_schema
    from tests.helpers import EXAMPLES, free_port

    v1 = json.loads((EXAMPLES / "churn_features.avsc").read_text())
    v2 = {**v1, "fields": [*v1["fields"], {"name": "channel", "type": ["null", "string"], "default": None}]}
    schemas = setup.tmp / "schemas.json"
    schemas.write_text(json.dumps({"1": v1, "2": v2}))
    port = free_port()
    server = REPO / "tests" / "registry_server.py"

    def registry() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, str(server), "--port", str(port), "--schemas", str(schemas)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: http_get(port, "/schemas/ids/1")[0] == 200, 30, "the registry to listen")
        return proc

    w1, w2 = load_schema(EXAMPLES / "churn_features.avsc"), parse_schema(v2)
    config = fast_config(setup, http={"host": "127.0.0.1", "port": setup.http_port})
    raw = yaml.safe_load(config.read_text())
    raw["schema_registry"] = {"url": f"http://127.0.0.1:{port}"}
    raw["models"][0]["features"]["format"] = "confluent"
    config.write_text(yaml.safe_dump(raw))
    reg = registry()
    try:
        rows, _ = produce_simulated(setup, 3_000, seed=51, encode=lambda _i, f: encode_confluent(w1, 1, f))
        d = _start(setup, config, daemons, "registry")
        wait_until(lambda: stored_offsets(setup, [setup.features]) == len(rows), 90, "schema 1 consumed")
        reg.kill()
        reg.wait(10)
        more, _ = produce_simulated(setup, 3_000, seed=52,
                                    encode=lambda i, f: encode_confluent(w2, 2, {**f, "channel": f"c{i % 3}"}))
        wait_until(lambda: http_get(setup.http_port, "/readyz")[0] == 503, 30, "not ready without the registry")
        # The daemon retries while the registry stays down (each retry reloads the partition), and lives on.
        wait_until(lambda: sum(e.get("event") == "partition.reloaded" for e in d.logs()) >= 3, 60, "retries")
        assert d.proc is not None and d.proc.poll() is None, "the daemon must keep running"
        assert stored_offsets(setup, [setup.features]) == len(rows), "nothing of schema 2 applied yet"
        reg = registry()
        total = total_offsets(setup)
        wait_until(lambda: stored_offsets(setup) == total, 90, "the daemon to reach the end")
        wait_until(lambda: http_get(setup.http_port, "/readyz")[0] == 200, 30, "ready again")
        logs = d.logs()
        down = [e for e in logs if e.get("event") == "dependency.down"]
        assert [e["dependency"] for e in down] == ["schema_registry"], down
        assert any(e.get("event") == "dependency.up" and e.get("dependency") == "schema_registry" for e in logs)
        figures = verify_exactly_once(setup, config, len(rows) + len(more))
        assert figures.events == len(rows) + len(more) and figures.rejects == 0 and figures.dead_lettered == 0
        assert d.terminate() == 0
    finally:
        reg.kill()
        reg.wait(10)


def test_a_store_that_loses_acknowledged_writes_is_found_and_its_records_counted_once(
        setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Issue 13: a Redis failover can lose the last writes the old master acknowledged; state and offset are
    one write, so they roll back together. Made here exactly: each input partition's keys are copied (one
    transaction per partition: a consistent cut) at 40% of the stream and put back once the daemon has read
    everything and sits idle, as a replica that fell behind would have them. The periodic store check finds
    every partition behind, the daemon says so (`state.rolled_back`, the offsets, the records replayed) and
    consumes them again: at the end every count is exact and every alert id there once."""
    from monitor.io.redis_store import RedisStore

    rows, bad = produce_simulated(setup, 16_000, seed=38, incidents=INCIDENTS, bad=BAD)
    config = fast_config(setup, store_check_s=1.0)
    total = total_offsets(setup)
    d = _start(setup, config, daemons, "d")
    wait_until(lambda: stored_offsets(setup) > total * 0.4, 60, "progress")
    client = _redis(setup)
    store = RedisStore(client, setup.prefix, setup.group)
    inputs = [(t, p) for t in (setup.features, setup.predictions) for p in range(PARTITIONS)]
    copies = {}
    for tp in inputs:
        pipe = client.pipeline(transaction=True)
        for key in store.keys(*tp).values():
            pipe.dump(key)
        copies[tp] = dict(zip(store.keys(*tp).values(), pipe.execute(), strict=True))
    wait_until(lambda: stored_offsets(setup) == total, 120, "the stream to be read")
    written = {tp: store.read(*tp).offset or 0 for tp in inputs}
    for tp in inputs:  # the failover: what the replica had
        pipe = client.pipeline(transaction=True)
        for key, raw in copies[tp].items():
            if raw is None:
                pipe.delete(key)
            else:
                pipe.restore(key, 0, raw, replace=True)
        pipe.execute()
    back = {tp: store.read(tp[0], tp[1]).offset or 0 for tp in inputs}
    assert sum(back.values()) < total
    wait_until(lambda: stored_offsets(setup) == total, 120, "the lost records to be consumed again")
    rolled = {(e["topic"], e["partition"]): e for e in d.logs() if e.get("event") == "state.rolled_back"}
    behind = {tp for tp in inputs if back[tp] < written[tp]}
    assert set(rolled) == behind, (sorted(rolled), sorted(behind))
    for tp in behind:
        assert rolled[tp]["stored_offset"] == (back[tp] or None) and rolled[tp]["written_offset"] == written[tp], \
            rolled[tp]
        assert rolled[tp]["records_replayed"] == written[tp] - back[tp]
    # Alerts made again from the re-consumed records have the ids of those sent before the rollback; their
    # statistics may differ in the last bits (the records came in other batches).
    figures = verify_exactly_once(setup, config, len(rows) + bad, regenerated=True)
    replayed = sum(written[tp] - back[tp] for tp in behind)
    print(f"rollback: {len(behind)} partitions behind, {replayed} records consumed again; {figures}")
    assert figures.events == len(rows) and figures.rejects == bad
    assert d.terminate() == 0
