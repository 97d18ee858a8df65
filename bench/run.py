"""`make bench`: throughput against the decode ceiling and a naive baseline, latency, memory, scaling.

Every figure is measured in this run, on the same seeded payloads, and targets are ratios between
figures of the same run (machines here are noisy). Prints a table and writes bench/results.json.
"""

from __future__ import annotations

import gc
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fastavro import parse_schema, schemaless_reader

from monitor.app.pipeline import StreamProcessor, build_processors
from monitor.core.types import RawRecord
from monitor.io.avro import encode_plain
from monitor.settings import load_settings

N_NUMERIC, N_CATEGORICAL = 20, 5
SEED = 2026


def schema_for(n_numeric: int, n_categorical: int) -> dict[str, Any]:
    fields: list[dict[str, Any]] = [{"name": "event_id", "type": "long"}, {"name": "event_time", "type": "long"}]
    fields += [{"name": f"f{i}", "type": "double"} for i in range(n_numeric)]
    fields += [{"name": f"c{i}", "type": "string"} for i in range(n_categorical)]
    return {"type": "record", "name": "Bench", "fields": fields}


def payloads(schema: dict[str, Any], n: int, n_numeric: int, n_categorical: int,
             events_per_s: float = 100.0, n_values: int = 8) -> list[bytes]:
    """`n` seeded events; event times as a stream of `events_per_s` (100: event time runs far faster than the
    clock while the daemon reads them, as in a replay)."""
    rng = np.random.default_rng(SEED)
    parsed = parse_schema(schema)
    nums = rng.normal(0, 1, (n, n_numeric)).round(3)  # ~200 bytes at 20 + 5 fields
    cats = rng.integers(0, n_values, (n, n_categorical))
    out = []
    for i in range(n):
        rec = {"event_id": i, "event_time": 1_767_225_600_000 + int(i * 1000 // events_per_s)}
        rec.update({f"f{j}": float(nums[i, j]) for j in range(n_numeric)})
        rec.update({f"c{j}": f"v{cats[i, j]}" for j in range(n_categorical)})
        out.append(encode_plain(parsed, rec))
    return out


def write_config(tmp: Path, schema: dict[str, Any], extra: dict[str, Any] | None = None,
                 model: dict[str, Any] | None = None) -> Path:
    (tmp / "bench.avsc").write_text(json.dumps(schema))
    cfg: dict[str, Any] = {"models": [{"name": "bench", "id_field": "event_id", "time_field": "event_time",
                                       "freshness_s": None, "features": {"topic": "bench", "schema": "bench.avsc"},
                                       **(model or {})}]}
    cfg.update(extra or {})
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


# -- in-process figures ------------------------------------------------------------------------------


def ceiling(data: list[bytes], schema: dict[str, Any]) -> float:
    parsed = parse_schema(schema)
    t = time.perf_counter()
    for p in data:
        schemaless_reader(io.BytesIO(p), parsed, None)
    return rate(len(data), time.perf_counter() - t)


def naive(data: list[bytes], schema: dict[str, Any]) -> float:
    """The obvious design: per event decode, then per feature river's ADWIN and Page-Hinkley and a dict
    histogram."""
    from river import drift

    parsed = parse_schema(schema)
    names = [f["name"] for f in schema["fields"] if f["type"] == "double"]
    cats = [f["name"] for f in schema["fields"] if f["type"] == "string"]
    adwin = {n: drift.ADWIN() for n in names}
    ph = {n: drift.PageHinkley() for n in names}
    hist: dict[str, dict[Any, int]] = {n: {} for n in names + cats}
    t = time.perf_counter()
    for p in data:
        rec = schemaless_reader(io.BytesIO(p), parsed, None)
        assert isinstance(rec, dict)
        for n in names:
            v = rec[n]
            adwin[n].update(v)
            ph[n].update(v)
            b = round(v, 1)
            hist[n][b] = hist[n].get(b, 0) + 1
        for n in cats:
            hist[n][rec[n]] = hist[n].get(rec[n], 0) + 1
    return rate(len(data), time.perf_counter() - t)


def pipeline(proc: StreamProcessor, data: list[bytes], batch: int = 500, checkpoint: str = "daemon") -> float:
    """The real code path of both stages: stage 1 (decode, limits, sketches, block summaries in Avro), stage 2
    (merge, windows, drift, CUSUM, incidents), and both states serialised for their checkpoints (only the
    fields whose bytes changed, as the daemon writes them), with the in-memory store.

    `checkpoint`: "daemon" as the daemon does near the end of a log (`Daemon._may_defer`; reading a backlog it
    also lets batches that made blocks wait, which this does not): stage 1's state is
    written when a batch made blocks, alerts or rejects, when its oldest unwritten batch is
    `checkpoint_interval_ms` old, and at the end; stage 2's likewise when a batch made alerts, when its oldest
    unwritten batch is that old, and at the end. "batch": every batch of both stages
    written (a live stream read batch by batch; the bytes each stage wrote per event go to
    `written_per_event`). "none": nothing serialised."""
    from monitor.app.models import ModelProcessor
    from monitor.core.state_codec import changed_fields
    from monitor.io.state import MemoryStore

    settings = proc_settings[id(proc)]
    interval = settings.checkpoint_interval_ms / 1000.0
    store = MemoryStore()
    part = proc.new_partition(0)
    models = ModelProcessor(settings, {"bench": proc})
    models.input_partitions = {"bench": 1}
    mpart = models.new_partition(0)
    fence = store.acquire("bench", 0).fence
    mfence = store.acquire("blocks", 0).fence
    stored: int | None = None
    mstored: int | None = None
    block_offset = 0
    records = [RawRecord("bench", 0, i, None, p) for i, p in enumerate(data)]
    written: dict[str, bytes] = {}
    mwritten: dict[str, bytes] = {}
    sizes = [0, 0]
    waiting: list[dict[str, Any]] = []  # blocks of stage-1 batches not written yet
    since = 0.0  # when stage 1's oldest unwritten batch was applied (0: none waits)
    msince = 0.0  # the same for stage 2

    def due(urgent: bool, last: bool) -> bool:
        nonlocal since
        if checkpoint == "none":
            return False
        now = time.perf_counter()
        since = since or now
        return checkpoint == "batch" or urgent or last or now - since >= interval

    t = time.perf_counter()
    for lo in range(0, len(records), batch):
        last = lo + batch >= len(records)
        out = proc.process(part, records[lo:lo + batch])
        waiting += out.blocks
        if not (due(bool(out.alerts or out.rejects or out.blocks), last) or (checkpoint == "none" and waiting)):
            continue
        since = 0.0
        if checkpoint != "none":
            fields = part.to_fields()
            changed, gone = changed_fields(fields, written)
            store.commit("bench", 0, fence, stored, out.next_offset, changed, {}, gone)
            written, stored = fields, out.next_offset
            sizes[0] += sum(len(k) + len(v) for k, v in changed.items()) + sum(map(len, gone))
        if waiting:
            blocks = [RawRecord("blocks", 0, block_offset, b"bench", models.codec.encode(waiting))]
            waiting = []
            block_offset += 1
            mout = models.process(mpart, blocks)
            if checkpoint == "daemon":  # stage 2 waits as stage 1 does: alerts are written at once
                msince = msince or time.perf_counter()
                if not (mout.alerts or last or time.perf_counter() - msince >= interval):
                    continue
        elif not (last and msince):  # the end: what stage 2 applied is written too
            continue
        msince = 0.0
        if checkpoint != "none":
            fields = mpart.to_fields()
            changed, gone = changed_fields(fields, mwritten)
            store.commit("blocks", 0, mfence, mstored, block_offset, changed, {}, gone)
            mwritten, mstored = fields, block_offset
            sizes[1] += sum(len(k) + len(v) for k, v in changed.items()) + sum(map(len, gone))
    seconds = time.perf_counter() - t
    if checkpoint == "batch":
        written_per_event.update({"stage 1": sizes[0] / len(records), "stage 2": sizes[1] / len(records)})
    return rate(len(records), seconds)


written_per_event: dict[str, float] = {}


def labels_checkpoint() -> float:
    """Bytes a labels partition writes in a checkpoint of 500 labels once `max_pending` (50,000) wait."""
    from monitor.core.labels import LabelPartition, LabelRow
    from monitor.core.state_codec import changed_fields
    from monitor.settings import PerformanceSettings

    settings = PerformanceSettings()
    part = LabelPartition("m", "labels", 0, "classifier", settings, None)
    written: dict[str, bytes] = {}
    size = 0
    for lo in range(0, settings.max_pending + 2_000, 500):
        part.apply([LabelRow(f"id-{lo + j}", float(j % 2), 1_767_225_600_000 + lo + j, lo + j) for j in range(500)],
                   {})
        fields = part.to_fields()
        changed, gone = changed_fields(fields, written)
        written = fields
        size = sum(len(k) + len(v) for k, v in changed.items()) + sum(map(len, gone))
    return float(size)


proc_settings: dict[int, Any] = {}  # id(processor) -> its Settings (the model stage is built from them)


def processor(config: Path) -> StreamProcessor:
    settings = load_settings(config, environ={})
    proc = build_processors(settings)["bench"]
    assert isinstance(proc, StreamProcessor)
    proc_settings[id(proc)] = settings
    return proc


def referenced(config: Path, schema: dict[str, Any], data: list[bytes]) -> StreamProcessor:
    """A processor with a reference profiled from the first 20,000 events (with the PCA of the numeric
    fields, and the categories segments are made of)."""
    import io

    from monitor.profile.build import build_profile

    settings = load_settings(config, environ={})
    base = build_processors(settings)["bench"]
    assert isinstance(base, StreamProcessor)
    parsed = parse_schema(schema)
    rows = [schemaless_reader(io.BytesIO(p), parsed, None) for p in data[:20_000]]
    columns = {k: (np.array([r[k] for r in rows]), np.zeros(len(rows), dtype=bool)) for k in rows[0]}
    ref = build_profile("bench", base.base_fields, columns, version="v1", source="bench", sentinels={},
                        time_field="event_time", feature_fields=[f.name for f in base.base_fields])
    proc = build_processors(settings, {"bench": ref})["bench"]
    assert isinstance(proc, StreamProcessor)
    proc_settings[id(proc)] = settings
    return proc


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def rss_growth(proc: StreamProcessor, data: list[bytes], total: int) -> tuple[float, float]:
    """RSS after 1/10 of `total` events and after all of them, the same payloads cycled."""
    part = proc.new_partition(0)
    offset = 0
    at_tenth = 0.0
    while offset < total:
        for lo in range(0, len(data), 500):
            records = [RawRecord("bench", 0, offset + i, None, p) for i, p in enumerate(data[lo:lo + 500])]
            proc.process(part, records)
            part.to_fields()
            offset += len(records)
            if at_tenth == 0.0 and offset >= total // 10:
                gc.collect()
                at_tenth = rss_mb()
            if offset >= total:
                break
    gc.collect()
    return at_tenth, rss_mb()


# -- figures on the real Kafka and Redis -------------------------------------------------------------


def end_to_end(config: Path, data: list[bytes], bootstrap: str, redis_url: str,
               partitions: int = 3, block_ms: int | None = None, processes: int = 1) -> dict[str, float]:
    """Events pre-produced to `partitions` partitions; from the daemon's start to the last input offset and the
    last block both checkpointed. `block_ms`: the slot width (default: the config's, 10 s). `processes`: 1, both
    stages in this process (`run`); 2, stage 1 here and stage 2 in a `run --stage models` process of its own,
    started (and given its partitions) before the clock starts, as a deployment runs it."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from monitor.app.runner import Monitor
    from monitor.io.redis_store import RedisStore

    unique = uuid.uuid4().hex[:8]
    topic = f"bench-{unique}"
    raw = yaml.safe_load(config.read_text())
    raw.update({"kafka": {"bootstrap.servers": bootstrap}, "redis_url": redis_url, "group_id": f"bench-{unique}",
                "key_prefix": f"bench{unique}", "alerts_topic": f"{topic}.alerts", "blocks_topic": f"{topic}.blocks"})
    raw.setdefault("batch", {"max_messages": 2000})
    if block_ms is not None:
        raw["window"] = {"by": "time", "block_ms": block_ms}
    raw["models"][0]["features"]["topic"] = topic
    raw["http"] = {"host": "127.0.0.1", "port": 0}
    config.write_text(yaml.safe_dump(raw))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)] + [NewTopic(t, 3, 1) for t in
                                                                         (f"{topic}.alerts", f"{topic}.blocks")]
                                   ).values():
        fut.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000})
    for i, p in enumerate(data):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=p)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    settings = load_settings(config, environ={})
    store = RedisStore.from_url(redis_url, settings.key_prefix, settings.group_id)
    monitor = Monitor(settings, store, "all" if processes == 1 else "ingest")
    stage2: subprocess.Popen[bytes] | None = None
    if processes == 2:
        log_path = config.with_suffix(".models.log")
        with log_path.open("wb") as out:
            stage2 = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--stage", "models", "--config",
                                       str(config)], stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while b"partitions.assigned" not in log_path.read_bytes():
            if time.monotonic() > deadline or stage2.poll() is not None:
                raise RuntimeError(f"the stage-2 process did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}

    def stored(want: list[tuple[str, int, int]]) -> bool:
        """Each (topic, partition) stored to `end` with its outbox empty: an offset and a count per partition in
        one round trip, light on purpose (the poll shares the process with the daemon it measures)."""
        pipe = store.client.pipeline(transaction=False)
        for t_, p, _end in want:
            keys = store.keys(t_, p)
            pipe.get(keys["offset"])
            pipe.hlen(keys["outbox"])
        replies = pipe.execute()
        return all(int(replies[2 * i] or -1) >= end and replies[2 * i + 1] == 0
                   for i, (_t, _p, end) in enumerate(want))

    def done() -> bool:
        if not stored([(topic, p, ends[p]) for p in range(partitions)]):
            return False
        # Stage 1 is through and its blocks are all in Kafka: now the blocks topic's ends are final.
        block_ends = [probe.get_watermark_offsets(TopicPartition(f"{topic}.blocks", p), timeout=10,
                                                  cached=False)[1] for p in range(3)]
        return stored([(f"{topic}.blocks", p, end) for p, end in enumerate(block_ends) if end])

    def counted() -> float:
        """Events stage 1 has applied so far (the daemon's own counter, read in process)."""
        return sum(s.value for m in monitor.metrics.events.collect() for s in m.samples if s.name.endswith("_total"))

    thread = threading.Thread(target=monitor.run, daemon=True)
    t, cpu = time.perf_counter(), os.times()
    thread.start()
    first: tuple[float, float] | None = None  # when the first batch was counted, and its events
    while not done():
        if first is None and (c := counted()) > 0:
            first = (time.perf_counter(), c)
        time.sleep(0.005 if first is None else 0.05)
    elapsed = time.perf_counter() - t
    if first is None:  # everything in one batch
        first = (t + elapsed, 0.0)
    cpu_s = sum(os.times()[:2]) - sum(cpu[:2])  # this process: both stages, librdkafka's threads, the poll
    probe.close()
    monitor.stop()
    thread.join(30)
    if stage2 is not None:
        stage2.send_signal(signal.SIGTERM)
        stage2.wait(30)
    keys = list(store.client.scan_iter(match=f"*bench{unique}*"))
    redis_bytes = sum(store.client.memory_usage(k) or 0 for k in keys)
    features = N_NUMERIC + N_CATEGORICAL
    # Each run leaves the broker and Redis as it found them: the runs take turns, and a broker holding every
    # earlier run's topics (hundreds of partitions by the last live runs) would tax the later runs, and the
    # 48-partition ones most.
    for key in keys:
        store.client.delete(key)
    topics = [topic, f"{topic}.alerts", f"{topic}.blocks"]
    for fut in admin.delete_topics(topics, operation_timeout=30).values():
        fut.result(60)
    # Sustained: from the first batch counted to the end, without that batch's events (the start -- group join,
    # assignment, loading state -- is `start_s`, outside it).
    return {"events_per_s": rate(len(data), elapsed), "seconds": elapsed, "partitions": partitions,
            "start_s": first[0] - t, "sustained_events_per_s": rate(len(data) - int(first[1]), t + elapsed - first[0]),
            "cpu_seconds": cpu_s,
            "redis_bytes_per_feature": redis_bytes / (partitions * features)}


def alert_latency(config: Path, schema: dict[str, Any], bootstrap: str, redis_url: str,
                  rate_per_s: float, seconds: float = 30.0) -> dict[str, float]:
    """Time from producing the event that closes an incident's window to the alert being readable, at
    `rate_per_s`, with event times from the producer's clock (as a live stream has them).

    Every 2.5 s a burst of 150 ms shifts f0 by 3 standard deviations: the model stage's CUSUM opens an incident
    when the 0.5 s slot holding the burst closes, and it resolves before the next burst. The OPEN alert's window
    ends at an event time; latency = alert received - the send time of the last event with that time. The
    load generator sends pre-encoded payloads (only the id and time are encoded per event), so it costs
    little next to the daemon it measures.
    """
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from monitor.io.avro import AlertCodec

    unique = uuid.uuid4().hex[:8]
    topic = f"lat-{unique}"
    raw = yaml.safe_load(config.read_text())
    raw.update({"kafka": {"bootstrap.servers": bootstrap}, "redis_url": redis_url, "group_id": f"lat-{unique}",
                "key_prefix": f"lat{unique}", "alerts_topic": f"{topic}.alerts", "start_from": "latest",
                "blocks_topic": f"{topic}.blocks", "batch": {"max_messages": 500, "timeout_s": 0.05},
                "window": {"by": "time", "block_ms": 500, "blocks": 10, "resolve_windows": 3},
                "defaults": {"warmup": 2000}, "http": {"host": "127.0.0.1", "port": 0}})
    raw["models"][0]["features"]["topic"] = topic
    config.write_text(yaml.safe_dump(raw))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, 3, 1) for t in (topic, f"{topic}.alerts", f"{topic}.blocks")]
                                   ).values():
        fut.result(30)
    # The daemon in a process of its own, as deployed: a thread here would share the GIL with the producer.
    log_path = config.with_suffix(".log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config)],
                                stdout=log_file, stderr=log_file, env=env)
    while log_path.read_bytes().count(b"partitions.assigned") < 2:  # both stages
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-reader-{unique}",
                       "auto.offset.reset": "earliest"})
    reader.subscribe([f"{topic}.alerts"])
    # Avro writes a record's fields one after the other: the id and time, then the rest, pre-encoded.
    head_schema = parse_schema({"type": "record", "name": "Head", "fields": schema["fields"][:2]})
    tail_schema = parse_schema({"type": "record", "name": "Tail", "fields": schema["fields"][2:]})
    rng = np.random.default_rng(SEED)
    pool = 5000
    normal, shifted = [], []
    for _ in range(pool):
        rec: dict[str, Any] = {f"f{j}": float(rng.normal()) for j in range(N_NUMERIC)}
        rec.update({f"c{j}": "v1" for j in range(N_CATEGORICAL)})
        normal.append(encode_plain(tail_schema, rec))
        shifted.append(encode_plain(tail_schema, {**rec, "f0": rec["f0"] + 3.0}))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    sent_at: dict[int, float] = {}  # event time (ms) -> when its last event was sent
    latencies: list[float] = []
    codec = AlertCodec()

    def record(alert: Any) -> None:
        last = alert.window.last_event_time
        if alert.status == "OPEN" and alert.check == "cusum" and last in sent_at:
            latencies.append(time.perf_counter() - sent_at[last])

    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        elapsed = time.perf_counter() - start
        burst = elapsed > 5.0 and elapsed % 2.5 < 0.15  # the first 5 s: the warm-up's mean and std
        now_ms = int(time.time() * 1000)
        value = encode_plain(head_schema, {"event_id": i, "event_time": now_ms}) + \
            (shifted if burst else normal)[i % pool]
        producer.produce(topic, key=str(i).encode(), value=value)
        sent_at[now_ms] = time.perf_counter()
        i += 1
        if i % 100 == 0:
            producer.poll(0)
            msg = reader.poll(0)
            while msg is not None:
                if msg.error() is None:
                    record(codec.decode(msg.value() or b""))
                msg = reader.poll(0)
        ahead = i / rate_per_s - (time.perf_counter() - start)
        if ahead > 0.001:
            time.sleep(ahead)
    producer.flush(10)
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline:
        msg = reader.poll(0.2)
        if msg is not None and msg.error() is None:
            record(codec.decode(msg.value() or b""))
    reader.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    arr = np.array(latencies) * 1000
    return {"rate_per_s": rate_per_s, "sent_per_s": i / seconds, "alerts": len(arr),
            "p50_ms": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
            "p99_ms": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
            "each_ms": [round(float(x), 1) for x in arr]}


