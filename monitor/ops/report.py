"""`model-monitor report`: one self-contained HTML file (inline CSS and SVG, no network) per model.

Features ranked by drift; per feature the reference vs current distribution, the drift statistic over
time with its threshold, contract violations and counts; alerts on a timeline; performance from labels.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.core import stats
from monitor.core.multivariate import MV_ALERT_FIELD, MV_FIELD
from monitor.core.profiles import CategoricalProfile, NumericProfile, ReferenceProfile
from monitor.core.sketches import HEAD, META_KEYS, unpack_array
from monitor.core.state_codec import BLOB_PREFIX, read_fields
from monitor.core.types import META_FIELD, SEGMENT_PREFIX
from monitor.io.state import StateStore
from monitor.ops.status import segment_row as _segment_row
from monitor.settings import ModelSettings, Settings

KIND_COLORS = {"DATA_QUALITY": "#d9822b", "DRIFT": "#c23030", "PREDICTION_DRIFT": "#8f398f",
               "SCHEMA": "#0f6894", "CONCEPT_DRIFT": "#1f4b99", "VOLUME": "#5c7080"}


@dataclass
class FeatureView:
    name: str
    stream: str
    kind: str
    count: int = 0
    missing: int = 0
    nan: int = 0
    labels: list[str] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    current: list[float] = field(default_factory=list)
    statistic: str = ""
    value: float = 0.0
    threshold: float = 0.0
    history: list[tuple[int, float, float]] = field(default_factory=list)
    open_checks: list[str] = field(default_factory=list)
    level: str = ""  # the model view's last drift level: "drift", "possible" (significant, under the floor) or ""

    @property
    def score(self) -> float:
        return self.value / self.threshold if self.threshold else 0.0

    @property
    def state(self) -> str:
        if self.open_checks:
            return "ALERT"
        if self.level == "possible":
            return "POSSIBLE"
        return "WARNING" if self.score > 0.5 else "OK"


def _model_view(settings: Settings, model: ModelSettings, store: StateStore, views: dict[str, FeatureView],
                windows: dict[str, Any], totals: dict[str, int], segments: dict[str, Any]) -> set[str]:
    """The model stage's merged windows, totals and open incidents (when it runs): the streams it covered."""
    covered: set[str] = set()
    for topic, partition in store.partitions():
        if topic != settings.blocks_topic:
            continue
        fields = store.read(topic, partition).fields
        for stream in ("features", "predictions"):
            key = f"{model.name}/{stream}"
            if key not in fields:
                continue
            covered.add(stream)
            state = read_fields(fields, [key])[key]
            if stream == "features":
                totals["events"] += int(state["counts"]["events"])
            failing: dict[str, set[str]] = {}
            for inc in state["incidents"]["open"].values():
                for chk in inc["checks"].values():
                    failing.setdefault(chk["field"], set()).add(chk["check"])
            for name, fs in state["features"].items():
                # The derived multivariate field shows as the model-wide check it is alerted as.
                feature = MV_ALERT_FIELD if name == MV_FIELD else name
                v = views.setdefault(feature, FeatureView(feature, stream, fs["kind"]))
                v.open_checks = sorted(failing.get(feature, set()))
                if fs["kind"] == "numeric":
                    t = fs["totals"]
                    v.count, v.missing, v.nan = int(t[0]), int(t[1]), int(t[2] + t[3])
                    closed = fs["window"]["closed"]
                    if closed:
                        windows[feature] = np.sum([unpack_array(b) for b in closed], axis=0)[HEAD:]
                else:
                    v.count, v.missing = fs["count"], fs["missing"]
                    merged: dict[str, int] = windows.setdefault(feature, {})
                    for block in fs["window"]["closed"]:
                        for k, n in block.items():
                            if k not in META_KEYS:
                                merged[k] = merged.get(k, 0) + n
        for key in sorted(k for k in read_fields(fields, [META_FIELD]).get(META_FIELD, {}).get("streams", [])
                          if k.startswith(f"{model.name}/") and "#" in k):
            stream_segment = key.split("/", 1)[1]
            stream, _, segment = stream_segment.partition("#")
            segments[segment] = {**_segment_row(stream, read_fields(fields, [key])[key])}
    return covered


