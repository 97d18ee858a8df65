"""The model view in process: block summaries of any number of partitions merge into one incident per problem.

Both stages run through `monitor.app.replay` (stage 1 per partition, blocks through their Avro encoding,
stage 2 merging by event time); the daemon tests repeat the headline cases on Kafka and Redis.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.app.replay import Replay, replay
from monitor.cli.simulate import Incident, Simulator
from monitor.core.incidents import CheckResult, Incidents, WindowSpan
from monitor.core.profiles import ReferenceProfile
from monitor.core.types import AlertKind, RawRecord
from monitor.io.avro import AlertCodec, encode_plain, load_schema
from monitor.profile.build import build_profile, read_table
from monitor.settings import Settings, load_settings
from tests.helpers import EXAMPLES

ONSET, END, EVENTS = 10_000, 20_000, 30_000
INTERVAL_MS = 10  # the simulator's event-time step: 100 events a second
MODEL_VIEW: dict[str, Any] = {"window": {"by": "time", "block_ms": 1000, "blocks": 10, "resolve_windows": 3}}


def settings_for(tmp_path: Path, **top: Any) -> Settings:
    cfg = yaml.safe_load((EXAMPLES / "monitor.yaml").read_text())
    model = cfg["models"][0]
    for kind in ("features", "predictions", "labels"):
        model[kind]["schema"] = str(EXAMPLES / model[kind]["schema"])
    model["sentinels"] = {"days_since_login": [-1.0]}
    del model["labels"]
    cfg.update(MODEL_VIEW)
    cfg.update(top)
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path, environ={})


def build_reference(tmp: Path, **extra: Any) -> ReferenceProfile:
    """A profile of 100,000 simulated training rows (another seed than the live streams); `extra` for
    `build_profile` (feature_fields, segments, ...)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from monitor.cli.main import _model_specs

    rows = [{**f, **p} for feats, preds in Simulator(seed=100).batches(100_000, 20_000)
            for f, p in zip(feats, preds, strict=True)]
    path = tmp / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    settings = settings_for(tmp)
    return build_profile("churn", _model_specs(settings, "churn"), read_table(path), version="v1",
                         source=path.name, sentinels={"days_since_login": [-1.0]}, time_field="event_time", **extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    return build_reference(tmp_path_factory.mktemp("ref"))


def records_for(settings: Settings, partitions: int, incidents: list[str], events: int = EVENTS,
                seed: int = 300, scale: dict[str, float] | None = None,
                written_time: dict[int, Any] | None = None) -> dict[tuple[str, int], list[RawRecord]]:
    """The simulator's features and predictions, keyed by event id over `partitions` partitions.

    `written_time`: event index -> a function of the true event time giving the one the record carries (the
    Kafka timestamp stays the true one, as a producer's clock would have it)."""
    model = settings.models[0]
    assert model.predictions is not None
    topics = {"features": model.features.topic, "predictions": model.predictions.topic}
    schemas = {"features": load_schema(EXAMPLES / "churn_features.avsc"),
               "predictions": load_schema(EXAMPLES / "churn_predictions.avsc")}
    out: dict[tuple[str, int], list[RawRecord]] = {}
    sim = Simulator(seed=seed, incidents=[Incident.parse(i) for i in incidents])
    i = 0
    for feats, preds in sim.batches(events, 5_000):
        for f, p in zip(feats, preds, strict=True):
            if scale and i >= ONSET:
                f = {k: (v * scale[k] if k in scale and isinstance(v, float) else v) for k, v in f.items()}
            part = zlib.crc32(f["event_id"].encode()) % partitions
            stamp = int(f["event_time"])
            if written_time and i in written_time:
                f = {**f, "event_time": written_time[i](stamp)}
            for stream, row in (("features", f), ("predictions", p)):
                recs = out.setdefault((topics[stream], part), [])
                recs.append(RawRecord(topics[stream], part, len(recs), f["event_id"].encode(),
                                      encode_plain(schemas[stream], row), timestamp_ms=stamp))
            i += 1
    return out


def contract_model(tmp_path: Path, reference: ReferenceProfile) -> dict[str, Any]:
    """The example model with a data contract inferred from the reference (allowed categories, ranges)."""
    from monitor.core.schema import field_types
    from monitor.profile.contract import dump_contract, infer_contract

    settings = settings_for(tmp_path)
    model = settings.models[0]
    checks = {n: settings.checks_for(model, n) for n in reference.fields}
    path = tmp_path / "churn.contract.yaml"
    path.write_text(dump_contract(infer_contract(reference, field_types(load_schema(EXAMPLES /
                                                                                    "churn_features.avsc")), checks)))
    raw = yaml.safe_load((tmp_path / "monitor.yaml").read_text())["models"][0]
    raw["contract"] = str(path)
    return dict(raw)


def run(tmp_path: Path, reference: ReferenceProfile, partitions: int, incidents: list[str], **kw: Any) -> Replay:
    settings = settings_for(tmp_path, **kw.pop("top", {}))
    return replay(settings, records_for(settings, partitions, incidents, **kw), {"churn": reference})


def delay_in_events(alert_last_time: int | None) -> int:
    """Events of the stream from the onset up to the last event the alert's window covered."""
    assert alert_last_time is not None
    start = Simulator().start_time_ms + ONSET * INTERVAL_MS
    return (alert_last_time - start) // INTERVAL_MS + 1


@pytest.mark.parametrize("partitions", [1, 3, 12, 48])
def test_a_shift_is_one_incident_at_any_partition_count(tmp_path: Path, reference: ReferenceProfile,
                                                        partitions: int) -> None:
    """A 1-sigma shift of age that later reverts: one OPEN and one RESOLVED for age, nothing else, and the same
    detection delay (in events of the whole stream) on 1 partition as on 48."""
    out = run(tmp_path, reference, partitions, [f"shift:feature=age,start={ONSET},length={END - ONSET},size=1"])
    assert out.stage1_alerts == []  # per-partition alerts are off by default
    got = [(a.feature, a.status) for a in out.alerts if a.status != "UPDATED"]
    assert got == [("age", "OPEN"), ("age", "RESOLVED")], [(a.feature, a.check, a.status) for a in out.alerts]
    opened = out.alerts[0]
    assert opened.kind == AlertKind.DRIFT
    delay = delay_in_events(opened.window.last_event_time)
    assert 0 < delay <= 300, delay
    # The partitions whose data the firing window held: with 100-event slots, most of 48 (not every one).
    parts = [int(x) for x in opened.evidence["partitions"].split(",")]
    assert set(parts) <= set(range(partitions)) and len(parts) >= min(partitions, 30)
    resolved = out.alerts[-1]
    assert resolved.window.last_event_time is not None
    assert resolved.window.last_event_time > Simulator().start_time_ms + END * INTERVAL_MS  # after the revert
    # The merged counts are those of the whole stream, whatever the split.
    view = out.model_parts[0].streams["churn/features"]
    assert view.counts["events"] + view.features["age"].totals[0] * 0 <= EVENTS
    assert view.counts["late_blocks"] == 0 and view.counts["duplicate_blocks"] == 0


def test_the_delay_does_not_grow_with_partitions(tmp_path: Path, reference: ReferenceProfile) -> None:
    """The model stage sees the same merged slots whatever the split, so the first alert covers the same data."""
    shift = [f"shift:feature=age,start={ONSET},length={END - ONSET},size=1"]
    firsts = {}
    for p in (1, 48):
        (tmp_path / str(p)).mkdir()
        out = run(tmp_path / str(p), reference, p, shift, events=ONSET + 3_000)
        firsts[p] = delay_in_events(out.alerts[0].window.last_event_time)
    assert firsts[48] <= 1.5 * firsts[1] and firsts[48] <= 500, firsts


def test_clean_stream_on_48_partitions_raises_nothing(tmp_path: Path, reference: ReferenceProfile) -> None:
    """No incident at all on a clean stream split 48 ways (the daemon test repeats it on 200,000 events)."""
    out = run(tmp_path, reference, 48, [], events=60_000)
    assert [(a.feature, a.check, a.status) for a in out.alerts] == []


def test_nan_burst_and_new_category_name_their_partitions(tmp_path: Path, reference: ReferenceProfile) -> None:
    """One OPEN per incident, its evidence naming the partitions and checks that saw it."""
    out = run(tmp_path, reference, 12, [f"nan_burst:feature=credit_score,start={ONSET},length=3000,rate=0.3",
                                        f"new_category:feature=region,start={ONSET},length=3000,rate=0.3,value=atlantis"],
              top={"models": [contract_model(tmp_path, reference)]})
    opened = {(a.feature, a.kind): a for a in out.alerts if a.status == "OPEN"}
    assert set(opened) == {("credit_score", AlertKind.DATA_QUALITY), ("region", AlertKind.DATA_QUALITY)}, \
        [(a.feature, a.check, a.status) for a in out.alerts]
    nan = opened[("credit_score", AlertKind.DATA_QUALITY)]
    assert "nan_rate" in nan.evidence["checks"]
    assert nan.evidence["partitions"] == ",".join(str(p) for p in range(12))
    cat = opened[("region", AlertKind.DATA_QUALITY)]
    assert "unseen_category" in cat.evidence["checks"]
    assert "atlantis" in cat.evidence["new_values"]
    assert len(cat.evidence["partitions"].split(",")) == 12


def test_everything_broken_at_once_is_one_model_wide_incident(tmp_path: Path, reference: ReferenceProfile) -> None:
    """Every numeric field x100 at once (a unit change upstream): one incident for the model, not ten."""
    numeric = ["age", "monthly_charges", "total_charges", "session_minutes", "days_since_login", "data_usage_gb",
               "discount_rate", "credit_score"]
    out = run(tmp_path, reference, 12, [], events=ONSET + 3_000, scale=dict.fromkeys(numeric, 100.0))
    opened = [a for a in out.alerts if a.status == "OPEN"]
    assert [(a.feature, a.check) for a in opened] == [("*", "model_incident")], \
        [(a.feature, a.check) for a in opened]
    assert set(opened[0].evidence["features"].split(", ")) >= set(numeric)


def test_an_event_time_out_of_bounds_is_counted_and_never_freezes_the_windows(tmp_path: Path,
                                                                              reference: ReferenceProfile) -> None:
    """Issue 11 #4: one event time written in microseconds (event 20,000) and one two days late (event 21,000).
    They used to freeze the partition's time windows for good (the slot of the microsecond time never closed,
    every later event joined it), so a 30% NaN burst at 24,000 raised nothing. Now both are counted, placed at
    their partition's watermark, named by one DATA_QUALITY `event_time` incident, and the burst is caught."""
    settings = settings_for(tmp_path)
    day_ms = 86_400_000
    records = records_for(settings, 3, ["nan_burst:feature=credit_score,start=24000,length=3000,rate=0.3"],
                          written_time={20_000: lambda t: t * 1000, 21_000: lambda t: t - 2 * day_ms})
    out = replay(settings, records, {"churn": reference})
    opened = [(a.feature, a.check, a.kind) for a in out.alerts if a.status == "OPEN"]
    assert ("event_time", "event_time", AlertKind.DATA_QUALITY) in opened, opened
    assert ("credit_score", "nan_rate", AlertKind.DATA_QUALITY) in opened, opened
    bad = {p: part.bad_times for (topic, p), part in out.partitions.items() if topic.endswith("features")}
    assert sum(bad.values()) == 2, bad
    time_alert = next(a for a in out.alerts if a.check == "event_time" and a.status == "OPEN")
    assert {int(x) for x in time_alert.evidence["partitions"].split(",")} == {p for p, n in bad.items() if n}
    # The windows kept moving: every partition closed a block for each 1 s slot of the 300 s stream (the one
    # with the microsecond time used to stop at slot 200), and the model's last slot is near the end.
    assert all(part.block_seq >= 295 for part in out.partitions.values()), \
        {k: part.block_seq for k, part in out.partitions.items()}
    view = out.model_parts[0].streams["churn/features"]
    last = view.slots[-1][6]
    assert last >= Simulator().start_time_ms + (EVENTS - 200) * INTERVAL_MS, last
    assert view.counts["late_blocks"] == 0


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_a_stuck_feature_is_named_as_such_within_a_slot(tmp_path: Path, reference: ReferenceProfile,
                                                        partitions: int) -> None:
    """Issue 11 #18: a feature stuck at one value upstream. The `constant` check needed the whole window to
    hold that value (about 3,000 events); `stuck_value` opens as soon as a run of it is longer than the
    reference makes likely (20 values on any partition for a continuous feature), when that slot closes."""
    out = run(tmp_path, reference, partitions, [f"stuck:feature=monthly_charges,start={ONSET},length=3000"],
              events=ONSET + 4_000)
    # The first alert of the feature that names the check: its OPEN, or the UPDATED of an incident PSI opened
    # first (on 12 partitions a partition sees 20 of the stuck values after 240 events of the stream).
    named = [a for a in out.alerts if a.feature == "monthly_charges" and a.status in ("OPEN", "UPDATED")
             and "stuck_value" in a.evidence["checks"]]
    assert named, [(a.feature, a.check, a.status, a.evidence.get("checks")) for a in out.alerts]
    assert 0 < delay_in_events(named[0].window.last_event_time) <= 100 + 25 * partitions
    if partitions == 1:
        assert named[0].status == "OPEN" and named[0].kind == AlertKind.DATA_QUALITY
        assert named[0].evidence["value"] == "65"  # the simulator's stuck value: the feature's mean
    assert {a.feature for a in out.alerts} <= {"monthly_charges", "total_charges", "*"}, \
        [(a.feature, a.check, a.status) for a in out.alerts]


def test_incident_lifecycle_by_hand() -> None:
    """OPEN once, UPDATED only when the severity rises, RESOLVED after `resolve_windows` passing windows."""
    inc = Incidents("m", "features", "t", features=10, resolve_windows=2, model_share=0.3)
    warn = CheckResult("a", "nan_rate", AlertKind.DATA_QUALITY, 0.08, 0.05, True, partitions=(1,))
    crit = CheckResult("a", "nan_rate", AlertKind.DATA_QUALITY, 0.30, 0.05, True, partitions=(2,))
    ok = CheckResult("a", "nan_rate", AlertKind.DATA_QUALITY, 0.0, 0.05, False)
    steps = [[warn], [warn], [crit], [warn], [ok], [ok], [ok]]
    alerts = [inc.update(r, WindowSpan(i, i, i, 100)) for i, r in enumerate(steps)]
    assert [[a.status for a in step] for step in alerts] == [["OPEN"], [], ["UPDATED"], [], [], ["RESOLVED"], []]
    codec = AlertCodec()  # every status goes through schemas/alert.avsc and back unchanged
    assert all(codec.decode(codec.encode(a)) == a for step in alerts for a in step)
    # Deterministic ids: the same history gives the same alerts, byte for byte.
    again = Incidents("m", "features", "t", features=10, resolve_windows=2, model_share=0.3)
    ids = [[a.alert_id for a in again.update(r, WindowSpan(i, i, i, 100))] for i, r in enumerate(steps)]
    first = Incidents("m", "features", "t", features=10, resolve_windows=2, model_share=0.3)
    assert ids == [[a.alert_id for a in first.update(r, WindowSpan(i, i, i, 100))] for i, r in enumerate(steps)]


def test_a_borderline_drift_does_not_flap() -> None:
    """Issue 11 #16: PSI hovering around its threshold opened and resolved a check four times in 3,000 events.
    With a margin, a check counts toward RESOLVED only when clear of its threshold by `resolve_margin`: just
    under it keeps the incident open; well under it resolves it. Without a margin it flaps."""
    def run(margin: float) -> list[str]:
        inc = Incidents("m", "features", "t", features=10, resolve_windows=2, model_share=0.3,
                        resolve_margin=margin)
        statistics = [0.21, 0.19, 0.18, 0.19, 0.22, 0.19, 0.19, 0.18, 0.21, 0.19, 0.19, 0.05, 0.05]
        out = []
        for i, psi in enumerate(statistics):
            r = CheckResult("a", "psi", AlertKind.DRIFT, psi, 0.2, psi > 0.2, partitions=(0,))
            out += [a.status for a in inc.update([r], WindowSpan(i, i, i, 100))]
        return out

    assert run(0.2) == ["OPEN", "RESOLVED"]  # opened once; resolved once well under 0.16
    assert run(0.0).count("OPEN") == 3  # the flapping a margin prevents


def test_merged_totals_equal_the_stream_totals(tmp_path: Path, reference: ReferenceProfile) -> None:
    """The model stage's counts and sums are the stream's, computed here from the rows with numpy."""
    settings = settings_for(tmp_path)
    records = records_for(settings, 7, [], events=8_000)
    out = replay(settings, records, {"churn": reference})
    view = out.model_parts[0].streams["churn/features"]
    # What stage 2 has seen: every block stage 1 closed (the last open block of each partition is still open).
    closed = sum(p.events - (p.open_meta[4] if p.open_meta else 0) for (t, _), p in out.partitions.items()
                 if t == settings.models[0].features.topic)
    assert view.counts["events"] == closed
    ages = []
    for (topic, _p), part in out.partitions.items():
        if topic != settings.models[0].features.topic:
            continue
        schema = load_schema(EXAMPLES / "churn_features.avsc")
        import io

        from fastavro import schemaless_reader

        last_open = part.open_meta[0] if part.open_meta else None
        for rec in records[(topic, _p)]:
            if last_open is not None and rec.offset >= last_open:
                break
            row = schemaless_reader(io.BytesIO(rec.value or b""), schema, None)
            ages.append(row["age"])
    total = view.features["age"].totals
    assert int(total[0]) == len(ages)
    assert float(total[5]) == pytest.approx(float(np.sum(ages)), rel=1e-12)


def test_a_silent_partition_stops_holding_the_watermark_and_its_late_blocks_are_counted(
        tmp_path: Path, reference: ReferenceProfile) -> None:
    """Partition 2 goes quiet after 3,000 events and holds the watermark until stage 1 says it is idle (read to
    its end, nothing for idle_timeout_s); then slots close without it. When its old events come after all, its
    blocks count as late and the closed slots are not reopened."""
    from monitor.app.models import ModelProcessor
    from monitor.app.pipeline import StreamProcessor, build_processors

    settings = settings_for(tmp_path, model_view={"idle_timeout_s": 5.0, "grace_ms": 0})
    topic = settings.models[0].features.topic
    schema = load_schema(EXAMPLES / "churn_features.avsc")
    rows = [f for feats, _ in Simulator(seed=8).batches(12_000, 4_000) for f in feats]
    by_part: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 2: []}
    for i, f in enumerate(rows):
        by_part[i % 3].append(f)
    held_back = [f for f in by_part[2] if f["event_time"] >= rows[3_000]["event_time"]]
    by_part[2] = [f for f in by_part[2] if f["event_time"] < rows[3_000]["event_time"]]
    processors = build_processors(settings, {"churn": reference})
    proc = processors[topic]
    assert isinstance(proc, StreamProcessor)
    models = ModelProcessor(settings, {topic: proc})
    models.input_partitions = {topic: 3}
    parts = {p: proc.new_partition(p, 3) for p in range(3)}

    def blocks_of(p: int, feats: list[dict[str, Any]], first_offset: int) -> list[dict[str, Any]]:
        recs = [RawRecord(topic, p, first_offset + k, None, encode_plain(schema, f)) for k, f in enumerate(feats)]
        return proc.process(parts[p], recs).blocks

    released = sorted((b for p in range(3) for b in blocks_of(p, by_part[p], 0)),
                      key=lambda b: (b["progress_time"], b["partition"]))
    mpart = models.new_partition(0)
    offset = 0

    def send(block: dict[str, Any]) -> None:
        nonlocal offset
        models.process(mpart, [RawRecord(settings.blocks_topic, 0, offset, b"churn", models.codec.encode([block]))])
        offset += 1

    # Partition 2's last block is out; stage 1 then finds it read to its end and quiet, and says so.
    last_of_2 = max(i for i, b in enumerate(released) if b["partition"] == 2)
    parts[2].signal_idle()
    *flushed, idle = parts[2].emitted  # its open block goes out first, then the signal
    parts[2].emitted = []
    assert idle["idle"] is True and [b["partition"] for b in flushed] == [2] and flushed[0]["seq"] >= 0
    for i, b in enumerate(released):
        send(b)
        if i == last_of_2 + 30:
            for block in [*flushed, idle]:
                send(block)
        if i == last_of_2 + 29:
            stuck = mpart.streams["churn/features"].closed_slot  # before the signal, partition 2 holds it
    view = mpart.streams["churn/features"]
    last_slot_of_2 = max(b["slot"] for b in released if b["partition"] == 2)
    assert stuck is not None and stuck <= last_slot_of_2
    assert view.closed_slot is not None and view.closed_slot > last_slot_of_2 + 50  # windows kept closing
    assert view.counts["late_blocks"] == 0
    closed_before = view.closed_slot
    window_before = [s[0] for s in view.slots]
    # Partition 2's old events arrive at last: every block of them is late, and nothing reopens.
    late = blocks_of(2, held_back, len(by_part[2]))
    assert late[0]["idle"] is False  # it holds the watermark again from its first new event
    for b in late:
        send(b)
    data = [b for b in late if b["seq"] >= 0]
    assert view.counts["late_blocks"] == len(data) > 0
    assert view.counts["late_events"] == sum(b["events"] for b in data)
    assert view.closed_slot == closed_before and [s[0] for s in view.slots] == window_before


