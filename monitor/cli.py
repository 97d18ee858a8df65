"""Command line: parse arguments, load settings, configure logging once, wire objects and start.

Secrets never come from the command line: see monitor.settings (environment and *_FILE variables).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from monitor.errors import MonitorError
from monitor.logs import configure_logging
from monitor.settings import Settings, load_settings

log = structlog.get_logger("monitor.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="model-monitor", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the monitor daemon")
    run.add_argument("--config", required=True, type=Path)

    sim = sub.add_parser("simulate", help="produce example feature and prediction events")
    sim.add_argument("--config", required=True, type=Path)
    sim.add_argument("--model", required=True)
    sim.add_argument("--events", type=int, default=50_000)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--incident", action="append", default=[],
                     help="nan_burst:feature=F,start=N,length=N,rate=R or shift:feature=F,start=N,size=S")
    sim.add_argument("--rate", type=float, default=0.0, help="events per second (0 = as fast as possible)")

    status = sub.add_parser("status", help="show what the monitor knows, per model and feature")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--json", action="store_true")

    topics = sub.add_parser("topics", help="create the input, alerts and dead-letter topics")
    topics.add_argument("--config", required=True, type=Path)
    topics.add_argument("--partitions", type=int, default=3)
    topics.add_argument("--replication-factor", type=int, default=1)

    alerts = sub.add_parser("alerts", help="print alerts from the alerts topic as they arrive")
    alerts.add_argument("--config", required=True, type=Path)
    alerts.add_argument("--from-beginning", action="store_true")
    alerts.add_argument("--max", type=int, default=0, help="stop after this many alerts (0 = never)")
    alerts.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds (0 = never)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except MonitorError as exc:
        print(f"model-monitor: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        handler = {"run": _run, "simulate": _simulate, "status": _status, "topics": _topics, "alerts": _alerts}
        return handler[args.command](settings, args)
    except MonitorError as exc:
        log.error("command.failed", command=args.command, error=str(exc), error_class=type(exc).__name__)
        return 2


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon
    from monitor.http import HealthServer
    from monitor.redis_store import RedisStore
    from monitor.reference import RedisReferenceStore

    store = RedisStore.from_url(settings.redis_url, settings.key_prefix, settings.group_id)
    daemon = Daemon(settings, store, references=RedisReferenceStore(store.client, settings.key_prefix))
    server = HealthServer(settings.http.host, settings.http.port, daemon.metrics.registry,
                          daemon.is_live, daemon.is_ready)
    server.start()
    log.info("http.listening", host=settings.http.host, port=server.port)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal.received", signal=signal.Signals(signum).name)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return daemon.run()
    finally:
        server.stop()


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from monitor.codec import encode_plain, load_schema
    from monitor.simulate import Incident, Simulator

    model = settings.model(args.model)
    if model.predictions is None or model.features.schema_path is None or model.predictions.schema_path is None:
        print("model-monitor: simulate needs a model with .avsc schemas for features and predictions",
              file=sys.stderr)
        return 2
    if model.features.format != "plain" or model.predictions.format != "plain":
        print("model-monitor: simulate writes plain Avro; set format: plain for this model", file=sys.stderr)
        return 2
    f_schema = load_schema(model.features.schema_path)
    p_schema = load_schema(model.predictions.schema_path)
    sim = Simulator(seed=args.seed, incidents=[Incident.parse(text) for text in args.incident])
    producer = Producer(settings.producer_config())
    failed: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err.name())

    sent = 0
    started = time.monotonic()
    for feats, preds in sim.batches(args.events, batch=1000):
        for f, pr in zip(feats, preds, strict=True):
            key = f["event_id"].encode()
            producer.produce(model.features.topic, key=key, value=encode_plain(f_schema, f), on_delivery=report)
            producer.produce(model.predictions.topic, key=key, value=encode_plain(p_schema, pr),
                             on_delivery=report)
            producer.poll(0)
        sent += len(feats)
        if args.rate > 0:
            ahead = sent / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)
    log.info("simulate.done", events=sent, failed=len(failed), incidents=args.incident)
    return 1 if failed else 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.redis_store import RedisStore
    from monitor.status import collect_status, render_status

    store = RedisStore.from_url(settings.redis_url, settings.key_prefix, settings.group_id)
    status = collect_status(settings, store)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        render_status(status)
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.kafka_io import create_topics

    names = [s.topic for m in settings.models for _, s in m.streams()]
    names += [settings.alerts_topic, settings.dead_letter_topic]
    created = create_topics(settings.admin_config(), names, args.partitions, args.replication_factor)
    log.info("topics.ready", created=created, topics=names)
    return 0


def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    """Print each alert as one line: feature, kind, check, statistic, threshold."""
    import uuid

    from confluent_kafka import Consumer

    from monitor.codec import AlertCodec

    codec = AlertCodec()
    consumer = Consumer({**settings.admin_config(), "group.id": f"model-monitor-alerts-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest" if args.from_beginning else "latest",
                         "enable.auto.commit": False})
    consumer.subscribe([settings.alerts_topic])
    seen = 0
    idle_since = time.monotonic()
    try:
        while args.max == 0 or seen < args.max:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or not msg.value():
                if args.timeout and time.monotonic() - idle_since > args.timeout:
                    break
                continue
            idle_since = time.monotonic()
            a = codec.decode(msg.value() or b"")
            seen += 1
            print(f"ALERT {a.kind:<16} {a.check:<13} {a.model}/{a.feature:<18} statistic={a.statistic:.4g} "
                  f"threshold={a.threshold:.4g} severity={a.severity} offset={a.source_topic}"
                  f"[{a.source_partition}]@{a.source_offset}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
