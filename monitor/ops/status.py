"""`model-monitor status`: per model and feature, what the store holds, merged over input partitions."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from monitor.core.reach import minimums, unreachable
from monitor.core.state_codec import BLOB_PREFIX, read_fields
from monitor.core.types import META_FIELD, SEGMENT_PREFIX
from monitor.io.state import StateStore
from monitor.settings import Settings


def collect_status(settings: Settings, store: StateStore) -> dict[str, Any]:
    """The JSON shape: models.<name>.{model_view.<stream>.{incidents, drift, counts}, events, rejects,
    features.<f>.{count, ...}, partitions, open_alerts}: the merged view first, input partitions after it."""
    topics = {stream.topic: (model.name, kind) for model in settings.models for kind, stream in model.streams()}
    models: dict[str, Any] = {m.name: {"model_view": {}, "events": 0, "events_by_stream": {}, "rejects": 0,
                                       "features": {}, "predictions": {}, "labels": {}, "partitions": {},
                                       "open_alerts": []}
                              for m in settings.models}
    for topic, partition in store.partitions():
        if topic == settings.blocks_topic:
            _model_view(models, store.read(topic, partition).fields, settings)
            continue
        if topic not in topics:
            continue
        name, kind = topics[topic]
        snap = store.read(topic, partition)
        out = models[name]
        out["partitions"][f"{topic}[{partition}]"] = snap.offset
        if META_FIELD not in snap.fields:
            continue
        # Not each waiting label; not a segment's fields (its view is stage 2's).
        states = read_fields(snap.fields, [META_FIELD] if kind == "labels" else
                             [k for k in snap.fields if not k.startswith((BLOB_PREFIX, SEGMENT_PREFIX))])
        meta = states[META_FIELD]
        if kind == "labels":
            out["events_by_stream"]["labels"] = out["events_by_stream"].get("labels", 0) + meta["events"]
            _merge_labels(out["labels"], meta)
            for key in meta["open_alerts"]:
                metric, _, check = key.partition("/")
                out["open_alerts"].append({"stream": kind, "feature": metric, "check": check,
                                           "partition": partition})
            continue
        if kind == "features":
            out["events"] += meta["events"]
        out["events_by_stream"][kind] = out["events_by_stream"].get(kind, 0) + meta["events"]
        out["rejects"] += meta["rejects"]
        for key, until in meta["quiet_until"].items():  # cooldowns, in state of earlier versions
            if until > meta["events"]:
                feature, _, check = key.partition("/")
                out["open_alerts"].append({"stream": kind, "feature": feature, "check": check,
                                           "partition": partition, "quiet_until_event": until})
        for key, state in meta.get("open_alerts", {}).items():  # open checks and detector incidents
            feature, _, check = key.partition("/")
            out["open_alerts"].append({"stream": kind, "feature": feature, "check": check, "partition": partition,
                                       "since_event": int(state.get("since", 0))})
        model = settings.model(name)
        window = settings.window_for(model)
        closed = meta.get("closed_meta") or states.get("__closed__", {}).get("closed_meta", [])
        if not settings.model_view.enabled and len(closed) >= window.blocks:  # a full per-partition window
            for u in unreachable(window, kind, minimums(settings, model, kind), float(sum(m[4] for m in closed))):
                out.setdefault("unreachable", []).append({**asdict(u), "partition": partition})
        for field, state in states.items():
            if field.startswith("__"):  # __meta__, __closed__: not a feature
                continue
            feature = field.split("/", 1)[1]
            _merge(out[kind].setdefault(feature, {}), state, partition)
    for out in models.values():
        for group in (out["features"], out["predictions"]):
            for feat in group.values():
                _finish(feat)
        for key in [k for k in out["labels"] if k.startswith("_")]:
            del out["labels"][key]
    return {"models": models}


def _model_view(models: dict[str, Any], fields: dict[str, bytes], settings: Settings) -> None:
    """Stage 2's state of one blocks-topic partition: per model stream, its counts, drift and open incidents,
    and the checks a full window cannot run (too few events in it)."""
    for key, state in read_fields(fields).items():
        model, _, stream = key.partition("/")
        if model not in models or not stream:
            continue
        stream, _, segment = stream.partition("#")
        if segment:
            models[model].setdefault("segments", {})[segment] = {
                **segment_row(stream, state), "min_count": settings.model(model).min_segment_count}
            continue
        conf = settings.model(model)
        window = settings.window_for(conf)
        if len(state.get("slots", [])) >= window.blocks:
            held = float(sum(int(s[1]) for s in state["slots"][-window.blocks:]))
            models[model].setdefault("unreachable", []).extend(
                asdict(u) for u in unreachable(window, stream, minimums(settings, conf, stream), held))
        incidents = []
        for inc in state["incidents"]["open"].values():
            checks = inc["checks"]
            incidents.append({"field": inc["field"], "kind": inc["kind"], "severity": inc["severity"],
                              "checks": sorted(checks),
                              "partitions": sorted({p for c in checks.values() for p in c["partitions"]}),
                              "first_event_time": inc["first_time"]})
        models[model]["model_view"][stream] = {
            **state["counts"], "partitions": len(state["partitions"]), "open_slots": len(state["pending"]),
            "last_closed_slot": state["closed_slot"],
            "drift": {f: {"statistic": d[0], "value": d[1], "threshold": d[2], "level": d[3] if len(d) > 3 else ""}
                      for f, d in sorted(state.get("last_drift", {}).items())},
            "incidents": sorted(incidents, key=lambda i: (i["field"], i["kind"]))}


def segment_row(stream: str, state: dict[str, Any]) -> dict[str, Any]:
    """One segment's view: its events, its worst drift (value over threshold) and its open incidents."""
    drift = state.get("last_drift", {})
    worst = max(drift.items(), key=lambda kv: (kv[1][1] / kv[1][2] if kv[1][2] else 0.0, kv[0]), default=None)
    return {"stream": stream, "events": int(state["counts"]["events"]),
            "window_events": int(sum(int(s[1]) for s in state.get("slots", []))),
            "worst_feature": worst[0] if worst else "", "worst_statistic": worst[1][0] if worst else "",
            "worst_value": float(worst[1][1]) if worst else 0.0,
            "worst_threshold": float(worst[1][2]) if worst else 0.0,
            "incidents": sorted(f"{inc['severity']} {inc['kind']} {inc['field']}: {', '.join(sorted(inc['checks']))}"
                                for inc in state["incidents"]["open"].values())}


