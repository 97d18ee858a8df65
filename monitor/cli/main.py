"""Command line: parse arguments, load settings, configure logging once, wire objects and start.

Secrets never come from the command line: see monitor.settings (environment and *_FILE variables).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from monitor.errors import ConfigError, MonitorError
from monitor.ops.logs import configure_logging
from monitor.settings import Settings, load_settings

log = structlog.get_logger("monitor.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="model-monitor", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the monitor daemon")
    run.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    run.add_argument("--stage", choices=["all", "ingest", "models"], default="all",
                     help="which stage this process runs: ingest (stage 1: input topics -> block summaries), "
                          "models (stage 2: blocks topic -> one incident per problem), or all (default)")

    sim = sub.add_parser("simulate", help="produce example feature and prediction events")
    sim.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    sim.add_argument("--model", required=True, help="the model's name in the config")
    sim.add_argument("--events", type=int, default=50_000, help="how many events to produce (default 50,000)")
    sim.add_argument("--seed", type=int, default=7, help="random seed: the same seed gives the same events")
    sim.add_argument("--incident", action="append", default=[],
                     help="nan_burst:feature=F,start=N,length=N,rate=R or shift:feature=F,start=N,size=S")
    sim.add_argument("--rate", type=float, default=0.0, help="events per second (0 = as fast as possible)")
    sim.add_argument("--label-delay", type=int, default=1000, help="labels arrive this many events late")
    sim.add_argument("--label-missing", type=float, default=0.0, help="share of labels that never arrive")
    sim.add_argument("--out", type=Path, help="write the events to a CSV or Parquet file (reference data) "
                                               "instead of Kafka; prediction fields are included")

    ref = sub.add_parser("reference", help="build and manage reference profiles (the metadata store)")
    ref_sub = ref.add_subparsers(dest="action", required=True)
    build = ref_sub.add_parser("build", help="profile training/validation data (CSV, Parquet, Avro file)")
    build.add_argument("--input", required=True, type=Path,
                       help="the data to profile: a .csv, .parquet or Avro container (.avro) file")
    build.add_argument("--version", help="default: the next v<N>")
    build.add_argument("--activate", action="store_true", help="make it active (default if none is)")
    build.add_argument("--season", choices=["hour_of_day", "day_of_week", "hour_of_week"],
                       help="also profile each season bucket of the data by the model's time field (UTC): windows "
                       "are then compared with their own season, detectors standardised by it")
    build.add_argument("--season-min-rows", type=int, default=500, metavar="N",
                       help="a season bucket with fewer usable values uses the overall profile (default 500)")
    ref_sub.add_parser("list", help="versions, the active one marked")
    show = ref_sub.add_parser("show", help="a profile as JSON")
    show.add_argument("--version", help="default: the active one")
    act = ref_sub.add_parser("activate", help="point the daemon at a version")
    act.add_argument("--version", required=True, help="the stored version to make active, e.g. v2")
    exp = ref_sub.add_parser("export", help="write a profile to a JSON file")
    exp.add_argument("--version", help="default: the active one")
    exp.add_argument("--out", required=True, type=Path, help="the JSON file to write")
    imp = ref_sub.add_parser("import", help="store a profile from a JSON file")
    imp.add_argument("--file", required=True, type=Path, help="a JSON profile written by `reference export`")
    imp.add_argument("--version", help="store under this version instead of the file's")
    imp.add_argument("--activate", action="store_true", help="make the imported version active")
    for sp in (build, show, act, exp, imp, ref_sub.choices["list"]):
        sp.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
        sp.add_argument("--model", required=True, help="the model's name in the config")

    report = sub.add_parser("report", help="write a self-contained HTML report of a model")
    report.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    report.add_argument("--model", required=True, help="the model's name in the config")
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file to write "
                        "(default report.html)")
    report.add_argument("--no-alerts", action="store_true", help="do not read the alerts topic")

    bt = sub.add_parser("backtest", help="replay retained history (a file or the model's topics) through the "
                        "pipeline in memory, with injected incidents; report alert rates and detection delays")
    bt.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    bt.add_argument("--model", required=True, help="the model's name in the config")
    src = bt.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, help="a .csv, .parquet or Avro container (.avro) file of events (the "
                     "features' fields, and the predictions' to replay them too)")
    src.add_argument("--from-topics", action="store_true", help="read the model's feature (and prediction) "
                     "topics: retained records from --since to --until, decoded as the daemon does")
    bt.add_argument("--since", help="with --from-topics: ISO time or ms since the epoch (default: the log start)")
    bt.add_argument("--until", help="with --from-topics: ISO time or ms since the epoch (default: the log end)")
    bt.add_argument("--start-offset", type=int, help="with --from-topics: the first offset to read in every "
                    "partition of the features topic (default: the log start)")
    bt.add_argument("--end-offset", type=int, help="with --from-topics: stop before this offset in every "
                    "partition of the features topic (default: the log end)")
    bt.add_argument("--max-events", type=int, help="replay at most this many events")
    bt.add_argument("--inject", action="append", default=[], metavar="KIND:feature=F,start=N,...",
                    help="an incident to inject; repeatable. Kinds: " + "; ".join(
                        f"{k}: {v}" for k, v in {
                            "shift": "size= std", "scale": "factor=", "nan_burst": "rate=", "nulls": "rate=",
                            "stuck": "value=", "new_category": "rate=, value=", "score_collapse": "factor="}.items())
                    + "; all take start= (event position) and length=")
    bt.add_argument("--partitions", type=int, default=1, help="spread a file's events over N input partitions by "
                    "id (default 1)")
    bt.add_argument("--seed", type=int, default=0, help="seed of the injections' random choices (default 0)")
    ref_src = bt.add_mutually_exclusive_group()
    ref_src.add_argument("--reference", type=Path, help="a JSON profile (`reference export`) instead of the "
                         "stored active one")
    ref_src.add_argument("--reference-version", help="a stored reference version instead of the active one")
    bt.add_argument("--out", type=Path, default=Path("backtest"), help="folder for report.json and report.html "
                    "(default ./backtest)")

    contract = sub.add_parser("contract", help="data contracts")
    contract_sub = contract.add_subparsers(dest="action", required=True)
    infer = contract_sub.add_parser("infer", help="write a YAML contract inferred from the active reference")
    infer.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    infer.add_argument("--model", required=True, help="the model's name in the config")
    infer.add_argument("--version", help="reference version (default: the active one)")
    infer.add_argument("--out", type=Path, help="default: standard output")

    status = sub.add_parser("status", help="show what the monitor knows, per model and feature")
    status.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    status.add_argument("--json", action="store_true", help="print JSON instead of the table")

    topics = sub.add_parser("topics", help="create the input, alerts, dead-letter and blocks topics")
    topics.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    topics.add_argument("--partitions", type=int, default=3, help="partitions of each topic created "
                        "(default 3; existing topics are left as they are)")
    topics.add_argument("--replication-factor", type=int, default=-1, help="replicas of each topic created "
                        "(default -1: the brokers' default.replication.factor)")

    alerts = sub.add_parser("alerts", help="print alerts from the alerts topic as they arrive")
    alerts.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
    alerts.add_argument("--from-beginning", action="store_true", help="print the alerts already on the topic too")
    alerts.add_argument("--max", type=int, default=0, help="stop after this many alerts (0 = never)")
    alerts.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds (0 = never)")

    notify = sub.add_parser("notify", help="forward the alerts topic to Alertmanager and webhooks (the config's "
                            "notify: section), each alert once per receiver")
    notify.add_argument("--config", required=True, type=Path, help="the YAML config (MONITOR_* variables override it)")
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
        handler = {"run": _run, "simulate": _simulate, "status": _status, "topics": _topics, "alerts": _alerts,
                   "reference": _reference, "contract": _contract, "report": _report,
                   "backtest": _backtest, "notify": _notify}
        return handler[args.command](settings, args)
    except MonitorError as exc:
        log.error("command.failed", command=args.command, error=str(exc), error_class=type(exc).__name__)
        return 2


def _serve_and_run(settings: Settings, target: Any, registry: Any) -> int:
    """Serve `target`'s /metrics, /healthz, /readyz while it runs; stop on SIGTERM or SIGINT."""
    server = _serve(settings, target, registry)
    if server is None:
        return 2
    try:
        return int(target.run())
    finally:
        server.stop()


