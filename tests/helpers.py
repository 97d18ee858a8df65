"""Helpers for integration tests: configs, producing events, awaiting conditions, a daemon subprocess."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from monitor.cli.simulate import Incident, Simulator
from monitor.io.avro import encode_plain, load_schema

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "schemas" / "examples"
PARTITIONS = 3
# How long a test producer's flush may wait: past librdkafka's message.timeout.ms (300 s), by which every message
# is delivered or reported failed, so a flush that times out is a bug, not a slow broker (a whole 3-node cluster
# stopped for ~50 s and restarted outlasted the 60 s this used to be).
FLUSH_S = 330
# The model view (the default) at the simulator's pace: 100 events a second, 1 s slots, 10-slot windows.
MODEL_VIEW: dict[str, Any] = {"model_view": {"enabled": True, "idle_timeout_s": 10.0}, "partition_alerts": False,
                              "window": {"by": "time", "block_ms": 1000, "blocks": 10, "resolve_windows": 3}}
# The per-partition mode of 0.1 (count windows, an alert lifecycle per input partition, no model stage):
# the tests of stage 1's own checks and of its exactly-once recipe run in it.
PER_PARTITION: dict[str, Any] = {"model_view": {"enabled": False}, "partition_alerts": True,
                                 "window": {"by": "count", "block_size": 100, "blocks": 10}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Setup:
    """Unique topics, group and key prefix for one test, and the config file that names them."""

    unique: str
    bootstrap: str
    redis_url: str
    tmp: Path
    http_port: int = field(default_factory=free_port)
    batch: int = 500
    partitions: int = PARTITIONS  # of the input topics

    @property
    def features(self) -> str:
        return f"t{self.unique}.features"

    @property
    def predictions(self) -> str:
        return f"t{self.unique}.predictions"

    @property
    def labels(self) -> str:
        return f"t{self.unique}.labels"

    @property
    def alerts(self) -> str:
        return f"t{self.unique}.alerts"

    @property
    def dead_letter(self) -> str:
        return f"t{self.unique}.dlq"

    @property
    def blocks(self) -> str:
        return f"t{self.unique}.blocks"

    @property
    def group(self) -> str:
        return f"g{self.unique}"

    @property
    def prefix(self) -> str:
        return f"p{self.unique}"

    def write_config(self, extra: dict[str, Any] | None = None) -> Path:
        cfg: dict[str, Any] = {
            "kafka": {"bootstrap.servers": self.bootstrap},
            "group_id": self.group,
            "redis_url": self.redis_url,
            "key_prefix": self.prefix,
            "alerts_topic": self.alerts,
            "dead_letter_topic": self.dead_letter,
            "blocks_topic": self.blocks,
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "batch": {"max_messages": self.batch, "timeout_s": 0.2},
            **PER_PARTITION,
            "models": [{
                "name": "churn",
                "id_field": "event_id",
                "time_field": "event_time",
                "version_field": "model_version",
                "features": {"topic": self.features, "schema": str(EXAMPLES / "churn_features.avsc")},
                "predictions": {"topic": self.predictions, "schema": str(EXAMPLES / "churn_predictions.avsc")},
            }],
        }
        cfg.update(extra or {})
        path = self.tmp / "monitor.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def create_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        inputs = [self.features, self.predictions, self.labels]
        # Replication factor -1: the broker's default (1 on one broker, 3 on the three of `make test-cluster`).
        futures = admin.create_topics([NewTopic(t, num_partitions=self.partitions, replication_factor=-1)
                                       for t in inputs]
                                      + [NewTopic(t, num_partitions=PARTITIONS, replication_factor=-1)
                                         for t in (self.alerts, self.dead_letter, self.blocks)])
        for fut in futures.values():
            fut.result(30)


def with_labels(config: Path) -> Path:
    """The test config plus the labels topic and the join settings of the example model."""
    raw = yaml.safe_load(config.read_text())
    model = raw["models"][0]
    unique = model["features"]["topic"].split(".")[0]
    model.update({"labels": {"topic": f"{unique}.labels", "schema": str(EXAMPLES / "churn_labels.avsc")},
                  "type": "classifier", "label_field": "churned", "label_time_field": "label_time",
                  "score_field": "churn_score", "prediction_field": "predicted_churn"})
    config.write_text(yaml.safe_dump(raw))
    return config


def produce_labels(setup: Setup, events: int, seed: int, delay: int, missing: float,
                   incidents: Iterable[str] = (), interval_ms: int = 10) -> int:
    """The delayed labels of `produce_simulated`'s events (same seed and `interval_ms`); returns how many were
    sent."""
    from monitor.cli.simulate import LabelFeed

    schema = load_schema(EXAMPLES / "churn_labels.avsc")
    sim = Simulator(seed=seed, incidents=[Incident.parse(i) for i in incidents], interval_ms=interval_ms)
    feed = LabelFeed(delay=delay, missing=missing, seed=seed)
    producer = Producer({"bootstrap.servers": setup.bootstrap, "enable.idempotence": True, "linger.ms": 20})
    sent = 0
    for _, preds in sim.batches(events, batch=2000):
        for p in preds:
            for label in feed.push(p):
                producer.produce(setup.labels, key=label["event_id"].encode(), value=encode_plain(schema, label))
                sent += 1
            producer.poll(0)
    assert producer.flush(FLUSH_S) == 0
    return sent


def produce_simulated(setup: Setup, events: int, incidents: Iterable[str] = (), seed: int = 7,
                      bad: dict[int, tuple[str, bytes]] | None = None, rate: float = 0.0,
                      transform: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
                      encode: Callable[[int, dict[str, Any]], bytes] | None = None, interval_ms: int = 10
                      ) -> tuple[list[dict[str, Any]], int]:
    """Produce `events` simulated feature+prediction pairs (key = event id; event times `interval_ms` apart);
    `bad` maps an event index to a (label, payload) pair to send to the features topic right after that
    event; `encode` (index, row) -> payload replaces plain Avro for the features. Returns the feature rows."""
    f_schema = load_schema(EXAMPLES / "churn_features.avsc")
    p_schema = load_schema(EXAMPLES / "churn_predictions.avsc")
    sim = Simulator(seed=seed, incidents=[Incident.parse(i) for i in incidents], interval_ms=interval_ms)
    producer = Producer({"bootstrap.servers": setup.bootstrap, "enable.idempotence": True, "linger.ms": 20})
    rows: list[dict[str, Any]] = []
    failures: list[Any] = []
    bad_sent = 0

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    started = time.monotonic()
    for feats, preds in sim.batches(events, batch=2000):
        for f, p in zip(feats, preds, strict=True):
            if rate and len(rows) % 100 == 0:
                ahead = len(rows) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # pacing a live stream, not synchronisation
            if transform is not None:
                f = transform(len(rows), f)
            key = f["event_id"].encode()
            value = encode(len(rows), f) if encode is not None else encode_plain(f_schema, f)
            _produce(producer, setup.features, key, value, report)
            _produce(producer, setup.predictions, key, encode_plain(p_schema, p), report)
            if bad and len(rows) in bad:
                label, payload = bad[len(rows)]
                producer.produce(setup.features, key=key, value=payload, headers=[("case", label.encode())],
                                 on_delivery=report)
                bad_sent += 1
            rows.append(f)
            producer.poll(0)
    assert producer.flush(FLUSH_S) == 0
    assert not failures, failures
    return rows, bad_sent


def partition_count(consumer: Consumer, topic: str) -> int:
    return len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, report: Callable[..., None]) -> None:
    """Produce, waiting for delivery reports while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, on_delivery=report)
            return
        except BufferError:
            producer.poll(0.5)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partition_count(consumer, topic))}
    finally:
        consumer.close()