def _merge_labels(acc: dict[str, Any], meta: dict[str, Any]) -> None:
    """Join counts summed over label partitions; performance over the union of their windows."""
    import numpy as np

    from monitor.core.labels import metrics

    acc["labels"] = acc.get("labels", 0) + meta["events"]
    for key, value in meta["counts"].items():
        acc[key] = acc.get(key, 0) + value
    acc["pending"] = acc.get("pending", 0) + meta.get("pending_count", len(meta.get("pending", {})))
    acc["improvements"] = acc.get("improvements", 0) + int(meta.get("improvements", 0))
    acc["_lag_sum_ms"] = acc.get("_lag_sum_ms", 0) + meta["lag_sum_ms"]
    if meta["closed"]:
        window = np.sum(np.asarray(meta["closed"]), axis=0)
        acc["_window"] = window if "_window" not in acc else acc["_window"] + window
    acc["_kind"] = meta["kind"]
    if "_window" in acc:
        acc["window"] = metrics(acc["_window"], meta["kind"])
    joined = acc.get("joined", 0)
    acc["mean_label_lag_s"] = acc["_lag_sum_ms"] / joined / 1000.0 if joined else None


def _merge(acc: dict[str, Any], state: dict[str, Any], partition: int) -> None:
    acc["kind"] = state["kind"]
    if state["kind"] == "numeric":
        t = state["totals"]
        n, missing, nan, inf, finite, total, m2 = t[0], t[1], t[2], t[3], t[4], t[5], t[6]
        if state.get("moments") != "m2" and finite:  # totals written by 0.1: a sum of squares
            m2 = max(m2 - total * total / finite, 0.0)
        acc["count"] = acc.get("count", 0) + int(n)
        acc["missing"] = acc.get("missing", 0) + int(missing)
        acc["nan"] = acc.get("nan", 0) + int(nan) + int(inf)
        # Partitions' (count, sum, M2) combined as Chan et al. do: stable at any magnitude.
        n_a, sum_a = acc.get("_finite", 0), acc.get("_sum", 0.0)
        if n_a and finite:
            delta = total / finite - sum_a / n_a
            acc["_m2"] = acc.get("_m2", 0.0) + m2 + delta * delta * n_a * finite / (n_a + finite)
        else:
            acc["_m2"] = acc.get("_m2", 0.0) + m2
        acc["_finite"] = n_a + finite
        acc["_sum"] = sum_a + total
        acc.setdefault("detectors", {})[str(partition)] = {
            "adwin_width": int(state["adwin"]["width"]),
            "page_hinkley_n": state["page_hinkley"]["n"],
            "warmup_mean": state["mean"],
            "warmup_std": state["std"],
        }
    else:
        acc["count"] = acc.get("count", 0) + state["count"]
        acc["missing"] = acc.get("missing", 0) + state["missing"]
        acc["nan"] = 0


