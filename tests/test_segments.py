"""Issue 15 #2: segments. The window checks run per value of the model's segment fields as well as globally.

Streams made with numpy run through both stages in process (`monitor.app.replay`), exactly as the daemon
computes: a +1-sigma shift confined to one country carrying 5% of the traffic is an alert naming that segment
and feature within five of that segment's windows, with no global alert; a clean stream of 200,000 events
with segments on raises nothing; segments survive a state round trip and any batch split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.app.replay import replay
from monitor.core.profiles import ReferenceProfile
from monitor.core.types import Alert, RawRecord
from monitor.io.avro import AlertCodec
from monitor.profile.build import build_profile
from monitor.settings import Settings, load_settings
from tests.helpers import column_records

START = 1_780_000_000_000
STEP_MS = 50  # 20 events a second
BLOCK_MS, BLOCKS = 60_000, 10  # a window: 10 minutes, 12,000 events (600 of a 5% country)
COUNTRIES = {"US": 0.30, "DE": 0.15, "FR": 0.10, "GB": 0.10, "IT": 0.08, "ES": 0.07, "MT": 0.05, "NL": 0.05,
             "SE": 0.04, "PL": 0.03, "AT": 0.01, "BE": 0.01, "DK": 0.01}
SCHEMA = {"type": "record", "name": "Order", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "event_time", "type": "long"},
    {"name": "amount", "type": "double"}, {"name": "age", "type": "double"}, {"name": "items", "type": "double"},
    {"name": "country", "type": "string"}, {"name": "channel", "type": "string"}]}


def stream(n: int, seed: int, shift: tuple[str, int, float] | None = None, mt_dearer: float = 0.0
           ) -> dict[str, np.ndarray]:
    """`shift`: (country, from event, size in sigmas of amount) — amount moves for that country only.
    `mt_dearer`: MT's orders are always this much larger (a segment that differs by nature)."""
    rng = np.random.default_rng(seed)
    country = rng.choice(np.array(list(COUNTRIES)), n, p=np.array(list(COUNTRIES.values())))
    amount = rng.normal(80, 20, n) + np.where(country == "MT", mt_dearer, 0.0)
    if shift is not None:
        where, at, size = shift
        amount = amount + np.where((country == where) & (np.arange(n) >= at), size * 20, 0.0)
    return {"event_time": START + np.arange(n, dtype=np.int64) * STEP_MS, "amount": amount,
            "age": rng.normal(40, 12, n), "items": rng.poisson(3, n).astype(float), "country": country,
            "channel": rng.choice(np.array(["web", "app", "store"]), n, p=[0.5, 0.35, 0.15])}


def settings_for(tmp: Path, **model: Any) -> Settings:
    (tmp / "order.avsc").write_text(json.dumps(SCHEMA))
    cfg = {"window": {"by": "time", "block_ms": BLOCK_MS, "blocks": BLOCKS, "resolve_windows": 3},
           "models": [{"name": "shop", "id_field": "event_id", "time_field": "event_time",
                       "segments": ["country", "channel"], "max_segments": 10,
                       "features": {"topic": "shop.features", "schema": str(tmp / "order.avsc")}, **model}]}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return load_settings(tmp / "monitor.yaml", environ={})


def records(cols: dict[str, np.ndarray], partitions: int = 3) -> dict[tuple[str, int], list[RawRecord]]:
    return column_records(cols, "shop.features", SCHEMA, partitions)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    from monitor.cli.main import _model_specs

    tmp = tmp_path_factory.mktemp("ref")
    cols = stream(60_000, seed=1)
    specs = _model_specs(settings_for(tmp), "shop")
    return build_profile("shop", specs, {k: (v, np.zeros(len(v), bool)) for k, v in cols.items()}, version="v1",
                         source="train", sentinels={}, time_field="event_time",
                         feature_fields=[s.name for s in specs], segments=["country", "channel"], max_segments=10)


def run(tmp: Path, cols: dict[str, np.ndarray], ref: ReferenceProfile, batch: int = 500, stage2_batch: int = 1,
        **model: Any) -> Any:
    return replay(settings_for(tmp, **model), records(cols), {"shop": ref}, batch=batch, stage2_batch=stage2_batch)