def collect(settings: Settings, model: ModelSettings, store: StateStore, reference: ReferenceProfile | None,
            history: list[dict[str, Any]]) -> tuple[list[FeatureView], dict[str, Any]]:
    """The model stage's merged windows per feature when it runs; else merge every partition's stored windows
    (sketches over the same bins add up)."""
    topics = {s.topic: kind for kind, s in model.streams()}
    views: dict[str, FeatureView] = {}
    windows: dict[str, Any] = {}
    labels_window: np.ndarray | None = None
    labels_kind = model.type
    totals = {"events": 0, "rejects": 0}
    segments: dict[str, Any] = {}
    merged_streams = _model_view(settings, model, store, views, windows, totals, segments)
    for topic, partition in store.partitions():
        if topic not in topics or topics[topic] in merged_streams:
            continue
        snap = store.read(topic, partition)
        if META_FIELD not in snap.fields:
            continue
        states = read_fields(snap.fields, [META_FIELD] if topics[topic] == "labels" else
                             [k for k in snap.fields if not k.startswith((BLOB_PREFIX, SEGMENT_PREFIX))])
        meta = states[META_FIELD]
        if topics[topic] == "labels":
            if meta["closed"]:
                w = np.sum(np.asarray(meta["closed"]), axis=0)
                labels_window = w if labels_window is None else labels_window + w
            continue
        if topics[topic] == "features":
            totals["events"] += meta["events"]
        totals["rejects"] += meta["rejects"]
        open_by_feature: dict[str, list[str]] = {}
        for key in meta.get("open_alerts", {}):
            feature, _, check = key.partition("/")
            open_by_feature.setdefault(feature, []).append(check)
        for fname, state in states.items():
            if fname.startswith("__"):  # __meta__, __closed__: not a feature
                continue
            feature = fname.split("/", 1)[1]
            v = views.setdefault(feature, FeatureView(feature, topics[topic], state["kind"]))
            v.open_checks = sorted(set(v.open_checks) | set(open_by_feature.get(feature, [])))
            if state["kind"] == "numeric":
                t = state["totals"]
                v.count += int(t[0])
                v.missing += int(t[1])
                v.nan += int(t[2] + t[3])
                closed = state["window"]["closed"]
                if closed:
                    w = np.sum([unpack_array(b) for b in closed], axis=0)[HEAD:]
                    windows[feature] = w if feature not in windows or len(windows[feature]) != len(w) \
                        else windows[feature] + w
            else:
                v.count += state["count"]
                v.missing += state["missing"]
                merged: dict[str, int] = windows.setdefault(feature, {})
                for block in state["window"]["closed"]:
                    for k, n in block.items():
                        if k not in META_KEYS:
                            merged[k] = merged.get(k, 0) + n
    for feature, v in views.items():
        prof = reference.fields.get(feature) if reference is not None else None
        if feature == MV_ALERT_FIELD and reference is not None:
            prof = reference.multivariate_profile()
        checks = settings.checks_for(model, feature)
        w = windows.get(feature)
        if isinstance(prof, NumericProfile) and isinstance(w, np.ndarray) and len(w) == len(prof.fractions):
            ref_counts = prof.counts()
            e = prof.edges
            v.labels = ([f"<{e[0]:.3g}"] + [f"{a:.3g}" for a in e[:-1]] + [f">={e[-1]:.3g}"]) if e else ["all"]
            v.reference = (ref_counts / max(ref_counts.sum(), 1)).tolist()
            v.current = (w / max(w.sum(), 1)).tolist()
            v.statistic = checks.drift.numeric_statistic
            v.value = stats.statistic(v.statistic, ref_counts, w, prof.centers())
            scale = prof.std if v.statistic == "wasserstein" and prof.std else None
            if scale:
                v.value /= scale  # normalised, as the daemon's check has it
            v.threshold = stats.effect_floor(v.statistic, checks.drift.threshold_for(v.statistic), ref_counts, w,
                                             prof.centers(), scale)
        elif isinstance(prof, CategoricalProfile) and isinstance(w, dict) and w:
            cats = prof.categories
            cur = np.array([w.get(c, 0) for c in cats] + [sum(n for k, n in w.items() if k not in cats)], float)
            ref_counts = prof.counts()
            v.labels = [*cats, "other"]
            v.reference = (ref_counts / max(ref_counts.sum(), 1)).tolist()
            v.current = (cur / max(cur.sum(), 1)).tolist()
            v.statistic = checks.drift.categorical_statistic
            v.value = stats.statistic(v.statistic, ref_counts, cur)
            v.threshold = stats.effect_floor(v.statistic, checks.drift.threshold_for(v.statistic), ref_counts, cur)
        for point in history:
            if feature in point["values"] and "#" not in point["stream"]:  # the stream's, not a segment's
                _name, value, threshold, *level = point["values"][feature]
                v.history.append((point["time"], float(value), float(threshold)))
                v.level = level[0] if level else ""
        v.history.sort()
    ranked = sorted(views.values(), key=lambda f: (-len(f.open_checks), -f.score, f.name))
    extra: dict[str, Any] = {"totals": totals, "segments": segments}
    if labels_window is not None:
        from monitor.core.labels import metrics

        extra["performance"] = metrics(labels_window, labels_kind)
    metric = "accuracy" if model.type == "classifier" else "mae"
    extra["performance_history"] = sorted(
        (p["time"], float(p["values"][metric][1]), float("nan")) for p in history
        if p["stream"] == "labels" and metric in p["values"])
    extra["performance_metric"] = metric
    return ranked, extra


