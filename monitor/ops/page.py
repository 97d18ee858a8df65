"""The live status page at `/`: the merged model view first (from the store, so any replica shows the whole
model), then this process's recent alerts, then the input partitions as a drill-down."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from monitor.core.types import Alert


@dataclass
class PageData:
    """What the page shows: `status` is `monitor.ops.status.collect_status`'s shape (or None if unreadable)."""

    status: dict[str, Any] | None
    ready: bool
    group: str
    stages: list[str]
    recent: list[Alert] = field(default_factory=list)
    lags: dict[tuple[str, int], int] = field(default_factory=dict)
    error: str | None = None
    # Per-partition mode (no model stage): this process's last drift values, (model, stream, feature) ->
    # (statistic, value, threshold), and open checks, stand in for the merged view.
    latest: dict[tuple[str, str, str], tuple[str, float, float]] = field(default_factory=dict)


def feature_rows(status: dict[str, Any], latest: dict[tuple[str, str, str], tuple[str, float, float]] | None = None
                 ) -> list[dict[str, Any]]:
    """Per model stream and feature, over every partition: statistic and OK / WARNING / ALERT, worst first."""
    rows = []
    for model, m in status["models"].items():
        views = dict(m.get("model_view", {}))
        if not views and latest:
            for stream in ("features", "predictions"):
                drift = {f: {"statistic": c, "value": v, "threshold": th}
                         for (mm, s, f), (c, v, th) in latest.items() if mm == model and s == stream}
                opened = [{"field": a["feature"], "checks": [a["check"]]} for a in m["open_alerts"]
                          if a["stream"] == stream]
                views[stream] = {"drift": drift, "incidents": opened}
        for stream, view in views.items():
            failing: dict[str, set[str]] = {}
            for inc in view["incidents"]:
                for check in inc["checks"]:
                    name, _, chk = check.rpartition("/")
                    failing.setdefault(name or inc["field"], set()).add(chk)
            names = set(view["drift"]) | set(m.get(stream, {})) | set(failing)
            for feature in sorted(names):
                d = view["drift"].get(feature, {})
                value, threshold = float(d.get("value", 0.0)), float(d.get("threshold", 0.0))
                score = value / threshold if threshold else 0.0
                open_checks = failing.get(feature, set())
                state = ("ALERT" if open_checks else "POSSIBLE" if d.get("level") == "possible" else
                         "WARNING" if score > 0.5 else "OK")
                rows.append({"model": model, "stream": stream, "feature": feature, "statistic": d.get("statistic", ""),
                             "value": value, "threshold": threshold, "open": open_checks, "state": state,
                             "score": score})
    order = {"ALERT": 0, "POSSIBLE": 1, "WARNING": 2, "OK": 3}
    return sorted(rows, key=lambda r: (order[r["state"]], -r["score"], r["model"], r["feature"]))