def test_status_names_the_checks_a_full_window_cannot_run_and_what_to_change(tmp_path: Path,
                                                                            reference: ReferenceProfile) -> None:
    """Issue 17: windows of 10 slots of 1 s at 100 events a second hold 1,000 events; with the rate checks'
    `min_window_count` at 5,000 they can never run. `status` names them with the change that would let them
    (slots 5 times longer or 5 times more of them: 5,000 ms or 50 blocks), and not the drift check (200)."""
    from monitor.core.reach import expected_window_events
    from monitor.io.state import MemoryStore
    from monitor.ops.status import collect_status

    settings = settings_for(tmp_path, defaults={"min_window_count": 5000})
    result = replay(settings, records_for(settings, 3, [], events=3_000), {"churn": reference})
    store = MemoryStore()
    for bp, mpart in result.model_parts.items():
        fence = store.acquire(settings.blocks_topic, bp).fence
        store.commit(settings.blocks_topic, bp, fence, None, 1, mpart.to_fields(), {}, [])
    found = collect_status(settings, store)["models"]["churn"]["unreachable"]
    assert {(u["stream"], u["setting"]) for u in found} == {("features", "min_window_count"),
                                                             ("predictions", "min_window_count")}
    features = next(u for u in found if u["stream"] == "features")
    assert features["needs"] == 5000 and features["window_events"] == 1000  # 100 events/s x 10 s
    assert "window.block_ms to at least 5000 or window.blocks to at least 50" in features["advice"]
    # At start, from a rate: the same window at the reference's 100 events a second.
    assert expected_window_events(settings.window, 100.0, 1) == 1000
    assert expected_window_events(settings.window, 100.0, 4) == 250  # per-partition windows: their share