# -- rendering -------------------------------------------------------------------------------------

def _bars(view: FeatureView, width: int = 520, height: int = 150) -> str:
    n = len(view.labels)
    if not n:
        return "<p class=muted>No reference bins yet.</p>"
    top = max(max(view.reference), max(view.current), 1e-9)
    slot = width / n
    parts = [f'<svg viewBox="0 0 {width} {height + 20}" width="{width}" height="{height + 20}" role="img" '
             f'aria-label="reference versus current distribution of {html.escape(view.name)}">']
    for i, (r, c) in enumerate(zip(view.reference, view.current, strict=True)):
        x = i * slot
        hr, hc = r / top * height, c / top * height
        parts.append(f'<rect x="{x + 1:.1f}" y="{height - hr:.1f}" width="{slot / 2 - 1:.1f}" height="{hr:.1f}" '
                     f'fill="#a7b6c2"><title>{html.escape(view.labels[i])}: reference {r:.2%}</title></rect>')
        parts.append(f'<rect x="{x + slot / 2:.1f}" y="{height - hc:.1f}" width="{slot / 2 - 1:.1f}" '
                     f'height="{hc:.1f}" fill="#2b95d6"><title>{html.escape(view.labels[i])}: current {c:.2%}'
                     f'</title></rect>')
    parts.append(f'<text x="0" y="{height + 15}" class=axis>{html.escape(view.labels[0])}</text>')
    parts.append(f'<text x="{width}" y="{height + 15}" text-anchor="end" class=axis>'
                 f'{html.escape(view.labels[-1])}</text></svg>')
    return "".join(parts)