def _high_watermark(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> int:
    """The partition's end, asked again while the broker is not ready to answer (a topic just made has no
    leader for a moment: NOT_LEADER_FOR_PARTITION)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(bootstrap: str, topic: str, expected: int | None = None, idle: float = 3.0,
               stuck: float = 30.0) -> list[Any]:
    """All messages of a topic: until `expected` are read, or, without `expected`, until every partition is read
    to the end it had when the call began and then nothing new arrives for `idle` seconds. (Idle alone ended
    a read of a three-broker cluster's alerts before its first fetch answered.) A partition whose last
    offsets are transaction markers may never report that end: after `stuck` seconds without a message, idle
    alone decides."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    parts = [TopicPartition(topic, p, 0) for p in range(partition_count(consumer, topic))]
    ends = {tp.partition: _high_watermark(consumer, tp) for tp in parts}
    reached = {p: 0 for p in ends}
    consumer.assign(parts)
    out: list[Any] = []
    last = time.monotonic()

    def at_ends() -> bool:
        if all(reached[p] >= e for p, e in ends.items()):
            return True
        positions = consumer.position([TopicPartition(topic, p) for p in ends])
        return all(max(reached[tp.partition], tp.offset) >= ends[tp.partition] for tp in positions)

    try:
        while expected is None or len(out) < expected:
            quiet = time.monotonic() - last
            if quiet >= idle and (expected is not None or quiet >= stuck or at_ends()):
                break
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    out.append(msg)
                    p, o = msg.partition(), msg.offset()
                    assert p is not None and o is not None
                    reached[p] = max(reached[p], o + 1)
                    last = time.monotonic()
    finally:
        consumer.close()
    return out


class DaemonProcess:
    """`model-monitor run` as a real subprocess (stopped with SIGTERM), logs kept in a file."""

    def __init__(self, config: Path, log_path: Path, command: str = "run") -> None:
        self.config = config
        self.log_path = log_path
        self.command = command  # or "notify"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", self.command, "--config", str(self.config)],
                                     stdout=log, stderr=log, env=_clean_env())
        return self

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"raw": line})
        return out


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _clean_env() -> dict[str, str]:
    """The test's config file is the whole truth: drop MONITOR_* overrides from the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}


FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000", "max.poll.interval.ms": "10000"}


def fast_config(setup: Setup, **extra: Any) -> Path:
    """A config whose consumer notices a dead or stuck member within seconds (for the fault tests); each
    replica listens on a port of its own (http.port 0). Batches may wait 50 ms for their checkpoint while a
    backlog is read: kills land both between checkpoints that cover several batches (the waiting ones are
    replayed) and right after them, and the stored offsets still move often enough to aim kills along the
    stream (at the default 1 s, a stream this short is read before its first checkpoint)."""
    return setup.write_config({"consumer": FAST_GROUP, "http": {"host": "127.0.0.1", "port": 0},
                               "checkpoint_interval_ms": 50, **extra})


@dataclass
class Figures:
    events: int
    rejects: int
    dead_lettered: int
    dead_letter_copies: int
    alerts: int
    alert_copies: int


def verify_exactly_once(setup: Setup, config: Path, produced: int, regenerated: bool = False) -> Figures:
    """RELIABILITY.md's pass condition against an uninterrupted in-process replay of the same partitions:
    stored offsets at the ends, per-feature counts equal (sums to 1e-12), alert ids equal with only
    byte-identical duplicates, valid + dead-lettered (distinct) = produced. With `regenerated` (a store that
    rolled back made alerts again from records cut into other batches), a duplicate may differ in the last
    digits of its floats (`same_alert`)."""

    from monitor.app.pipeline import StreamProcessor, build_processors
    from monitor.io.kafka import to_raw
    from monitor.io.redis_store import RedisStore
    from monitor.settings import load_settings

    settings = load_settings(config, environ={})
    store = RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)
    processors = build_processors(settings)
    expected_alerts: set[str] = set()
    events = rejects = 0
    for topic, proc in processors.items():
        if not isinstance(proc, StreamProcessor):
            continue
        ends = end_offsets(setup.bootstrap, topic)
        by_partition: dict[int, list[Any]] = {}
        for msg in read_topic(setup.bootstrap, topic, sum(ends.values())):
            by_partition.setdefault(msg.partition(), []).append(to_raw(msg))
        for p, records in by_partition.items():
            records.sort(key=lambda r: r.offset)
            part = proc.new_partition(p)
            expected_alerts |= {a.alert_id for a in proc.process(part, records).alerts}
            snap = store.read(topic, p)
            assert snap.offset == ends[p], (topic, p, snap.offset, ends[p])
            stored = proc.new_partition(p)
            stored.load_fields(snap.fields)
            assert_same_state(stored, part, (topic, p))
            if topic == setup.features:
                events += part.events
                rejects += part.rejects
    # The outbox is published after the state that holds it is committed, so the last alerts and dead letters
    # may still be on their way when the offsets are at the end: read again until the expected ones are there.
    copies: dict[str, set[bytes]] = {}
    n_alerts = 0
    deadline = time.monotonic() + 60
    while True:
        alerts = read_topic(setup.bootstrap, setup.alerts, idle=1.0)
        copies = {}
        for msg in alerts:
            value = msg.value() or b""
            copies.setdefault(_alert_id(value), set()).add(value)
        n_alerts = len(alerts)
        if set(copies) >= expected_alerts or time.monotonic() > deadline:
            break
    extra = sorted({_alert_brief(v) for k in set(copies) - expected_alerts for v in copies[k]})
    assert set(copies) == expected_alerts, (f"{len(expected_alerts - set(copies))} alert ids of the replay missing, "
                                            f"{len(set(copies) - expected_alerts)} not in it: {extra[:10]}")
    assert all(len(v) == 1 or (regenerated and same_alert(v)) for v in copies.values()), \
        "a re-sent alert must be byte-identical"
    while True:
        dead = read_topic(setup.bootstrap, setup.dead_letter, idle=1.0)
        distinct = {(dict(m.headers())["mm.error.topic"], dict(m.headers())["mm.error.partition"],
                     dict(m.headers())["mm.error.offset"]) for m in dead}
        if len(distinct) >= rejects or time.monotonic() > deadline:
            break
    assert len(distinct) == rejects
    assert events + len(distinct) == produced
    return Figures(events, rejects, len(distinct), len(dead), len(copies), n_alerts)


def same_alert(copies: set[bytes]) -> bool:
    """Copies of one alert id are the same alert: equal fields, floats to 1e-9 relative. An alert made again
    after a store rollback comes from the same records cut into other batches, so its statistic can differ
    in the last bits (sums added in another order); a copy re-sent from the outbox is byte-identical."""
    recs = [_alert_record(c) for c in copies]
    try:
        for rec in recs[1:]:
            assert_close(rec, recs[0], "alert", rel=1e-9)
    except AssertionError:
        return False
    return True


def _alert_record(payload: bytes) -> dict[str, Any]:
    """An alert message decoded with plain fastavro and the alert schema."""
    import io as _io

    from fastavro import schemaless_reader

    from monitor.io.avro import AlertCodec

    rec = schemaless_reader(_io.BytesIO(payload), AlertCodec().schema, None)
    assert isinstance(rec, dict)
    return rec


def _alert_brief(payload: bytes) -> str:
    """An unexpected alert in an assertion message: where and what, no payload values."""
    rec = _alert_record(payload)
    return (f"{rec['source_topic']}[{rec['source_partition']}]@{rec['source_offset']} {rec['feature']}/{rec['check']} "
            f"{rec['status']}")


def _alert_id(payload: bytes) -> str:
    return str(_alert_record(payload)["alert_id"])


def wait_for_log(daemon: DaemonProcess, event: str, timeout: float) -> dict[str, Any]:
    return wait_until(lambda: next((e for e in daemon.logs() if e.get("event") == event), None), timeout,
                      f"log event {event}")


class BackgroundProducer:
    """`produce_simulated` in a thread: a live stream while the test changes the daemons."""

    def __init__(self, setup: Setup, events: int, rate: float, **kwargs: Any) -> None:
        import threading

        self.result: tuple[list[dict[str, Any]], int] | None = None
        self._thread = threading.Thread(target=self._run, args=(setup, events, rate, kwargs), daemon=True)
        self._thread.start()

    def _run(self, setup: Setup, events: int, rate: float, kwargs: dict[str, Any]) -> None:
        self.result = produce_simulated(setup, events, rate=rate, **kwargs)

    def join(self, timeout: float = FLUSH_S + 60) -> tuple[list[dict[str, Any]], int]:
        self._thread.join(timeout)
        assert self.result is not None, "the producer did not finish"
        return self.result


def set_max_message_bytes(bootstrap: str, topic: str, value: int | None) -> None:
    """Make a topic refuse every message (a small max.message.bytes) or accept them again (None)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry("max.message.bytes", None if value is None else str(value), incremental_operation=op)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, topic,
                                                               incremental_configs=[entry])]).values():
        fut.result(30)