def _serve(settings: Settings, target: Any, registry: Any) -> Any:
    """/metrics, /healthz, /readyz (and the status page) of `target`; None when the port is taken."""
    from monitor.ops.http import HealthServer

    try:
        server = HealthServer(settings.http.host, settings.http.port, registry, target.is_live, target.is_ready,
                              getattr(target, "status_page", None))
    except OSError as exc:
        log.error("http.bind_failed", host=settings.http.host, port=settings.http.port, error=exc.strerror)
        print(f"model-monitor: cannot listen on {settings.http.host}:{settings.http.port}: {exc.strerror} "
              f"(set http.port or MONITOR_HTTP_PORT; 0 picks a free port)", file=sys.stderr)
        return None
    server.start()
    log.info("http.listening", host=settings.http.host, port=server.port)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal.received", signal=signal.Signals(signum).name)
        target.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return server


def _notify(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.app.notify import Notifier
    from monitor.io.notify_store import RedisNotifyStore
    from monitor.io.redis_client import connect

    if settings.notify is None:
        print("model-monitor: notify needs a notify: section in the config (alertmanager and/or webhooks)",
              file=sys.stderr)
        return 2
    notifier = Notifier(settings, RedisNotifyStore(connect(settings.redis_url, wait_s=60), settings.key_prefix,
                                                   settings.notify_group()))
    return _serve_and_run(settings, notifier, notifier.metrics.registry)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.app.runner import Monitor
    from monitor.io.history import DriftHistory
    from monitor.io.join import RedisJoinStore
    from monitor.io.notify_store import RedisNotifyStore
    from monitor.io.redis_store import RedisStore
    from monitor.io.references import RedisReferenceStore

    # A Redis Cluster's client reads the slot map when it is made: a cluster still starting gets a minute.
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix, settings.group_id, wait_s=60)
    monitor = Monitor(settings, store, args.stage,
                      references=RedisReferenceStore(store.client, settings.key_prefix),
                      joins=RedisJoinStore(store.client, settings.key_prefix, settings.group_id),
                      history=DriftHistory(store.client, settings.key_prefix, settings.group_id),
                      notify_store=RedisNotifyStore(store.client, settings.key_prefix, settings.notify_group())
                      if settings.notify else None)
    return _serve_and_run(settings, monitor, monitor.metrics.registry)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from monitor.cli.simulate import Incident, LabelFeed, Simulator, without_field
    from monitor.io.avro import encode_plain, load_schema

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
    if args.out is not None:
        return _simulate_to_file(sim, args.events, args.out)
    schemas = {}  # dropped fields -> the schema the producer writes with
    producer = Producer(settings.producer_config())
    labels_topic = model.labels.topic if model.labels is not None else None
    l_schema = load_schema(model.labels.schema_path) if model.labels and model.labels.schema_path else None
    feed = LabelFeed(delay=args.label_delay, missing=args.label_missing, seed=args.seed)
    failed: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err.name())

    f_schema_names = [fld["name"] for fld in f_schema["fields"]]
    sent = 0
    started = time.monotonic()
    for feats, preds in sim.batches(args.events, batch=1000):
        for f, pr in zip(feats, preds, strict=True):
            key = f["event_id"].encode()
            dropped = frozenset(n for n in f_schema_names if n not in f)
            if dropped not in schemas:
                writer = f_schema
                for name in dropped:
                    writer = without_field(writer, name)
                schemas[dropped] = writer
            producer.produce(model.features.topic, key=key, value=encode_plain(schemas[dropped], f),
                             on_delivery=report)
            producer.produce(model.predictions.topic, key=key, value=encode_plain(p_schema, pr),
                             on_delivery=report)
            if labels_topic is not None and l_schema is not None:
                for label in feed.push(pr):
                    label = {"event_id": label["event_id"], model.label_field: label["churned"],
                             "label_time": label["label_time"]}
                    producer.produce(labels_topic, key=label["event_id"].encode(),
                                     value=encode_plain(l_schema, label), on_delivery=report)
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
    from monitor.io.redis_store import RedisStore
    from monitor.ops.status import collect_status, render_status

    store = RedisStore.from_url(settings.redis_url, settings.key_prefix, settings.group_id)
    status = collect_status(settings, store)
    _add_budgets(settings, store, status)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        render_status(status)
    return 0