def test_a_shift_in_one_small_country_is_an_alert_naming_it_and_no_global_one(
        tmp_path: Path, ref: ReferenceProfile) -> None:
    shift_at = 48_000  # 40 minutes in
    out = run(tmp_path, stream(150_000, seed=2, shift=("MT", shift_at, 1.0)), ref)
    alerts: list[Alert] = out.alerts + out.stage1_alerts
    opened = [a for a in alerts if a.status in ("OPEN", "UPDATED")]
    assert opened, "the shift went unseen"
    assert {(a.segment, a.feature, str(a.kind)) for a in opened} == {("country=MT", "amount", "DRIFT")}, \
        [(a.segment, a.feature, a.check) for a in opened]
    first = min(opened, key=lambda a: a.event_time or 0)
    delay_windows = ((first.event_time or 0) - (START + shift_at * STEP_MS)) / (BLOCK_MS * BLOCKS)
    assert 0 <= delay_windows <= 5, delay_windows
    assert first.evidence["segment"] == "country=MT" and first.source_partition == -1
    # The segment rides in the Avro alert (and in the incident's ids: not the global stream's).
    assert AlertCodec().decode(AlertCodec().encode(first)).segment == "country=MT"
    assert not [a for a in alerts if a.segment is None]


def test_a_clean_stream_of_200000_events_with_segments_raises_nothing(tmp_path: Path, ref: ReferenceProfile) -> None:
    out = run(tmp_path, stream(200_000, seed=3), ref)
    assert out.alerts + out.stage1_alerts == []
    # Every segment with events had a view in stage 2, at the stream's slots: 10 countries and the rest, and
    # the 3 channels (all of them among the 10 most frequent: their rest never had an event).
    views = {k for part in out.model_parts.values() for k in part.streams}
    assert len(views) == 1 + 11 + 3, sorted(views)
    assert "shop/features#country=(other)" in views and "shop/features#channel=store" in views
    stream_view = next(v for part in out.model_parts.values() for k, v in part.streams.items() if "#" not in k)
    for part in out.model_parts.values():
        for key, view in part.streams.items():
            assert view.closed_slot == stream_view.closed_slot, key


def test_segments_give_the_same_alerts_for_any_batch_size(tmp_path: Path, ref: ReferenceProfile) -> None:
    cols = stream(60_000, seed=4, shift=("DE", 20_000, 1.5))
    a = run(tmp_path / "a", cols, ref, batch=500) if (tmp_path / "a").mkdir() is None else None
    b = run(tmp_path / "b", cols, ref, batch=137) if (tmp_path / "b").mkdir() is None else None
    assert a is not None and b is not None
    codec = AlertCodec()
    assert [codec.encode(x) for x in a.alerts] == [codec.encode(x) for x in b.alerts]
    assert any(x.segment == "country=DE" for x in a.alerts)


def test_a_partitions_segments_survive_a_state_round_trip(tmp_path: Path, ref: ReferenceProfile) -> None:
    """Stage 1's children are stored under #seg/<segment>/ in the partition's fields and come back equal."""
    settings = settings_for(tmp_path)
    from monitor.app.pipeline import build_processors

    proc = build_processors(settings, {"shop": ref})["shop.features"]
    part = proc.new_partition(0)
    recs = records(stream(5_000, seed=5), partitions=1)[("shop.features", 0)]
    proc.process(part, recs)
    fields = part.to_fields()
    assert any(k.startswith("#seg/country=MT/") for k in fields)
    again = proc.new_partition(0)
    again.load_fields(fields)
    assert again.to_fields() == fields


def _stored(out: Any, settings: Settings) -> Any:
    """The replay's stage-2 state written to an in-memory store, as the daemon's checkpoints write it."""
    from monitor.io.state import MemoryStore

    store = MemoryStore()
    for bp, part in out.model_parts.items():
        snap = store.acquire(settings.blocks_topic, bp)
        store.commit(settings.blocks_topic, bp, snap.fence, None, 1, part.to_fields(), {})
    return store