def main() -> int:
    quick = "--quick" in sys.argv
    n = 20_000 if quick else 100_000
    schema = schema_for(N_NUMERIC, N_CATEGORICAL)
    data = payloads(schema, n, N_NUMERIC, N_CATEGORICAL)
    results: dict[str, Any] = {"events": n, "payload_bytes": round(float(np.mean([len(p) for p in data])), 1)}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        proc = processor(write_config(tmp, schema))
        # Compiled code (numba) is compiled or loaded from its cache once per process, as the daemon does at
        # start: a warm-up on a separate processor keeps that out of the throughput.
        pipeline(processor(write_config(tmp, schema)), data[:20_000])
        # Each in-process figure is the median of five runs, the five kinds of run taking turns, in an order
        # that rotates from round to round (one run lasts a fraction of a second: a busy moment of the machine,
        # or the garbage the run before left, would otherwise decide a ratio).
        kinds = ["ceiling", "naive", "daemon", "batch", "none"]
        runs: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(1 if quick else 5):
            for kind in kinds[r:] + kinds[:r]:
                gc.collect()
                if kind == "ceiling":
                    runs[kind].append(ceiling(data, schema))
                elif kind == "naive":
                    runs[kind].append(naive(data[: n // 5], schema))
                else:
                    runs[kind].append(pipeline(processor(write_config(tmp, schema)), data, checkpoint=kind))
        mid = {k: float(np.median(v)) for k, v in runs.items()}
        results["ceiling_events_per_s"], results["naive_events_per_s"] = mid["ceiling"], mid["naive"]
        results["pipeline_events_per_s"] = mid["daemon"]
        results["pipeline_checkpoint_every_batch_events_per_s"] = mid["batch"]
        results["pipeline_without_checkpoint_events_per_s"] = mid["none"]
        results["in_process_runs"] = {k: [round(x) for x in v] for k, v in runs.items()}
        results["redis_bytes_written_per_event"] = dict(written_per_event)
        # Issue 15: what segments (2 fields of 10 values each: 22 views beside the stream's) and the
        # multivariate check cost, against the same pipeline with the same reference, on the same events.
        seg_data = payloads(schema, n, N_NUMERIC, N_CATEGORICAL, n_values=10)
        variants = {"reference": {}, "segments": {"segments": ["c0", "c1"], "max_segments": 10},
                    "multivariate": {"multivariate": {"enabled": True}}}
        costs: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        (tmp / "variant-warm").mkdir()  # compiled code for a pipeline with a reference: outside the figures
        pipeline(referenced(write_config(tmp / "variant-warm", schema, model=variants["segments"]), schema, seg_data),
                 seg_data[:20_000])
        for r in range(1 if quick else 3):
            for kind in names[r % 3:] + names[:r % 3]:
                gc.collect()
                folder = tmp / f"variant-{kind}-{r}"
                folder.mkdir()
                costs[kind].append(pipeline(referenced(write_config(folder, schema, model=variants[kind]), schema,
                                                       seg_data), seg_data))
        mid_costs = {k: float(np.median(v)) for k, v in costs.items()}
        results["variants_events_per_s"] = mid_costs
        results["variants_runs"] = {k: [round(x) for x in v] for k, v in costs.items()}
        results["labels_checkpoint_bytes_at_max_pending"] = labels_checkpoint()
        scaling = {}
        for width in (20, 200, 1000):
            s = schema_for(width, 0)
            d = payloads(s, max(2_000, 200_000 // width), width, 0)
            folder = tmp / f"w{width}"
            folder.mkdir()
            eps = pipeline(processor(write_config(folder, s)), d)
            scaling[str(width)] = 1e9 / (eps * width)  # ns per feature-value
        results["ns_per_feature_value"] = scaling
        total = 200_000 if quick else 10_000_000
        results["rss_mb_at_tenth"], results["rss_mb_at_end"] = rss_growth(proc, data, total)
        results["rss_events"] = total
        bootstrap, redis_url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
        if bootstrap and redis_url:
            # Each figure is the median of five runs alternating 3 and 48 partitions: one run lasts seconds, and
            # a busy moment of the machine would otherwise decide the ratio. Two streams: a replay (event time
            # 100 events/s, so it runs ~300 times faster than the clock and a 10 s slot of a partition holds
            # 1,000 / P events: the most blocks per event) and a live stream (event time at the rate the
            # daemon sustains, from the replay's 3-partition median; 0.5 s slots as in the latency run).
            def alternate(stream: list[bytes], tag: str, block_ms: int | None, two: bool = False
                          ) -> dict[str, list[dict[str, float]]]:
                """Runs keyed "3", "48" (both stages in one process) and, with `two`, "3x2" (3 partitions, each
                stage in its own process), taking turns."""
                kinds = [("3", 3, 1), ("48", 48, 1)] + ([("3x2", 3, 2)] if two else [])
                runs: dict[str, list[dict[str, float]]] = {key: [] for key, _, _ in kinds}
                for k in range(1 if quick else 5):
                    for key, parts, procs in kinds:
                        folder = tmp / f"e2e-{tag}{key}-{k}"
                        folder.mkdir()
                        runs[key].append(end_to_end(write_config(folder, schema), stream, bootstrap, redis_url,
                                                    partitions=parts, block_ms=block_ms, processes=procs))
                return runs

            def median(runs: list[dict[str, float]]) -> dict[str, float]:
                return sorted(runs, key=lambda x: x["events_per_s"])[len(runs) // 2]

            replay = alternate(data, "replay", None, two=True)
            results["end_to_end"], results["end_to_end_48"] = median(replay["3"]), median(replay["48"])
            results["end_to_end_two_processes"] = median(replay["3x2"])
            live_rate = round(results["end_to_end"]["events_per_s"])
            live = alternate(payloads(schema, n, N_NUMERIC, N_CATEGORICAL, events_per_s=live_rate), "live", 500)
            results["end_to_end_live"], results["end_to_end_live_48"] = median(live["3"]), median(live["48"])
            results["end_to_end_live"]["stream_events_per_s"] = live_rate
            results["end_to_end_runs"] = {f"{tag} {p}": [round(x["events_per_s"]) for x in r]
                                          for tag, runs in (("replay", replay), ("live", live))
                                          for p, r in runs.items()}
            (tmp / "lat").mkdir()
            results["alert_latency"] = alert_latency(write_config(tmp / "lat", schema), schema, bootstrap, redis_url,
                                                     results["end_to_end"]["events_per_s"] / 2)
    c = results["ceiling_events_per_s"]
    ratios = {
        "pipeline / ceiling (target >= 1.0)": results["pipeline_events_per_s"] / c,
        "pipeline, a checkpoint every batch / ceiling": results["pipeline_checkpoint_every_batch_events_per_s"] / c,
        "pipeline / naive (target >= 4)": results["pipeline_events_per_s"] / results["naive_events_per_s"],
        "cost per feature-value, 1000 vs 20 features (target <= 1.2)":
            results["ns_per_feature_value"]["1000"] / results["ns_per_feature_value"]["20"],
        "RSS growth, end vs tenth (target <= 1.05)": results["rss_mb_at_end"] / results["rss_mb_at_tenth"],
        "state bytes written per event, both stages, batch 500, 25 features (target <= 24)":
            sum(results["redis_bytes_written_per_event"].values()),
        "labels partition checkpoint KiB at max_pending (target <= 64)":
            results["labels_checkpoint_bytes_at_max_pending"] / 1024,
    }
    v = results["variants_events_per_s"]
    ratios["segments on 2 fields x 10 values / the same pipeline without"] = v["segments"] / v["reference"]
    ratios["the multivariate check on / off"] = v["multivariate"] / v["reference"]
    if "end_to_end" in results:
        ratios["end-to-end daemon, one process / ceiling (target >= 0.6)"] = results["end_to_end"]["events_per_s"] / c
        ratios["end-to-end daemon, a process per stage / ceiling (target >= 0.6)"] = (
            results["end_to_end_two_processes"]["events_per_s"] / c)
        ratios["end-to-end, one process, sustained (after the first batch) / ceiling"] = (
            results["end_to_end"]["sustained_events_per_s"] / c)
        ratios["Redis bytes per feature (target <= 16384)"] = results["end_to_end"]["redis_bytes_per_feature"]
        ratios["end-to-end at 48 partitions / at 3, live stream (target >= 0.8)"] = (
            results["end_to_end_live_48"]["events_per_s"] / results["end_to_end_live"]["events_per_s"])
        ratios["end-to-end at 48 partitions / at 3, replay (most blocks per event)"] = (
            results["end_to_end_48"]["events_per_s"] / results["end_to_end"]["events_per_s"])
        ratios["alert latency p50 ms at half load"] = results["alert_latency"]["p50_ms"]
        ratios["alert latency p99 ms at half load (target <= 250)"] = results["alert_latency"]["p99_ms"]
    results["ratios"] = ratios
    Path(__file__).with_name("results.json").write_text(json.dumps(results, indent=2))
    print(f"{'figure':<62} {'value':>14}")
    for key in ("ceiling_events_per_s", "naive_events_per_s", "pipeline_events_per_s",
                "pipeline_checkpoint_every_batch_events_per_s", "pipeline_without_checkpoint_events_per_s"):
        print(f"{key:<62} {results[key]:>14,.0f}")
    for kind, each in results["in_process_runs"].items():
        print(f"{'  each run, ' + kind + ' (median above)':<62} {each}")
    for kind, eps in results["variants_events_per_s"].items():
        print(f"{'pipeline with a reference, ' + kind:<62} {eps:>14,.0f}")
    for width, ns in results["ns_per_feature_value"].items():
        print(f"{'ns per feature-value at ' + width + ' features':<62} {ns:>14,.0f}")
    print(f"{'RSS MB after ' + str(results['rss_events'] // 10) + ' / ' + str(results['rss_events']) + ' events':<62} "
          f"{results['rss_mb_at_tenth']:>6.0f} / {results['rss_mb_at_end']:<6.0f}")
    if "end_to_end" in results:
        for tag, key in (("replay", "end_to_end"), ("live", "end_to_end_live")):
            for parts, suffix in (("3", ""), ("48", "_48")) + ((("3x2", "_two_processes"),) if tag == "replay" else ()):
                label = f"end-to-end events/s (Kafka + Redis), {tag}, {parts} partitions"
                print(f"{label:<62} {results[key + suffix]['events_per_s']:>14,.0f}")
                print(f"{'  each run (median above)':<62} {results['end_to_end_runs'][f'{tag} {parts}']}")
        print(f"{'alert latency events (OPEN incidents measured)':<62} {results['alert_latency']['alerts']:>14,.0f}")
    for key, value in ratios.items():
        print(f"{key:<62} {value:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