def _finish(feat: dict[str, Any]) -> None:
    count = feat.get("count", 0)
    feat["missing_rate"] = feat["missing"] / count if count else 0.0
    feat["nan_rate"] = feat["nan"] / count if count else 0.0
    finite = feat.pop("_finite", 0)
    total = feat.pop("_sum", 0.0)
    m2 = feat.pop("_m2", 0.0)
    if finite:
        feat["mean"] = total / finite
        feat["std"] = (m2 / finite) ** 0.5


def render_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    for name, model in status["models"].items():
        for stream, view in model.get("model_view", {}).items():
            console.print(f"[bold]{name}[/bold] {stream}, all partitions merged: {view['events']} events in "
                          f"{view['blocks']} blocks from {view['partitions']} partitions, {view['late_blocks']} "
                          f"late, {view['duplicate_blocks']} re-sent; {len(view['incidents'])} open incidents")
            for inc in view["incidents"]:
                console.print(f"  [red]{inc['severity']}[/red] {inc['kind']} {inc['field']}: "
                              f"{', '.join(inc['checks'])} (partitions {inc['partitions']})")
            if view["drift"]:
                table = Table("feature", "statistic", "value", "threshold", "level")
                for feature, d in view["drift"].items():
                    table.add_row(feature, d["statistic"], f"{d['value']:.4f}", f"{d['threshold']:.4f}",
                                  d.get("level", ""))
                console.print(table)
        segments = model.get("segments", {})
        if segments:
            table = Table("segment", "events (window)", "worst drift", "value / threshold", "open incidents",
                          title=f"{name}: segments")
            for label, seg in sorted(segments.items(), key=lambda kv: (-len(kv[1]["incidents"]), kv[0])):
                ratio = seg["worst_value"] / seg["worst_threshold"] if seg["worst_threshold"] else 0.0
                waiting = seg["window_events"] < seg.get("min_count", 0)
                table.add_row(label, f"{seg['events']} ({seg['window_events']})",
                              f"{seg['worst_feature']} {seg['worst_statistic']}".strip() or
                              (f"its window needs {seg['min_count']} events (min_segment_count)" if waiting else ""),
                              f"{ratio:.2f}", "; ".join(seg["incidents"]))
            console.print(table)
        console.print(f"[bold]{name}[/bold]: {model['events']} events, {model['rejects']} rejected, "
                      f"{len(model['open_alerts'])} open alerts")
        budget = model.get("budget")
        if budget and "cusum_h" in budget:
            console.print(f"  false-alarm budget {budget['false_alarms_per_day']:g} a day over "
                          f"{budget['checks']} checks ({budget['per_check_per_day']:.3g} each) at "
                          f"{budget['events_per_s']:g} events/s: drift p < {budget['drift_p_max']:.3g}, "
                          f"CUSUM h = {budget['cusum_h']:.2f} (k = {budget['cusum_k']:g})")
        elif budget:
            console.print(f"  false-alarm budget {budget['false_alarms_per_day']:g} a day: not derived "
                          f"({budget['derived'].removeprefix('no: ')})")
        table = Table("stream", "feature", "kind", "count", "missing", "NaN", "mean", "std")
        for kind in ("features", "predictions"):
            for feature, f in sorted(model[kind].items()):
                mean = f"{f['mean']:.4g}" if "mean" in f else ""
                std = f"{f['std']:.4g}" if "std" in f else ""
                table.add_row(kind, feature, f["kind"], str(f["count"]), f"{f['missing_rate']:.2%}",
                              f"{f['nan_rate']:.2%}", mean, std)
        console.print(table)
        labels = model.get("labels") or {}
        if labels:
            perf = ", ".join(f"{k}={v:.3f}" for k, v in (labels.get("window") or {}).items() if v == v)
            console.print(f"  labels: {labels.get('labels', 0)} received, {labels.get('joined', 0)} joined, "
                          f"{labels.get('duplicates', 0)} duplicates, {labels.get('pending', 0)} waiting, "
                          f"{labels.get('expired', 0)} expired; window: {perf or 'n/a'}")
        for alert in model["open_alerts"]:
            console.print(f"  open: {alert['stream']}/{alert['feature']} {alert['check']} "
                          f"(partition {alert['partition']})")
        for u in model.get("unreachable", []):
            where = f", partition {u['partition']}" if "partition" in u else ""
            console.print(f"  [yellow]never runs[/yellow]: {u['stream']} {u['check']}{where}: {u['advice']}")
        for tp, offset in sorted(model["partitions"].items()):
            console.print(f"  {tp}: next offset {offset}")