def test_status_the_page_and_the_report_show_the_segment_table(tmp_path: Path, ref: ReferenceProfile) -> None:
    from monitor.ops.page import PageData, render_page
    from monitor.ops.report import collect, render
    from monitor.ops.status import collect_status

    settings = settings_for(tmp_path)
    out = run(tmp_path, stream(150_000, seed=2, shift=("MT", 48_000, 1.0)), ref)
    store = _stored(out, settings)
    status = collect_status(settings, store)
    segments = status["models"]["shop"]["segments"]
    assert len(segments) == 14 and "country=MT" in segments
    mt = segments["country=MT"]
    # Open: its incident names the drifted feature; its worst drift is amount's, over its threshold.
    assert [i for i in mt["incidents"] if "DRIFT amount" in i], mt
    assert mt["worst_feature"] == "amount" and mt["worst_value"] > mt["worst_threshold"]
    assert all(not s["incidents"] for label, s in segments.items() if label != "country=MT")
    page = render_page(PageData(status=status, ready=True, group="g", stages=["models"]))
    assert page.index("country=MT") < page.index("country=US")  # the troubled segment first
    features, extra = collect(settings, settings.model("shop"), store, ref, [])
    html = render("shop", ref, features, extra, [])
    assert '<table id=segments>' in html and "country=MT" in html


@pytest.mark.parametrize("stage2_batch", [1, 100_000])
def test_a_problem_of_the_whole_stream_is_one_incident_not_one_per_segment(tmp_path: Path, ref: ReferenceProfile,
                                                                          stage2_batch: int) -> None:
    """NaN in 30% of every country's `age` from 40 to 50 minutes: the stream's nan_rate incident, and no
    segment opens one of its own for it (its evidence would say explained_by) — also when stage 2 reads the
    whole backlog of blocks in one batch and closes every slot at once (each segment closes each slot right
    after the stream, seeing it as it was then, not as it is at the end)."""
    cols = stream(100_000, seed=6)
    burst = (np.arange(len(cols["age"])) >= 48_000) & (np.arange(len(cols["age"])) < 60_000)
    cols["age"] = np.where(burst & (np.random.default_rng(7).random(len(burst)) < 0.3), np.nan, cols["age"])
    out = run(tmp_path, cols, ref, stage2_batch=stage2_batch)
    opened = [(a.segment, a.feature, a.check) for a in out.alerts if a.status == "OPEN"]
    assert opened == [(None, "age", "nan_rate")], opened
    statuses = [a.status for a in out.alerts]
    assert statuses[0] == "OPEN" and statuses[-1] == "RESOLVED", statuses  # the burst ended: resolved


def test_a_segment_that_differs_by_nature_is_compared_with_its_own_reference(tmp_path: Path) -> None:
    """MT's orders are always 1.5 sigma larger, in training and live: with the segment's own profiles (built by
    reference build) nothing alerts; against the overall profile alone, MT's view would alert forever."""
    from monitor.cli.main import _model_specs

    specs = _model_specs(settings_for(tmp_path), "shop")
    cols = stream(60_000, seed=1, mt_dearer=30.0)
    columns = {k: (v, np.zeros(len(v), bool)) for k, v in cols.items()}
    common = {"version": "v1", "source": "train", "sentinels": {}, "time_field": "event_time",
              "feature_fields": [s.name for s in specs]}
    own = build_profile("shop", specs, columns, segments=["country", "channel"], max_segments=10, **common)
    mt = own.segment_profiles("country=MT")
    assert "country" not in mt and mt["amount"].mean == pytest.approx(float(
        np.mean(cols["amount"][cols["country"] == "MT"])))
    assert ReferenceProfile.from_json(own.to_json()).segment_profiles("country=MT") == mt
    live = stream(100_000, seed=8, mt_dearer=30.0)
    assert run(tmp_path, live, own).alerts == []
    overall_only = build_profile("shop", specs, columns, **common)
    flagged = {(a.segment, a.feature) for a in run(tmp_path, live, overall_only).alerts if a.status == "OPEN"}
    assert ("country=MT", "amount") in flagged