def test_a_significant_drift_under_the_effect_floor_is_possible_and_alerted_only_when_asked(
        tmp_path: Path, reference: ReferenceProfile) -> None:
    """Issue 14 #4: a 0.2-sigma shift of age over 10,000-event windows: its chi-squared p-value passes the gate
    but PSI stays under the effect floor. By default no alert, and the model view records it as "possible"
    (status, history); with alerts.send_possible an incident opens at severity POSSIBLE and rises to WARNING
    (UPDATED) when the shift grows to 1 sigma. CUSUM (k = 0.5 sigma) is off here: it would catch the 1 sigma."""
    from monitor.core.types import Severity

    incidents = ["shift:feature=age,start=10000,size=0.2"]
    top = {"window": {"by": "time", "block_ms": 10_000, "blocks": 10, "resolve_windows": 3},
           "defaults": {"cusum": {"enabled": False}}}
    settings = settings_for(tmp_path, **top)
    quiet = replay(settings, records_for(settings, 3, incidents), {"churn": reference})
    assert [a for a in quiet.alerts if a.feature == "age"] == []
    view = next(iter(quiet.model_parts.values())).streams["churn/features"]
    _check, value, threshold, level = view.last_drift["age"]
    assert level == "possible" and value < threshold, view.last_drift["age"]

    model = settings.models[0]
    loud = settings.model_copy(update={"models": [model.model_copy(update={
        "alerts": model.alerts.model_copy(update={"send_possible": True})})]})
    grown = [*incidents, "shift:feature=age,start=20000,size=0.8"]
    out = replay(loud, records_for(loud, 3, grown), {"churn": reference})
    age = [(a.status, a.severity) for a in out.alerts if a.feature == "age"]
    assert age[:2] == [("OPEN", Severity.POSSIBLE), ("UPDATED", Severity.WARNING)], age
    first = next(a for a in out.alerts if a.feature == "age")
    assert first.evidence["level"] == "possible" and first.statistic < first.threshold
    assert AlertCodec().decode(AlertCodec().encode(first)).severity == Severity.POSSIBLE