def stored_offsets(setup: Setup, topics: Iterable[str] | None = None) -> int:
    """Sum of the next offsets stored in Redis over the topics' partitions; -1 while Redis is unreachable."""
    from monitor.errors import DependencyUnavailable
    from monitor.io.redis_client import REDIS_ERRORS
    from monitor.io.redis_store import RedisStore

    try:
        store = RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)
        return sum(store.read(t, p).offset or 0 for t in (topics or (setup.features, setup.predictions))
                   for p in range(PARTITIONS))
    except (DependencyUnavailable, *REDIS_ERRORS):
        return -1


def total_offsets(setup: Setup) -> int:
    """Sum of the end offsets of the features and predictions topics."""
    return sum(sum(end_offsets(setup.bootstrap, t).values()) for t in (setup.features, setup.predictions))


def comparable_state(part: Any) -> dict[str, Any]:
    """A stage-1 partition's whole state (meta, windows, detectors, lifecycle, recent ids) as plain data, its
    packed sketch vectors decoded to numbers, and without what follows the wall clock (the idle flag, a
    `stream_stopped` silence): what a replay of the same records must reproduce."""
    from monitor.core.sketches import unpack_array
    from monitor.core.state_codec import read_fields
    from monitor.core.types import SEGMENT_PREFIX

    out: dict[str, Any] = {}
    own = {k: v for k, v in part.to_fields().items() if not k.startswith(SEGMENT_PREFIX)}
    for label, child in getattr(part, "children", {}).items():  # segments: each child's state on its own
        out[f"{SEGMENT_PREFIX}{label}"] = comparable_state(child)
    for key, state in read_fields(own).items():
        state = plain(state)
        if key == "__meta__":
            state.pop("idle_sent", None)
            for name in ("open_alerts", "quiet_until"):
                state[name] = {k: v for k, v in state[name].items() if not k.endswith("/stream_stopped")}
        elif state.get("kind") == "numeric":
            window = state["window"]
            window["closed"] = [unpack_array(b).tolist() for b in window["closed"]]
            window["open"] = None if window["open"] is None else unpack_array(window["open"]).tolist()
        out[key] = state
    return out