def _line(points: list[tuple[int, float, float]], width: int = 520, height: int = 120) -> str:
    if len(points) < 2:
        return "<p class=muted>Not enough windows yet for a history.</p>"
    xs = np.array([p[0] for p in points], float)
    ys = np.array([p[1] for p in points], float)
    th = np.array([p[2] for p in points], float)
    top = max(float(ys.max()), float(np.nanmax(th)) if np.isfinite(th).any() else 0.0, 1e-9) * 1.1
    span = max(float(xs.max() - xs.min()), 1.0)

    def path(vals: np.ndarray) -> str:
        return " ".join(f"{(x - xs.min()) / span * width:.1f},{height - v / top * height:.1f}"
                        for x, v in zip(xs, vals, strict=True))

    threshold = (f'<polyline points="{path(th)}" fill="none" stroke="#c23030" stroke-dasharray="4 3"/>'
                 if np.isfinite(th).all() else "")
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="a statistic over time">{threshold}<polyline points="{path(ys)}" fill="none" '
            f'stroke="#2b95d6" stroke-width="1.5"/></svg>')


def _timeline(alerts: list[dict[str, Any]], width: int = 1040, height: int = 60) -> str:
    times = [a["event_time"] for a in alerts if a.get("event_time") is not None]
    if not times:
        return "<p class=muted>No alerts.</p>"
    lo, hi = min(times), max(times)
    span = max(hi - lo, 1)
    dots = []
    for a in alerts:
        if a.get("event_time") is None:
            continue
        x = (a["event_time"] - lo) / span * (width - 10) + 5
        color = KIND_COLORS.get(a["kind"], "#333")
        shape = "circle" if a.get("status", "OPEN") == "OPEN" else "rect"
        title = html.escape(f"{a['status']} {a['kind']} {a['check']} {a['feature']} at offset {a['source_offset']}")
        if shape == "circle":
            dots.append(f'<circle cx="{x:.1f}" cy="30" r="5" fill="{color}"><title>{title}</title></circle>')
        else:
            dots.append(f'<rect x="{x - 4:.1f}" y="26" width="8" height="8" fill="none" stroke="{color}">'
                        f'<title>{title}</title></rect>')
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="alerts over time"><line x1="0" y1="30" x2="{width}" y2="30" stroke="#ced9e0"/>'
            f'{"".join(dots)}</svg>')


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#182026;background:#f5f8fa}
h1{margin:0 0 4px}h2{margin:28px 0 8px}.muted{color:#5c7080}.axis{font-size:10px;fill:#5c7080}
.card{background:#fff;border-radius:6px;padding:12px 16px;margin:10px 0;box-shadow:0 1px 2px rgba(16,22,26,.15)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:10px}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #e1e8ed}
.OK{color:#0d8050}.WARNING{color:#bf7326}.POSSIBLE{color:#8f398f}.ALERT{color:#c23030;font-weight:600}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
"""


def render(model: str, reference: ReferenceProfile | None, features: list[FeatureView], extra: dict[str, Any],
           alerts: list[dict[str, Any]]) -> str:
    totals = extra["totals"]
    rows = "".join(
        f'<tr><td><a href="#f-{html.escape(f.name)}">{html.escape(f.name)}</a></td><td>{f.stream}</td>'
        f'<td class="{f.state}">{f.state}</td><td>{html.escape(f.statistic)}</td><td>{f.value:.4f}</td>'
        f'<td>{f.threshold:.4f}</td><td>{html.escape(", ".join(f.open_checks))}</td></tr>' for f in features)
    cards = []

    def rate(n: int, total: int) -> str:
        return f"{n / total:.2%}" if total else "n/a"

    for f in features:
        cards.append(
            f'<div class="card feature" id="f-{html.escape(f.name)}" data-feature="{html.escape(f.name)}">'
            f'<h3>{html.escape(f.name)} <small class="{f.state}">{f.state}</small></h3>'
            f'<p class=muted>{f.stream}, {f.kind}; {f.count:,} events, missing {rate(f.missing, f.count)}, '
            f'NaN/inf {rate(f.nan, f.count)}; {html.escape(f.statistic or "no reference")} {f.value:.4f} '
            f'(threshold {f.threshold:.4f}); open: {html.escape(", ".join(f.open_checks) or "none")}</p>'
            f'<div class=legend><span style="background:#a7b6c2"></span>reference'
            f'<span style="background:#2b95d6"></span>current window</div>{_bars(f)}'
            f'<p class=muted>Drift statistic over time (dashed: threshold)</p>{_line(f.history)}</div>')
    perf = extra.get("performance")
    perf_html = ("<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
                                      for k, v in perf.items() if v == v) + "</table>") if perf else \
        "<p class=muted>No labels joined yet.</p>"
    if extra.get("performance_history"):
        perf_html += (f"<p class=muted>{html.escape(extra['performance_metric'])} of the labelled window over "
                      f"time</p>{_line(extra['performance_history'])}")
    ref = (f"reference {html.escape(reference.version)} ({reference.rows:,} rows from "
           f"{html.escape(reference.source)})") if reference else "no active reference"
    legend = "".join(f'<span style="background:{c}"></span>{k}' for k, c in KIND_COLORS.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>model-monitor report: {html.escape(model)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>{CSS}</style></head>
<body><h1>{html.escape(model)}</h1>
<p class=muted>{ref}; {totals['events']:,} events, {totals['rejects']:,} dead-lettered; generated
{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}</p>
<h2>Features, most drifted first</h2><div class=card><table id=ranking><tr><th>feature</th><th>stream</th>
<th>state</th><th>statistic</th><th>value</th><th>threshold</th><th>open checks</th></tr>{rows}</table></div>
<h2>Alerts</h2><div class=card><div class=legend>{legend}</div>{_timeline(alerts)}
<p class=muted>{len(alerts)} alert events (circles: OPEN, squares: RESOLVED)</p></div>
{_segments_html(extra.get("segments", {}))}{_explanations_html(alerts)}
<h2>Model performance (labelled window)</h2><div class=card>{perf_html}</div>
<h2>Per feature</h2><div class=grid>{''.join(cards)}</div></body></html>
"""


def _explanations_html(alerts: list[dict[str, Any]]) -> str:
    """Why the output moved: each prediction drift's ranking of the features (drift size x importance)."""
    rows = "".join(
        f'<tr><td>{html.escape(a["status"])}</td><td>{html.escape(a["kind"])} {html.escape(a["check"])} on '
        f'{html.escape(a["feature"])}</td><td><ol>'
        + "".join(f"<li>{html.escape(part.split('. ', 1)[-1])}</li>" for part in a["explanation"].split("; "))
        + f'</ol><span class=muted>{html.escape(a.get("explanation_basis", ""))}</span></td></tr>'
        for a in alerts if a.get("explanation") and a.get("status") in ("OPEN", "UPDATED"))
    if not rows:
        return ""
    return (f'<h2>Why the predictions moved</h2><div class=card><table id=explanations><tr><th>alert</th>'
            f'<th>what</th><th>features, by contribution</th></tr>{rows}</table></div>')


def _segments_html(segments: dict[str, Any]) -> str:
    """The segment table: each segment's events, worst drift and open incidents, troubled ones first."""
    if not segments:
        return ""
    rows = "".join(
        f'<tr><td>{html.escape(label)}</td><td>{seg["events"]:,}</td><td>{seg["window_events"]:,}</td>'
        f'<td>{html.escape(seg["worst_feature"])} {html.escape(seg["worst_statistic"])}</td>'
        f'<td>{(seg["worst_value"] / seg["worst_threshold"]) if seg["worst_threshold"] else 0.0:.2f}</td>'
        f'<td class="{"ALERT" if seg["incidents"] else "OK"}">{html.escape("; ".join(seg["incidents"])) or "OK"}'
        f'</td></tr>'
        for label, seg in sorted(segments.items(), key=lambda kv: (-len(kv[1]["incidents"]), kv[0])))
    return (f'<h2>Segments</h2><div class=card><table id=segments><tr><th>segment</th><th>events</th>'
            f'<th>in the window</th><th>worst drift</th><th>value / threshold</th><th>open incidents</th></tr>'
            f'{rows}</table></div>')


def _span(days: float | None) -> str:
    """A length of event time as people say it."""
    if days is None:
        return "no time"
    if days >= 2:
        return f"{days:.1f} days"
    hours = days * 24
    return f"{hours:.1f} hours" if hours >= 2 else f"{hours * 60:.0f} minutes"


def render_backtest(report: dict[str, Any]) -> str:
    """A backtest report (`monitor.app.backtest`) as a self-contained page in the report's style."""

    def cell(v: Any) -> str:
        return "—" if v is None else html.escape(f"{v:,}" if isinstance(v, int) else str(v))

    ref = report["reference"]
    ref_text = (f"reference {html.escape(ref['version'])} ({ref['rows']:,} rows"
                f"{', seasonal by ' + html.escape(ref['season']) if ref.get('season') else ''})"
                if ref else "no reference")
    clean = report["clean"]
    injected = "".join(
        f"<tr><td>{html.escape(i['injection'])}</td><td class=\"{'OK' if i['detected'] else 'ALERT'}\">"
        f"{'detected' if i['detected'] else 'missed'}</td><td>{cell(i.get('delay_s'))}</td>"
        f"<td>{cell(i.get('delay_events'))}</td><td>{cell(i.get('check'))}</td></tr>" for i in report["injected"])
    checks = "".join(
        f"<tr><td>{html.escape(c['feature'])}</td><td>{html.escape(c['check'])}</td><td>{html.escape(c['kind'])}</td>"
        f"<td>{c['opened']:,}</td><td>{c['opened_clean']:,}</td><td>{cell(c['per_million_clean'])}</td>"
        f"<td>{cell(c['per_day_clean'])}</td></tr>" for c in report["checks"])
    base = report["baselines"]
    n = report["summary"]["injected"]
    budget = report.get("budget")
    budget_html = ""
    if budget:
        d = budget.get("derived")
        how = (f"derived: drift p &lt; {d['drift_p_max']:.3g}, CUSUM h = {d['cusum_h']:.2f} over {d['checks']} checks"
               if d else "not derived (no reference event rate)")
        ok = budget.get("within")
        per = budget["false_alarms_per_day"]
        budget_html = (f"<p>Budget: {per:g} false alarm{'' if per == 1 else 's'} a day ({how}); observed on the "
                       f"clean part: <b class=\"{'OK' if ok else 'ALERT'}\">{cell(budget['observed_per_day_clean'])}"
                       f"</b> a day.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>model-monitor backtest: {html.escape(report['model'])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>{CSS}</style></head>
<body><h1>{html.escape(report['model'])}: backtest</h1>
<p class=muted>{html.escape(report['source'])}; {report['events']:,} events ({", ".join(report['streams'])}),
{report['rejects']:,} rejected, {report['unencodable']:,} not encodable; {ref_text}; windows of
{report['window']['blocks']} x {report['window']['block_ms'] / 1000:g} s</p>
<h2>Injected incidents: {report['summary']['detected']} of {n} detected</h2><div class=card><table id=injected>
<tr><th>injection</th><th>result</th><th>delay (s of event time)</th><th>delay (events)</th><th>first check</th></tr>
{injected}
<tr class=muted><td>baseline: always fire</td><td>{base['always_fire']['detected']} of {n}</td>
<td>{cell(base['always_fire']['delay_s'])}</td><td></td><td>{base['always_fire']['per_day_per_check']:,.0f}
alerts a day per check</td></tr>
<tr class=muted><td>baseline: never fire</td><td>0 of {n}</td><td>—</td><td></td><td>0 alerts</td></tr></table></div>
<h2>Alerts on the clean part</h2><div class=card><p>{clean['alerts']:,} alerts over {clean['events']:,} events
({_span(clean['days'])} of event time outside the injections): {cell(clean['per_million_values'])} per
million events, {cell(clean['per_day'])} a day.</p>{budget_html}<table id=checks><tr><th>feature</th><th>check</th>
<th>kind</th><th>opened</th><th>opened (clean)</th><th>per million values (clean)</th><th>per day (clean)</th>
</tr>{checks}</table></div></body></html>
"""