def _add_budgets(settings: Settings, store: Any, status: dict[str, Any]) -> None:
    """Each model's false-alarm budget and the thresholds it derives with the active reference."""
    from monitor.app.pipeline import model_budget
    from monitor.io.references import RedisReferenceStore

    refs = RedisReferenceStore(store.client, settings.key_prefix)
    for model in settings.models:
        if model.alerts.false_alarms_per_day is None:
            continue
        version = refs.active_version(model.name)
        budget = model_budget(settings, model, refs.get(model.name, version) if version else None)
        status["models"][model.name]["budget"] = budget.summary() if budget is not None else {
            "false_alarms_per_day": model.alerts.false_alarms_per_day,
            "derived": "no: no active reference with an event rate, or window.by is not 'time'"}


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.io.kafka import create_topics

    names = [s.topic for m in settings.models for _, s in m.streams()]
    names += [settings.alerts_topic, settings.dead_letter_topic]
    if settings.model_view.enabled:
        names.append(settings.blocks_topic)
    created = create_topics(settings.admin_config(), names, args.partitions, args.replication_factor)
    log.info("topics.ready", created=created, topics=names)
    return 0


def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    """Print each alert as one line: feature, kind, check, statistic, threshold."""
    import uuid

    from confluent_kafka import Consumer

    from monitor.io.avro import AlertCodec

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
            if a.source_partition < 0:  # a model-view incident: every partition, its checks as evidence
                where = (f"checks={a.evidence.get('checks', a.check)} partitions={a.evidence.get('partitions', '')}"
                         + (f" features={a.evidence['features']}" if "features" in a.evidence else ""))
            else:
                where = f"at={a.source_topic}[{a.source_partition}]@{a.source_offset}"
            if a.segment:
                where += f" segment={a.segment}"
            print(f"{a.status:<8} {a.kind:<16} {a.check:<15} {a.model}/{a.feature:<18} "
                  f"statistic={a.statistic:.4g} threshold={a.threshold:.4g} severity={a.severity} {where}",
                  flush=True)
            print(f"         {a.message}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def _simulate_to_file(sim: Any, events: int, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for feats, preds in sim.batches(events, batch=10_000):
        rows += [{**f, **{k: v for k, v in p.items() if k not in f}} for f, p in zip(feats, preds, strict=True)]
    table = pa.Table.from_pylist(rows)
    if out.suffix.lower() in (".parquet", ".pq"):
        pq.write_table(table, out)
    else:
        pacsv.write_csv(table, out)
    log.info("simulate.written", events=len(rows), path=str(out))
    return 0


def _reference_store(settings: Settings) -> Any:
    from monitor.io.redis_client import connect
    from monitor.io.references import RedisReferenceStore

    client = connect(settings.redis_url, timeout=10)
    return RedisReferenceStore(client, settings.key_prefix)


def _model_specs(settings: Settings, model_name: str, streams: tuple[str, ...] = ("features", "predictions")
                 ) -> list[Any]:
    from monitor.core.schema import infer_fields
    from monitor.io.avro import load_schema

    model = settings.model(model_name)
    skip = {f for f in (model.id_field, model.time_field, model.version_field) if f}
    specs = []
    for kind, stream in model.streams():
        if kind in streams and stream.schema_path is not None:
            specs += infer_fields(load_schema(stream.schema_path), skip=skip, monitor=stream.monitor,
                                  exclude=stream.exclude, categorical=stream.categorical)
    return specs


def _backtest(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.app.backtest import read_rows, run, topic_rows
    from monitor.core.profiles import ReferenceProfile
    from monitor.ops.report import render_backtest

    model = settings.model(args.model)
    if args.max_events is not None and args.max_events < 1:
        raise ConfigError("--max-events must be at least 1")
    if args.partitions < 1:
        raise ConfigError("--partitions must be at least 1")
    if args.input is not None and any(v is not None for v in (args.since, args.until, args.start_offset,
                                                               args.end_offset)):
        raise ConfigError("--since, --until, --start-offset and --end-offset read the topics: use --from-topics")
    if args.reference is not None:
        try:
            reference: ReferenceProfile | None = ReferenceProfile.from_json(args.reference.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--reference {args.reference}: not a profile written by `reference export` "
                              f"({exc})") from exc
    else:
        store = _reference_store(settings)
        version = args.reference_version or store.active_version(model.name)
        reference = store.get(model.name, version) if version else None
        if reference is None:
            log.warning("backtest.no_reference", model=model.name,
                        effect="no drift checks: build one with `reference build` or give --reference")
    started = time.monotonic()
    if args.input is not None:
        rows = read_rows(args.input)[: args.max_events]
        source, bad = args.input.name, 0
    else:
        rows, bad, source = topic_rows(settings, model.name, _when(args.since), _when(args.until), args.max_events,
                                       args.start_offset, args.end_offset)
    report = run(settings, model.name, rows, reference, args.inject, partitions=args.partitions, seed=args.seed,
                 source=source)
    report["undecodable"] = bad
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (args.out / "report.html").write_text(render_backtest(report))
    summary = report["summary"]
    log.info("backtest.done", model=model.name, events=report["events"], detected=summary["detected"],
             injected=summary["injected"], clean_alerts=report["clean"]["alerts"],
             clean_alerts_per_day=report["clean"]["per_day"], seconds=round(time.monotonic() - started, 1),
             out=str(args.out))
    print(f"{summary['detected']} of {summary['injected']} injected incidents detected; "
          f"{report['clean']['alerts']} alerts on the clean part ({report['clean']['per_day']} a day); "
          f"{args.out / 'report.html'}")
    return 0


def _when(text: str | None) -> int | None:
    """An ISO time (UTC unless it says) or ms since the epoch."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not an ISO time or ms since the epoch") from exc
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _season_summary(profile: Any) -> dict[str, Any]:
    """What `reference build` says of a seasonal profile: the season, the buckets with their own profile per
    field (the others use the overall one), and its share of the profile's bytes."""
    seasons = profile.seasons
    if not seasons:
        return {}
    from monitor.core.seasons import SEASONS

    own = {name: len(b) for name, b in seasons["fields"].items()}
    return {"season": seasons["by"], "season_buckets": SEASONS[seasons["by"]], "season_min_rows": seasons["min_rows"],
            "season_buckets_profiled": own, "season_bytes": len(json.dumps(seasons, separators=(",", ":")))}


def _reference(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.core.profiles import ReferenceProfile
    from monitor.profile.build import PerformanceColumns, build_profile, read_table
    from monitor.profile.store import profile_size

    model = settings.model(args.model)
    store = _reference_store(settings)
    if args.action == "build":
        from rich.progress import Progress

        started = time.monotonic()
        specs = _model_specs(settings, model.name)
        with Progress(transient=True, console=_stderr_console()) as bar:
            task = bar.add_task(f"reading {args.input.name}", total=len(specs) + 1)
            columns = read_table(args.input)
            bar.advance(task)
            perf = (PerformanceColumns(model.type, model.label_field, model.prediction_field, model.score_field,
                                       model.decision_threshold) if model.prediction_field else None)

            def step(name: str) -> None:
                bar.update(task, advance=1, description=f"profiling {name}")

            profile = build_profile(model.name, specs, columns, version=args.version or "", source=args.input.name,
                                    sentinels=model.sentinels, time_field=model.time_field, performance=perf,
                                    progress=step, season=args.season, season_min_rows=args.season_min_rows,
                                    feature_fields=[s.name for s in _model_specs(settings, model.name, ("features",))],
                                    variance_share=model.multivariate.variance_share,
                                    score_field=model.score_field, segments=model.segments,
                                    max_segments=model.max_segments)
        # The version number is taken only now: a build that failed above used none (v3 used to follow two).
        version = args.version or store.next_version(model.name)
        profile = dataclasses.replace(profile, version=version)
        store.put(profile)
        if args.activate or store.active_version(model.name) is None:
            store.activate(model.name, version)
        log.info("reference.built", model=model.name, version=version, rows=profile.rows,
                 fields=len(profile.fields), bytes=profile_size(profile),
                 performance=(profile.performance or {}).get("metrics"), **_season_summary(profile),
                 multivariate=(f"{len(profile.multivariate['components'])} of {len(profile.multivariate['fields'])} "
                               f"components" if profile.multivariate else "not fitted (fewer than two numeric "
                               "features with rows)"),
                 segment_profiles=len((profile.segments or {}).get("fields", {})),
                 seconds=round(time.monotonic() - started, 2), active=store.active_version(model.name) == version)
        print(version)
    elif args.action == "list":
        active = store.active_version(model.name)
        for version in store.versions(model.name):
            p = store.get(model.name, version)
            mark = "*" if version == active else " "
            print(f"{mark} {version}  rows={p.rows}  fields={len(p.fields)}  source={p.source}  created={p.created_at}")
    elif args.action == "show":
        version = args.version or store.active_version(model.name)
        if version is None:
            print(f"model-monitor: model {model.name} has no active reference", file=sys.stderr)
            return 2
        print(json.dumps(json.loads(store.get(model.name, version).to_json()), indent=2))
    elif args.action == "activate":
        store.activate(model.name, args.version)
        log.info("reference.activated", model=model.name, version=args.version)
    elif args.action == "export":
        version = args.version or store.active_version(model.name)
        if version is None:
            print(f"model-monitor: model {model.name} has no active reference", file=sys.stderr)
            return 2
        args.out.write_text(store.get(model.name, version).to_json())
        log.info("reference.exported", model=model.name, version=version, path=str(args.out))
    elif args.action == "import":
        profile = ReferenceProfile.from_json(args.file.read_text())
        if profile.model != model.name:
            profile = ReferenceProfile(model.name, profile.version, profile.created_at, profile.source,
                                       profile.rows, profile.event_rate, profile.fields, profile.performance)
        if args.version:
            profile = ReferenceProfile(profile.model, args.version, profile.created_at, profile.source,
                                       profile.rows, profile.event_rate, profile.fields, profile.performance)
        store.put(profile)
        if args.activate:
            store.activate(model.name, profile.version)
        log.info("reference.imported", model=model.name, version=profile.version)
        print(profile.version)
    return 0


def _contract(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.core.schema import field_types
    from monitor.io.avro import load_schema
    from monitor.profile.contract import dump_contract, infer_contract

    model = settings.model(args.model)
    store = _reference_store(settings)
    version = args.version or store.active_version(model.name)
    if version is None:
        print(f"model-monitor: model {model.name} has no active reference; run `reference build` first",
              file=sys.stderr)
        return 2
    profile = store.get(model.name, version)
    types: dict[str, str] = {}
    for _, stream in model.streams():
        if stream.schema_path is not None:
            types.update(field_types(load_schema(stream.schema_path)))
    checks = {name: settings.checks_for(model, name) for name in profile.fields}
    text = dump_contract(infer_contract(profile, types, checks))
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
        log.info("contract.written", model=model.name, reference=version, path=str(args.out))
    return 0


def _read_alerts(settings: Settings, model: str, idle_s: float = 2.0) -> list[dict[str, Any]]:
    """Every alert of `model` on the alerts topic, oldest first (a throwaway reader group)."""
    import uuid

    from confluent_kafka import Consumer

    from monitor.io.avro import AlertCodec

    codec = AlertCodec()
    consumer = Consumer({**settings.admin_config(), "group.id": f"model-monitor-report-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.alerts_topic])
    out: list[dict[str, Any]] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() or not msg.value():
                continue
            last = time.monotonic()
            a = codec.decode(msg.value() or b"")
            if a.model == model:
                out.append({"alert_id": a.alert_id, "kind": str(a.kind), "check": a.check, "feature": a.feature,
                            "status": a.status, "event_time": a.event_time, "source_offset": a.source_offset,
                            "segment": a.segment, "explanation": a.evidence.get("explanation", ""),
                            "explanation_basis": a.evidence.get("explanation_basis", "")})
    finally:
        consumer.close()
    return out


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.io.history import DriftHistory
    from monitor.io.redis_store import RedisStore
    from monitor.io.references import RedisReferenceStore
    from monitor.ops.report import collect, render

    model = settings.model(args.model)
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix, settings.group_id)
    refs = RedisReferenceStore(store.client, settings.key_prefix)
    version = refs.active_version(model.name)
    reference = refs.get(model.name, version) if version else None
    history = DriftHistory(store.client, settings.key_prefix, settings.group_id).read(model.name)
    features, extra = collect(settings, model, store, reference, history)
    alerts = [] if args.no_alerts else _read_alerts(settings, model.name)
    args.out.write_text(render(model.name, reference, features, extra, alerts))
    log.info("report.written", model=model.name, path=str(args.out), features=len(features), alerts=len(alerts))
    print(args.out)
    return 0


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