def assert_close(got: Any, want: Any, where: object, rel: float = 1e-9) -> None:
    """Equal, floats to `rel` (sums add up in another order when a stream is cut into other batches)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (where, sorted(got), sorted(want))
        for k in want:
            assert_close(got[k], want[k], f"{where}.{k}", rel)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]", rel)
    elif isinstance(want, float) and isinstance(got, (int, float)):
        assert got == want or math.isclose(got, want, rel_tol=rel, abs_tol=rel) or (got != got and want != want), \
            (where, got, want)
    else:
        assert got == want, (where, got, want)


def assert_same_state(stored: Any, expected: Any, where: object) -> None:
    """A partition's stored state against a replay of the same records: the whole state, not only counts
    (windows, detectors, alert lifecycle, cooldowns, recent ids), floats to 1e-9."""
    assert (stored.events, stored.rejects) == (expected.events, expected.rejects), \
        (where, "stored", stored.events, stored.rejects, "replay", expected.events, expected.rejects)
    assert_close(comparable_state(stored), comparable_state(expected), where)


def both_stages_done(setup: Setup) -> bool:
    """Stage 1 has stored the end of every input partition and sent its outbox; stage 2 the end of the blocks."""
    from monitor.io.redis_store import RedisStore

    store = RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)
    for topic in (setup.features, setup.predictions, setup.blocks):
        for p, end in end_offsets(setup.bootstrap, topic).items():
            snap = store.read(topic, p)
            if end and (snap.offset != end or snap.outbox):
                return False
    return True


def small_model(tmp: Path, fields: list[dict[str, Any]], partition_alerts: bool = False,
                categorical: list[str] | None = None) -> tuple[Any, Any]:
    """Stage 1's processor and stage 2's for a one-model config (topic `m.f`, 1 s slots, 3 blocks) whose
    records have `event_id`, `event_time` and `fields` (`categorical`: fields listed as such); nothing to
    Kafka or Redis."""
    from monitor.app.models import ModelProcessor
    from monitor.app.pipeline import StreamProcessor, build_processors
    from monitor.settings import load_settings

    schema = {"type": "record", "name": "R", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "event_time", "type": "long"}, *fields]}
    (tmp / "r.avsc").write_text(json.dumps(schema))
    cfg = {"window": {"by": "time", "block_ms": 1000, "blocks": 3}, "partition_alerts": partition_alerts,
           "models": [{"name": "m", "features": {"topic": "m.f", "schema": "r.avsc",
                                                 "categorical": categorical or []}}]}
    (tmp / "m.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(tmp / "m.yaml", environ={})
    proc = build_processors(settings)["m.f"]
    assert isinstance(proc, StreamProcessor)
    models = ModelProcessor(settings, {"m.f": proc})
    models.input_partitions = {"m.f": 1}
    return proc, models


def plain(obj: Any) -> Any:
    """A decoded state with numpy arrays as lists (comparable with ==)."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# Every key family a daemon writes (docs/architecture.md, "State in Redis"). A multi-key family's keys
