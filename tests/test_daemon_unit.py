"""The daemon's own logic without a broker: rebalance bookkeeping and what it does when Kafka errs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def test_a_released_partition_takes_its_metric_series_with_it(tmp_path: Path) -> None:
    """Issue 11 #10: after a rebalance the series of partitions this replica gave up must go, or a sum over
    replicas counts their lag twice (and the lag alert rule fires)."""
    from confluent_kafka import TopicPartition

    from monitor.app.daemon import Daemon
    from monitor.io.state import MemoryStore
    from tests.test_model_view import settings_for

    settings = settings_for(tmp_path)
    daemon = Daemon(settings, MemoryStore())
    topic = settings.models[0].features.topic
    m = daemon.metrics
    for p in (0, 1):
        m.lag.labels(topic, str(p)).set(100 + p)
        m.drift.labels("churn", "features", "age", "psi", str(p)).set(0.1)
    m.drift.labels("churn", "features", "age", "psi", "all").set(0.2)

    def series() -> set[tuple[str, ...]]:
        return {(s.name, *sorted(s.labels.values())) for fam in m.registry.collect() for s in fam.samples
                if s.name in ("monitor_consumer_lag", "monitor_drift_statistic")}

    daemon._release([TopicPartition(topic, 0)])
    left = series()
    assert ("monitor_consumer_lag", "1", topic) in left and ("monitor_consumer_lag", "0", topic) not in left
    drift_parts = {s for s in left if s[0] == "monitor_drift_statistic"}
    assert len(drift_parts) == 2  # partition 1 and the model view's "all" stay, partition 0 is gone


class _FlakyCommitted:
    """A consumer whose group coordinator does not answer `committed` the first `failures` times."""

    def __init__(self, failures: int, offsets: dict[int, int]) -> None:
        self.failures, self.offsets, self.calls = failures, offsets, 0

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "coordinator not available"))
        return [TopicPartition(tp.topic, tp.partition, self.offsets.get(tp.partition, -1001)) for tp in partitions]


def test_committed_offsets_are_asked_until_kafka_answers(tmp_path: Path) -> None:
    """Issue 11 #7: a Kafka error while reading the group's committed offsets used to return none, which
    silently skipped the lost-state check of every partition assigned. Now it is asked again (an outage)."""
    from confluent_kafka import TopicPartition

    from monitor.app.daemon import Daemon
    from monitor.io.state import MemoryStore
    from tests.test_model_view import settings_for

    settings = settings_for(tmp_path)
    daemon = Daemon(settings, MemoryStore())
    daemon.stop_event.wait = lambda timeout=None: False  # type: ignore[method-assign]  # no real pause here
    topic = settings.models[0].features.topic
    consumer = _FlakyCommitted(failures=2, offsets={0: 1234})
    got = daemon._committed(consumer, [TopicPartition(topic, 0), TopicPartition(topic, 1)])  # type: ignore[arg-type]
    assert consumer.calls == 3
    assert got == {(topic, 0): 1234}
    assert daemon.outage == "kafka"
    # With the offsets known, a partition with no state but a committed offset is found out (state lost).
    assert daemon._take(topic, 0, got.get((topic, 0))) == 1234
    assert (topic, 0) in daemon.lost


def test_partitions_assigned_while_stopping_are_not_taken_and_nothing_raises(tmp_path: Path) -> None:
    """Issue 13 (the chaos run): a rebalance inside close() assigned partitions while the coordinator did not
    answer; the committed-offsets wait raised out of the callback and the SIGTERM'd daemon exited 1. Now a
    stopping daemon takes nothing (no fence bumped: the next owner's stays valid) and close() goes on."""
    from confluent_kafka import TopicPartition

    from monitor.app.daemon import Daemon
    from monitor.io.state import MemoryStore
    from tests.test_model_view import settings_for

    class Recording(_FlakyCommitted):
        assigned: list[Any] = []

        def incremental_assign(self, partitions: list[Any]) -> None:
            self.assigned += partitions

    settings = settings_for(tmp_path)
    store = MemoryStore()
    daemon = Daemon(settings, store)
    daemon.stop_event.set()
    topic = settings.models[0].features.topic
    consumer = Recording(failures=10**6, offsets={})  # the coordinator never answers
    daemon._on_assign(consumer, [TopicPartition(topic, 0)])  # type: ignore[arg-type]
    assert [(tp.topic, tp.partition) for tp in consumer.assigned] == [(topic, 0)]
    assert daemon.owned == {} and store.read(topic, 0).fence == 0
    # While running, the same coordinator makes it wait (an outage), asking again; stopping ends the wait.
    running = Daemon(settings, store)
    calls = iter(range(3))
    running.stop_event.wait = lambda timeout=None: next(calls) == 2 and running.stop_event.set()  # type: ignore
    assert running._committed(consumer, [TopicPartition(topic, 0)]) is None  # type: ignore[arg-type]
    assert running.outage == "kafka"


def test_the_status_page_reads_a_snapshot_not_the_live_loop_state(tmp_path: Path) -> None:
    """Issue 11 #9: the HTTP thread iterated the loop's own dicts and deque (lags, recent alerts), which the loop
    changes meanwhile ("dictionary changed size during iteration"). It now reads a snapshot the loop swaps in
    whole after each iteration: what the loop changes after that shows up only at the next swap."""
    from monitor.app.daemon import Daemon
    from monitor.io.state import MemoryStore
    from tests.test_model_view import settings_for

    daemon = Daemon(settings_for(tmp_path), MemoryStore())
    daemon.lags[("churn.features", 0)] = 111_111
    daemon._publish_view()
    daemon.lags[("churn.features", 0)] = 222_222  # the loop, mid-iteration
    daemon.lags[("churn.features", 7)] = 333_333
    page = daemon.status_page()
    assert "111,111" in page and "222,222" not in page and "333,333" not in page
    daemon._publish_view()
    page = daemon.status_page()
    assert "222,222" in page and "333,333" in page and "111,111" not in page
    # A snapshot cannot be changed through the page's hands either.
    view = daemon.view
    with pytest.raises(TypeError):
        view.lags[("churn.features", 0)] = 0  # type: ignore[index]


def test_consumer_settings_librdkafka_refuses_are_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """A session timeout above max.poll.interval.ms (found setting up static membership): `run` exits 2 with
    librdkafka's reason in one log line, no traceback. Nothing needs to be reachable: the consumer is refused
    before it connects."""
    import json
    import subprocess
    import sys

    import yaml

    from tests.helpers import EXAMPLES, free_port

    cfg = {"kafka": {"bootstrap.servers": f"127.0.0.1:{free_port()}"}, "redis_url": f"redis://127.0.0.1:{free_port()}/0",
           "consumer": {"session.timeout.ms": "30000", "max.poll.interval.ms": "10000"},
           "http": {"host": "127.0.0.1", "port": 0},
           "models": [{"name": "churn", "features": {"topic": "f", "schema": str(EXAMPLES / "churn_features.avsc")}}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(tmp_path / "m.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "stage.failed"]
    assert failed and "max.poll.interval.ms" in failed[0]["error"], events
    assert "Traceback" not in out.stderr


class _Watermarks:
    """A consumer whose partitions end at `high[partition]` (what the last fetch said), and which takes
    commits."""

    def __init__(self) -> None:
        self.high: dict[int, int] = {}

    def get_watermark_offsets(self, tp: Any, timeout: float = -1, cached: bool = True) -> tuple[int, int]:
        return 0, self.high.get(tp.partition, -1)

    def commit(self, offsets: Any, asynchronous: bool = True) -> None:
        pass


def test_blocks_wait_for_their_checkpoint_only_while_a_backlog_is_read(tmp_path: Path) -> None:
    """Issue 12: reading a backlog (at least `BACKLOG_BATCHES` full batches to read over the stage's
    partitions, by the last fetch's high watermarks), a batch that closed blocks waits for its checkpoint like a
    quiet one, its blocks with it (they leave with the checkpoint of the state that made them, in the order
    made); near the end of the log, or with no watermark known, a batch's blocks are written at once. The
    stored outbox holds the same blocks, in the same order, either way. The bar is over all partitions: the
    same backlog spread over two partitions waits too. A partition never checkpointed may wait from its first
    batch when a restart would read it from the same place (`start_from: earliest`), not when it would start at
    the log end. (A full consume batch is no sign of a backlog: a consume waits to fill its batch, so at half
    load every batch was full, and the first version of this, keyed on it, delayed the bench's alerts by
    ~0.6 s.)"""
    from monitor.app.daemon import BACKLOG_BATCHES, Daemon
    from monitor.io.avro import BlockCodec
    from monitor.io.state import MemoryStore
    from tests.test_model_view import records_for, settings_for

    settings = settings_for(tmp_path, checkpoint_interval_ms=60_000)
    latest = settings.model_copy(update={"start_from": "latest"})
    topic = settings.models[0].features.topic
    records = records_for(settings, 1, [], events=3_000)[(topic, 0)]

    def run(behind: int | None, other: int = 0, config: Any = settings
            ) -> tuple[list[int | None], list[str], list[list[int]]]:
        """The stored offset after each batch, the outbox ids at the end, the blocks' sequence numbers, with
        `behind` records after each batch (None: no watermark known) and `other` records to read in another
        partition of the stage."""
        store = MemoryStore()
        daemon = Daemon(config, store)
        consumer = _Watermarks()
        daemon.consumer = consumer  # type: ignore[assignment]
        daemon._take(topic, 0)
        daemon.lags[(topic, 1)] = other
        stored = []
        for lo in range(0, len(records), 500):
            if behind is not None:
                consumer.high[0] = lo + 500 + behind
            daemon._handle_records({(topic, 0): records[lo:lo + 500]})
            stored.append(daemon.owned[(topic, 0)].stored_offset)
        daemon._flush_deferred(due_only=False)
        assert daemon.owned[(topic, 0)].waiting_blocks == []
        snap = store.read(topic, 0)
        assert snap.offset == len(records)
        codec = BlockCodec()
        ids = sorted(k for k in snap.outbox if k.startswith("blk:"))
        seqs = [[int(b["seq"]) for b in codec.decode(snap.outbox[k].partition(b"\n")[2])]
                for k in ids]
        return stored, ids, seqs

    behind = BACKLOG_BATCHES * settings.batch.max_messages
    backlog = run(behind)
    # 10 ms apart, 1 s slots: 100 events a block, every batch of 500 closes blocks. From the log start, even the
    # first batch waits (a crash reads it again from there).
    assert backlog[0] == [None] * 6
    flat = [s for chunk in backlog[2] for s in chunk]
    assert flat == sorted(flat) and len(flat) >= 25  # 3,000 events, 100 a block
    spread = run(behind // 2, other=behind - behind // 2)
    assert spread[0] == [None] * 6 and spread[1:] == backlog[1:]
    # From the log end, the first batch is written (a restart would skip it), then the rest wait.
    from_end = run(behind, config=latest)
    assert from_end[0] == [500] * 6 and [s for chunk in from_end[2] for s in chunk] == flat
    for less, other in ((0, 0), (behind // 2, behind // 2 - 1), (behind - 1, 0), (None, behind)):
        caught_up = run(less, other)
        assert caught_up[0] == list(range(500, 3_001, 500)), (less, other)  # each batch written at once
        assert [s for chunk in caught_up[2] for s in chunk] == flat


def test_a_consumes_checkpoints_go_in_one_write_and_fail_one_by_one(tmp_path: Path) -> None:
    """Issue 12: the batches of every partition of a consume are written in one `commit_many` (one round trip
    to Redis), each checked on its own: a partition another owner took is dropped while the others are
    written and committed to the group; when the store does not answer, every one is reloaded from the store
    after one pause (`_outage` once, not once per partition)."""
    from monitor.app.daemon import Daemon
    from monitor.errors import DependencyUnavailable
    from monitor.io.state import MemoryStore
    from tests.test_model_view import records_for, settings_for

    settings = settings_for(tmp_path, checkpoint_interval_ms=0)  # every batch is written
    topic = settings.models[0].features.topic
    records = records_for(settings, 3, [], events=3_000)
    batch = {(topic, p): records[(topic, p)][:300] for p in range(3)}

    class Counting(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[list[tuple[str, int]]] = []
            self.down = False

        def commit_many(self, commits: Any) -> Any:
            self.calls.append([(c.topic, c.partition) for c in commits])
            if self.down:
                return [DependencyUnavailable("redis: ConnectionError")] * len(commits)
            return super().commit_many(commits)

    class Consumer(_Watermarks):
        def __init__(self) -> None:
            super().__init__()
            self.committed: list[tuple[str, int, int]] = []

        def commit(self, offsets: Any, asynchronous: bool = True) -> None:
            self.committed += [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    store = Counting()
    daemon = Daemon(settings, store)
    consumer = Consumer()
    daemon.consumer = consumer  # type: ignore[assignment]
    for p in range(3):
        daemon._take(topic, p)
    store.acquire(topic, 1)  # another replica takes partition 1
    daemon._handle_records(batch)
    assert store.calls == [[(topic, 0), (topic, 1), (topic, 2)]]
    ends = {p: batch[(topic, p)][-1].offset + 1 for p in range(3)}
    assert [store.read(topic, p).offset for p in range(3)] == [ends[0], None, ends[2]]
    assert set(daemon.owned) == {(topic, 0), (topic, 2)}
    assert consumer.committed == [(topic, 0, ends[0]), (topic, 2, ends[2])]
    # Redis down: nothing written, one pause, each partition reloaded (and read again from its stored offset).
    store.down = True
    pauses: list[str] = []
    reloaded: list[tuple[str, int]] = []
    daemon._outage = lambda dependency, exc, poll=True: pauses.append(dependency)  # type: ignore[method-assign]
    daemon._reload = lambda tp: reloaded.append(tp)  # type: ignore[method-assign]
    later = {(topic, p): records[(topic, p)][300:600] for p in (0, 2)}
    daemon._handle_records(later)
    assert pauses == ["redis"] and reloaded == [(topic, 0), (topic, 2)]
    assert [store.read(topic, p).offset for p in (0, 2)] == [ends[0], ends[2]]


def test_silence_clocks_restart_when_an_outage_ends_however_it_was_waited_out(tmp_path: Path) -> None:
    """A broker outage longer than `freshness_s` raises no `stream_stopped`, also when the daemon waited it
    out inside one call (a dead-letter write waits up to 30 s for Kafka) and never came to `_check_silence`
    while it lasted: the outage ends (here, with a batch written) and every partition's silence clock
    restarts then. (The CI of issue 12 raised `stream_stopped` for five partitions in this case.) Without an
    outage, a partition as quiet is called silent: the check can fire."""
    import time

    from confluent_kafka import KafkaError

    from monitor.app.daemon import Daemon
    from monitor.io.state import MemoryStore
    from tests.test_model_view import records_for, settings_for

    settings = settings_for(tmp_path, checkpoint_interval_ms=0)
    topic = settings.models[0].features.topic
    freshness = settings.models[0].freshness_s
    assert freshness is not None
    records = records_for(settings, 3, [], events=1_200)

    def started() -> tuple[Daemon, list[tuple[str, int]]]:
        daemon = Daemon(settings, MemoryStore())
        consumer = _Watermarks()
        consumer.high = {p: records[(topic, p)][199].offset + 1 for p in range(3)}  # read to the end
        daemon.consumer = consumer  # type: ignore[assignment]
        daemon._writable = lambda tp: True  # type: ignore[method-assign]
        for p in range(3):
            daemon._take(topic, p)
        daemon._handle_records({(topic, p): records[(topic, p)][:200] for p in range(3)})
        silent: list[tuple[str, int]] = []
        write = daemon._checkpoint

        def checkpoint(tp: Any, owned: Any, next_offset: int, alerts: Any, rejects: Any, outcome: Any = None,
                       blocks: Any = None, recovered: bool = True, reload: bool = True) -> bool:
            if any("silent_s" in b for b in blocks or []):
                silent.append(tp)
            return write(tp, owned, next_offset, alerts, rejects, outcome, blocks, recovered, reload)

        daemon._checkpoint = checkpoint  # type: ignore[method-assign]
        return daemon, silent

    def stalled(daemon: Daemon) -> None:  # no `_check_silence` for longer than freshness_s
        for tp in daemon.owned:
            daemon.last_seen[tp] = time.monotonic() - freshness - 1.0
        daemon._last_silence_check = 0.0

    quiet, silent = started()
    stalled(quiet)
    quiet._check_silence()
    assert sorted(silent) == [(topic, p) for p in range(3)]

    daemon, silent = started()
    daemon._on_kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert daemon.outage == "kafka"
    stalled(daemon)
    daemon._handle_records({(topic, 0): records[(topic, 0)][200:300]})  # the wait ends: a batch is written
    assert daemon.outage is None
    daemon._check_silence()
    assert silent == []


class _Group:
    """A consumer in a group as librdkafka keeps it: `pause` marks a partition until `resume`, across a
    rebalance (measured on Kafka 4 with cooperative-sticky: paused, lost by exceeding max.poll.interval.ms and
    assigned again, a partition delivered nothing until resumed). Its polls run the rebalance callbacks
    queued in `rebalances`, one per poll, as librdkafka serves them inside a poll."""

    def __init__(self) -> None:
        self.assigned: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        self.rebalances: list[Callable[[], None]] = []
        self.offsets: dict[int, int] = {}  # the group's committed offsets

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import TopicPartition
        return [TopicPartition(tp.topic, tp.partition, self.offsets.get(tp.partition, -1001)) for tp in partitions]

    def offsets_for_times(self, partitions: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import KafkaError, KafkaException
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def incremental_unassign(self, partitions: list[Any]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}

    def assignment(self) -> list[Any]:
        from confluent_kafka import TopicPartition
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def pause(self, partitions: list[Any]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[Any]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def poll(self, timeout: float) -> None:
        if self.rebalances:
            self.rebalances.pop(0)()


def test_partitions_lost_while_paused_are_read_again_when_assigned(tmp_path: Path) -> None:
    """The CI of issue 12: a dead-letter write waited out a broker outage for 30 s, past max.poll.interval.ms;
    the outage's pause came next, the group dropped the member inside its polls (every partition lost), and
    when the partitions came back they were still paused in librdkafka: nothing was read again, for minutes.
    Assigned again, a partition is read (resumed), unless its state is lost and the policy halts it."""
    from confluent_kafka import TopicPartition

    from monitor.app.daemon import Daemon
    from monitor.errors import DependencyUnavailable
    from monitor.io.state import MemoryStore
    from tests.test_model_view import settings_for

    settings = settings_for(tmp_path)
    store = MemoryStore()
    daemon = Daemon(settings, store)
    topic = settings.models[0].features.topic
    consumer = _Group()
    daemon.consumer = consumer  # type: ignore[assignment]
    parts = [TopicPartition(topic, p) for p in range(3)]
    daemon._on_assign(consumer, parts)  # type: ignore[arg-type]
    assert consumer.assigned == {(topic, p) for p in range(3)} and consumer.paused == set()
    consumer.rebalances.append(lambda: daemon._on_lost(consumer, parts))  # type: ignore[arg-type]
    daemon._outage("kafka", DependencyUnavailable("kafka: dead-letter topic unwritable"))
    assert consumer.assigned == set() and consumer.paused == {(topic, p) for p in range(3)}
    daemon._on_assign(consumer, parts)  # type: ignore[arg-type]
    assert consumer.paused == set()
    # Partition 1 with a committed offset and no state in the store (Redis lost it), under on_state_lost:
    # halt, is assigned paused and stays so; the others are read.
    daemon._on_lost(consumer, parts)  # type: ignore[arg-type]
    consumer.offsets = {1: 500}
    daemon._on_assign(consumer, parts)  # type: ignore[arg-type]
    assert set(daemon.lost) == {(topic, 1)} and consumer.paused == {(topic, 1)}