def render_page(data: PageData) -> str:
    e = html.escape
    status = data.status or {"models": {}}
    rows = "".join(
        f'<tr class="feature" data-feature="{e(r["feature"])}"><td>{e(r["model"])}</td><td>{e(r["stream"])}</td>'
        f'<td>{e(r["feature"])}</td><td class="{r["state"]}">{r["state"]}</td><td>{e(r["statistic"])}</td>'
        f'<td>{r["value"]:.4f}</td><td>{r["threshold"]:.4f}</td><td>{e(", ".join(sorted(r["open"])))}</td></tr>'
        for r in feature_rows(status, data.latest))
    incidents = "".join(
        f'<tr class="incident"><td>{e(model)}</td><td>{e(stream)}</td><td class="{e(i["severity"])}">'
        f'{e(i["severity"])}</td><td>{e(i["kind"])}</td><td>{e(i["field"])}</td><td>{e(", ".join(i["checks"]))}</td>'
        f'<td>{e(",".join(str(p) for p in i["partitions"]))}</td></tr>'
        for model, m in status["models"].items() for stream, v in m.get("model_view", {}).items()
        for i in v["incidents"])
    views = "".join(
        f'<tr><td>{e(model)}</td><td>{e(stream)}</td><td>{v["events"]:,}</td><td>{v["blocks"]:,}</td>'
        f'<td>{v["partitions"]}</td><td>{v["late_blocks"]}</td><td>{v["duplicate_blocks"]}</td>'
        f'<td>{v["open_slots"]}</td></tr>'
        for model, m in status["models"].items() for stream, v in m.get("model_view", {}).items())
    segments = "".join(
        f'<tr class="segment"><td>{e(model)}</td><td>{e(label)}</td><td>{seg["events"]:,} ({seg["window_events"]:,})'
        f'</td><td>{e(seg["worst_feature"])} {e(seg["worst_statistic"])}</td><td>'
        f'{(seg["worst_value"] / seg["worst_threshold"]) if seg["worst_threshold"] else 0.0:.2f}</td>'
        f'<td class="{"ALERT" if seg["incidents"] else "OK"}">{e("; ".join(seg["incidents"])) or "OK"}</td></tr>'
        for model, m in status["models"].items()
        for label, seg in sorted(m.get("segments", {}).items(), key=lambda kv: (-len(kv[1]["incidents"]), kv[0])))
    alerts = "".join(
        f'<tr><td>{e(a.status)}</td><td>{e(str(a.kind))}</td><td>{e(a.check)}</td><td>{e(a.model)}/'
        f'{e(a.feature)}{e(" [" + a.segment + "]") if a.segment else ""}</td>'
        f'<td>{a.statistic:.4g} / {a.threshold:.4g}</td><td>{e(a.message)}</td>'
        f'<td>{e("; ".join(f"{k}={v}" for k, v in list(a.evidence.items())[:4]))}</td></tr>'
        for a in data.recent)
    parts = "".join(
        f"<tr><td>{e(model)}</td><td>{e(tp)}</td><td>{'' if off is None else f'{off:,}'}</td></tr>"
        for model, m in status["models"].items() for tp, off in sorted(m["partitions"].items()))
    lag = "".join(f"<tr><td>{e(t)}[{p}]</td><td>{n:,}</td></tr>" for (t, p), n in sorted(data.lags.items()))
    ready = "ready" if data.ready else "NOT READY"
    problem = f"<p class=ALERT>{e(data.error)}</p>" if data.error else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>model-monitor status</title><link rel="icon" href="data:,"><style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#182026;background:#f5f8fa}}
table{{border-collapse:collapse;background:#fff;margin-bottom:18px}}td,th{{padding:3px 10px;text-align:left;
border-bottom:1px solid #e1e8ed}}.OK,.INFO{{color:#0d8050}}.WARNING{{color:#bf7326}}.POSSIBLE{{color:#8f398f}}
.ALERT,.CRITICAL{{color:#c23030;font-weight:600}}details{{margin-bottom:18px}}
</style></head><body><h1>model-monitor</h1><p>{ready}; group {e(data.group)}; stages {e(", ".join(data.stages))}
on this process; every partition of every model, merged; refreshes every 5 s</p>{problem}
<h2>Open incidents</h2><table id=incidents><tr><th>model</th><th>stream</th><th>severity</th><th>kind</th>
<th>field</th><th>checks</th><th>partitions</th></tr>{incidents}</table>
<h2>Features (all partitions)</h2><table id=features><tr><th>model</th><th>stream</th><th>feature</th>
<th>state</th><th>statistic</th><th>value</th><th>threshold</th><th>open checks</th></tr>{rows}</table>
{"<h2>Segments</h2><table id=segments><tr><th>model</th><th>segment</th><th>events (window)</th><th>worst drift"
  "</th><th>value / threshold</th><th>open incidents</th></tr>" + segments + "</table>" if segments else ""}
<h2>Recent alerts from this process</h2><table id=alerts><tr><th>status</th><th>kind</th><th>check</th>
<th>feature</th><th>statistic / threshold</th><th>message</th><th>evidence</th></tr>{alerts}</table>
<details><summary>Model stage: blocks merged per stream</summary><table id=views><tr><th>model</th>
<th>stream</th><th>events</th><th>blocks</th><th>partitions</th><th>late blocks</th><th>re-sent blocks</th>
<th>open slots</th></tr>{views}</table></details>
<details><summary>Input partitions (drill-down)</summary><table id=partitions><tr><th>model</th>
<th>partition</th><th>next offset</th></tr>{parts}</table>
<table id=lag><tr><th>partition on this process</th><th>events behind</th></tr>{lag}</table></details>
</body></html>
"""