# carry one hash tag per partition, so one cluster slot holds what a script or transaction touches together.
KEY_FAMILIES = {
    "partition state": r"\{P:G:[^:}]+:\d+\}:(offset|fence|state|outbox)",
    "partition index": r"P:G:partitions",
    "join store": r"\{P:G:join:[^:}]+:\d+\}:(preds|time|log)",
    "join index": r"P:G:join:[^:}]+:partitions",
    "join progress": r"\{P:G:join:[^:}]+\}:progress",
    "history": r"P:G:history:[^:]+",
    "notify": r"P:G-notify:notify:((sent|sending):[^:]+|firing)",
    "references": r"P:ref:[^:]+:(v:[^:]+|versions|active|seq)",
}


def assert_key_layout(redis_url: str, prefix: str, group: str) -> dict[str, int]:
    """Every key of this run belongs to a known family, and keys sharing a hash tag share a slot — as the
    server computes it (CLUSTER KEYSLOT) when `redis_url` is a cluster. Returns the keys per family."""
    import re

    from monitor.io.redis_client import connect, is_cluster, key_slot

    client = connect(redis_url)
    patterns = {name: re.compile(p.replace("P", re.escape(prefix)).replace("G", re.escape(group)) + "$")
                for name, p in KEY_FAMILIES.items()}
    found: dict[str, int] = {}
    tags: dict[str, set[int]] = {}
    for raw in client.scan_iter(match=f"*{prefix}*", count=1000):
        key = raw.decode()
        family = next((n for n, p in patterns.items() if p.match(key)), None)
        assert family is not None, f"key {key} belongs to no documented family"
        found[family] = found.get(family, 0) + 1
        if key.startswith("{"):
            slot = int(client.cluster_keyslot(key)) if is_cluster(redis_url) else key_slot(key)
            tags.setdefault(key[: key.index("}") + 1], set()).add(slot)
    assert all(len(slots) == 1 for slots in tags.values()), {t: s for t, s in tags.items() if len(s) > 1}
    return found


@dataclass
class ModelViewFigures:
    events: int
    dead_lettered: int
    dead_letter_copies: int
    blocks: int
    alerts: int
    alert_copies: int


def block_differences(setup: Setup, expected: Any, records: list[Any], tp: tuple[str, int]) -> str:
    """The first block of `tp` whose offsets or counts on the blocks topic differ from a replay of its records
    with the replay's processor (the diagnosis of a failed exactly-once check: which records, so which owner
    and fault)."""
    proc = expected.processors[tp[0]]
    part = proc.new_partition(tp[1], setup.partitions)
    want: dict[int, tuple[int, int, int]] = {}
    for lo in range(0, len(records), 500):
        for b in proc.process(part, records[lo:lo + 500]).blocks:
            if not b.get("segment"):  # the stream's own blocks ("" or null), not a segment's
                want[int(b["seq"])] = (int(b["first_offset"]), int(b["last_offset"]), int(b["events"]))
    codec = expected.models.codec
    got: dict[int, set[tuple[int, int, int]]] = {}
    for msg in read_topic(setup.bootstrap, setup.blocks, sum(end_offsets(setup.bootstrap, setup.blocks).values())):
        for b in codec.decode(msg.value()):
            if (b["topic"], b["partition"]) == tp and not b.get("segment") and not b.get("idle"):
                got.setdefault(int(b["seq"]), set()).add((int(b["first_offset"]), int(b["last_offset"]),
                                                          int(b["events"])))
    for seq in sorted(set(want) | set(got)):
        if got.get(seq) != {want.get(seq)}:
            return f"block {seq}: on the topic {sorted(got.get(seq, set()))}, replay {want.get(seq)}"
    return "every block on the topic equals the replay's"


def verify_model_view(setup: Setup, config: Path, reference: Any, produced: int) -> tuple[ModelViewFigures, Any]:
    """The pass condition of both stages against an uninterrupted in-process replay (`monitor.app.replay`) of
    the same input partitions: every stage-1 state equal (counts, sums, windows, detectors), every stored
    offset at its end; the model stage's counts and sums equal; the alert ids on the topic exactly the
    replay's, each id the same alert however often it was sent (byte-identical from the outbox; to 1e-9 when
    made again after a store rollback, `same_alert`); valid + dead-lettered (distinct) = produced.
    Returns the figures and the replay."""
    import io as _io

    import fastavro

    from monitor.app.replay import replay
    from monitor.core.state_codec import read_fields
    from monitor.io.avro import schemas_dir
    from monitor.io.kafka import to_raw
    from monitor.io.redis_store import RedisStore
    from monitor.settings import load_settings

    settings = load_settings(config, environ={})
    store = RedisStore.from_url(setup.redis_url, setup.prefix, setup.group)
    records: dict[tuple[str, int], list[Any]] = {}
    ends: dict[tuple[str, int], int] = {}
    for topic in (setup.features, setup.predictions):
        topic_ends = end_offsets(setup.bootstrap, topic)
        ends.update({(topic, p): e for p, e in topic_ends.items()})
        for msg in read_topic(setup.bootstrap, topic, sum(topic_ends.values())):
            records.setdefault((topic, msg.partition()), []).append(to_raw(msg))
    for recs in records.values():
        recs.sort(key=lambda r: r.offset)
    expected = replay(settings, records, {reference.model: reference})
    events = rejects = 0
    for tp, part in expected.partitions.items():
        snap = store.read(*tp)
        assert snap.offset == ends[tp], (tp, snap.offset, ends[tp])
        stored = expected.processors[tp[0]].new_partition(tp[1], setup.partitions)  # type: ignore[call-arg]
        stored.load_fields(snap.fields)
        try:
            assert_same_state(stored, part, tp)
        except AssertionError as exc:  # where the stream went wrong: its blocks on the topic against the replay's
            raise AssertionError(f"{exc}; {block_differences(setup, expected, records[tp], tp)}") from exc
        if tp[0] == setup.features:
            events += part.events
            rejects += part.rejects
    schema = fastavro.parse_schema(json.loads((schemas_dir() / "alert.avsc").read_text()))
    copies: dict[str, set[bytes]] = {}
    n_alerts = 0
    for msg in read_topic(setup.bootstrap, setup.alerts, idle=1.0):
        rec = fastavro.schemaless_reader(_io.BytesIO(msg.value()), schema, None)
        assert isinstance(rec, dict)
        copies.setdefault(str(rec["alert_id"]), set()).add(msg.value() or b"")
        n_alerts += 1
    assert set(copies) == {a.alert_id for a in expected.alerts}, (sorted(copies), expected.alerts)
    assert all(len(v) == 1 or same_alert(v) for v in copies.values()), "a re-sent alert must be the same alert"
    stored_views: dict[str, Any] = {}
    for p, end in end_offsets(setup.bootstrap, setup.blocks).items():
        if end:
            fields = store.read(setup.blocks, p).fields
            stored_views.update(read_fields(fields, [k for k in fields if k.startswith(f"{reference.model}/")]))
    for part in expected.model_parts.values():
        for key, view in part.streams.items():
            got = stored_views[key]
            assert got["counts"]["events"] == view.counts["events"], key
            assert got["counts"]["blocks"] == view.counts["blocks"], key
            for name, feat in view.features.items():
                want, have = feat.to_state(), got["features"][name]
                if want["kind"] == "numeric":
                    assert list(have["totals"][:5]) == list(want["totals"][:5]), (key, name)
                    assert math.isclose(have["totals"][5], want["totals"][5], rel_tol=1e-12), (key, name)
                else:
                    assert (have["count"], have["missing"]) == (want["count"], want["missing"]), (key, name)
    dead = read_topic(setup.bootstrap, setup.dead_letter, idle=1.0)
    distinct = {(dict(m.headers())["mm.error.topic"], dict(m.headers())["mm.error.partition"],
                 dict(m.headers())["mm.error.offset"]) for m in dead}
    assert len(distinct) == rejects
    assert events + len(distinct) == produced, (events, len(distinct), produced)
    return ModelViewFigures(events, len(distinct), len(dead), expected.blocks, len(copies), n_alerts), expected


def column_records(cols: dict[str, Any], topic: str, schema: dict[str, Any], partitions: int = 3
                   ) -> dict[tuple[str, int], list[Any]]:
    """Rows of numpy columns (with `event_time`) as plain Avro records of `topic`, event ids e0, e1, ...,
    dealt round robin over `partitions`, the Kafka timestamp the event time (for the in-process replay)."""
    from monitor.core.types import RawRecord
    from monitor.io.avro import encode_plain

    out: dict[tuple[str, int], list[Any]] = {}
    names = list(cols)
    for i, values in enumerate(zip(*(cols[k].tolist() for k in names), strict=True)):
        row = dict(zip(names, values, strict=True))
        row["event_id"] = f"e{i}"
        part = i % partitions
        recs = out.setdefault((topic, part), [])
        recs.append(RawRecord(topic, part, len(recs), row["event_id"].encode(), encode_plain(schema, row),
                              timestamp_ms=int(row["event_time"])))
    return out


def debian_tool(name: str, package: str) -> str:
    """The path of a program from a Debian package that `.ci/run` installs: skipped locally without it, a
    failure in CI."""
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs Debian's {package} package")
        pytest.skip(f"{name} not installed (Debian: apt-get install {package})")
    return path
