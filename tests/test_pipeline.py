"""The pure core: decode, update per-partition state, evaluate; state round trips change nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.app.pipeline import StreamProcessor, build_processors
from monitor.cli.simulate import Incident, Simulator
from monitor.core.types import RawRecord
from monitor.io.avro import encode_plain
from monitor.settings import Settings, load_settings
from tests.helpers import EXAMPLES, PER_PARTITION, assert_close, comparable_state


def _settings(tmp_path: Path, **defaults: Any) -> Settings:
    cfg = yaml.safe_load((EXAMPLES / "monitor.yaml").read_text())
    for model in cfg["models"]:
        for kind in ("features", "predictions", "labels"):
            model[kind]["schema"] = str(EXAMPLES / model[kind]["schema"])
    cfg["defaults"] = defaults
    cfg.update(PER_PARTITION)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path, environ={})


def _records(proc: StreamProcessor, rows: list[dict[str, Any]], start: int = 0) -> list[RawRecord]:
    schema = proc.decoder.reader_schema
    return [RawRecord(proc.topic, 0, start + i, None, encode_plain(schema, r)) for i, r in enumerate(rows)]


def _feature_rows(events: int, seed: int, incidents: list[str] = []) -> list[dict[str, Any]]:  # noqa: B006
    sim = Simulator(seed=seed, incidents=[Incident.parse(i) for i in incidents])
    return [f for feats, _ in sim.batches(events) for f in feats]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stationary_streams_raise_no_alert(tmp_path: Path, seed: int) -> None:
    """30,000 clean events on one partition: no alert from any check with the default settings."""
    proc = build_processors(_settings(tmp_path))["churn.features"]
    part = proc.new_partition(0)
    outcome = proc.process(part, _records(proc, _feature_rows(30_000, seed)))
    assert outcome.alerts == [] and outcome.valid == 30_000


def test_state_round_trips_between_batches_change_nothing(tmp_path: Path) -> None:
    """Random micro-batches with the state saved and reloaded between them give the same alerts and counts."""
    proc = build_processors(_settings(tmp_path))["churn.features"]
    rows = _feature_rows(24_000, 4, ["shift:feature=age,start=12000,size=1.0",
                                     "nan_burst:feature=credit_score,start=5000,length=2000,rate=0.3"])
    records = _records(proc, rows)
    whole = proc.new_partition(0)
    expected = proc.process(whole, records).alerts
    assert expected

    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(records)), 60, replace=False)).tolist()
    got = []
    part = proc.new_partition(0)
    for lo, hi in zip([0, *cuts], [*cuts, len(records)], strict=True):
        got += proc.process(part, records[lo:hi]).alerts
        fresh = proc.new_partition(0)
        fresh.load_fields(part.to_fields())
        part = fresh
    assert [a.alert_id for a in got] == [a.alert_id for a in expected]
    assert [a.statistic for a in got] == pytest.approx([a.statistic for a in expected], rel=1e-9)
    # The whole state, not only its keys (issue 11 #13): windows, detectors, lifecycle, recent ids.
    assert_close(comparable_state(part), comparable_state(whole), "split vs whole")
    for name, feat in whole.features.items():
        assert part.features[name].summary()["count"] == feat.summary()["count"] == 24_000


def test_nan_rate_fires_at_the_first_block_whose_window_crosses(tmp_path: Path) -> None:
    """With blocks of 100 and a window of 10 blocks, the alert comes at the first block close whose window
    NaN rate exceeds 5%, with that rate as its statistic (worked out by hand from the injected NaNs)."""
    proc = build_processors(_settings(tmp_path))["churn.features"]
    rows = _feature_rows(3_000, 5)
    nan_at = list(range(1500, 1800, 4))  # 75 NaNs, one in every 4 events from 1500
    for i in nan_at:
        rows[i]["age"] = math.nan
    part = proc.new_partition(0)
    alerts = [a for a in proc.process(part, _records(proc, rows)).alerts if a.feature == "age"]
    assert [(a.check, a.status) for a in alerts] == [("nan_rate", "OPEN"), ("nan_rate", "RESOLVED")]
    # Block k closes at event 100k+99; its window spans events max(0, 100(k-9)) .. 100k+99.
    for k in range(30):
        first, last = max(0, 100 * (k - 9)), 100 * k + 99
        rate = sum(first <= i <= last for i in nan_at) / (last - first + 1)
        if last + 1 >= 200 and rate > 0.05:
            break
    assert alerts[0].source_offset == last
    assert alerts[0].window.first_offset == first and alerts[0].window.count == last - first + 1
    assert alerts[0].statistic == pytest.approx(rate, abs=1e-15)
    # RESOLVED at the third evaluation in a row (resolve_windows=3) whose window rate is back under 5%.
    below = 0
    for k2 in range(k + 1, 30):
        first, last = max(0, 100 * (k2 - 9)), 100 * k2 + 99
        below = below + 1 if sum(first <= i <= last for i in nan_at) / (last - first + 1) <= 0.05 else 0
        if below == 3:
            break
    assert alerts[1].source_offset == last and alerts[1].severity == "INFO"


def test_a_persistent_problem_opens_once(tmp_path: Path) -> None:
    """A window check that keeps failing raises one OPEN alert, not one per window; state survives a reload."""
    proc = build_processors(_settings(tmp_path))["churn.features"]
    rows = _feature_rows(8_000, 6)
    for r in rows[1000:]:
        r["age"] = math.nan
    records = _records(proc, rows)
    part = proc.new_partition(0)
    first = [a for a in proc.process(part, records[:4000]).alerts if a.check == "nan_rate"]
    restored = proc.new_partition(0)
    restored.load_fields(part.to_fields())
    second = [a for a in proc.process(restored, records[4000:]).alerts if a.check == "nan_rate"]
    assert [a.status for a in first] == ["OPEN"] and second == []
    assert "age/nan_rate" in restored.open_alerts


@pytest.mark.parametrize("cut", [None, 337, 2500])
def test_a_lasting_change_is_one_detector_incident_until_the_stream_is_stable(tmp_path: Path,
                                                                              cut: int | None) -> None:
    """Issue 17: a mean that flips every 500 events from event 2,000 to 6,000 (Page-Hinkley fires and re-arms
    again and again), then a normal stream, then a second change from 9,000: one OPEN per change, a RESOLVED
    between them once the detector stayed quiet for `resolve_windows` windows, not a page after every
    cooldown; the same for any batch split (`cut`: batches of that many events)."""
    proc = build_processors(_settings(tmp_path))["churn.features"]
    rows = _feature_rows(12_000, 8)
    for i, r in enumerate(rows):
        if 2000 <= i < 6000 or i >= 9000:
            r["age"] += 30.0 * ((i - 2000) // 500 % 2 * 2 - 1)
    part = proc.new_partition(0)
    records = _records(proc, rows)
    size = cut or len(records)
    alerts = [a for lo in range(0, len(records), size) for a in proc.process(part, records[lo:lo + size]).alerts
              if a.check == "page_hinkley"]
    assert [a.status for a in alerts] == ["OPEN", "RESOLVED", "OPEN"]
    opened, resolved, again = (a.source_offset for a in alerts)
    assert 2000 <= opened < 2600 and 6000 <= resolved < 9000 and 9000 <= again < 9600


def test_undecodable_records_are_rejected_and_counted(tmp_path: Path) -> None:
    """Bad records come back as rejects with reasons; valid ones are processed; offsets advance past all."""
    proc = build_processors(_settings(tmp_path))["churn.features"]
    rows = _feature_rows(10, 7)
    records = _records(proc, rows)
    bad = [RawRecord(proc.topic, 0, 10, None, b""), RawRecord(proc.topic, 0, 11, None, records[0].value + b"!")]
    part = proc.new_partition(0)
    outcome = proc.process(part, records + bad)
    assert outcome.valid == 10 and outcome.next_offset == 12
    assert [r.reason for r in outcome.rejects] == ["empty_payload", "trailing_bytes"]
    assert part.rejects == 2 and part.events == 10


def test_event_time_blocks(tmp_path: Path) -> None:
    """Blocks by event time: a block holds one `block_ms` span; a late event joins the open block."""
    settings = _settings(tmp_path)
    window = settings.window.model_copy(update={"by": "time", "block_ms": 2_000, "blocks": 3})
    settings = settings.model_copy(update={"window": window})
    proc = build_processors(settings)["churn.features"]
    rows = _feature_rows(3_000, 9)  # 10 ms apart: 200 events per 2-second block
    rows[1600]["event_time"] = rows[0]["event_time"]  # late: joins the block open at the time (1400..1599)
    for i in range(1200, 1400):
        rows[i]["age"] = math.nan  # exactly the 7th block (events 1200..1399)
    part = proc.new_partition(0)
    records = _records(proc, rows)
    alerts = [a for a in proc.process(part, records[:1700]).alerts if a.check == "nan_rate"]
    assert part.closed_meta[-1][4] == 201 and part.open_meta is not None and part.open_meta[4] == 99
    alerts += [a for a in proc.process(part, records[1700:]).alerts if a.check == "nan_rate"]
    opened = alerts[0]
    # At the close of block 7 (events 1200..1399) the window is blocks 5..7 = events 800..1399, 200 NaN of 600.
    assert opened.status == "OPEN" and opened.source_offset == 1399
    assert opened.window.first_offset == 800 and opened.window.count == 600
    assert opened.statistic == pytest.approx(200 / 600)
    assert [m[4] for m in part.closed_meta] == [200, 200, 200]


def test_hard_limits_hold_alike_for_the_compiled_decoder_and_fastavro_rows(tmp_path: Path) -> None:
    """The same records through a schema the compiled decoder reads and one it leaves to fastavro (an array
    field): the same rejects, reasons and messages, in the same order, and the same valid events."""
    from fastavro import parse_schema

    from tests.helpers import small_model

    outcomes = []
    for extra in ([], [{"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}]):
        folder = tmp_path / str(len(extra))
        folder.mkdir()
        proc, _models = small_model(folder, [{"name": "x", "type": ["null", "double"], "default": None},
                                             {"name": "c", "type": "string"}, *extra])
        assert (proc.columnar is None) == bool(extra)
        schema = parse_schema(json.loads((folder / "r.avsc").read_text()))
        values = [1.0, 2e15, None, -3e15, 4.0]
        cats = ["a", "b", "c" * 5000, "d", "é" * 4097]
        records = [RawRecord("m.f", 0, i, 1_000 + i, encode_plain(schema, {
            "event_id": f"e{i}", "event_time": 1_000 + i, "x": v, "c": c, **({"tags": []} if extra else {})}))
            for i, (v, c) in enumerate(zip(values, cats, strict=True))]
        batch, rejects, _ = proc.decode(records)
        outcomes.append(([(r.record.offset, r.reason, r.message) for r in rejects], batch.offsets.tolist()))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == [(1, "value_too_large", "x exceeds +-1e+15"),
                              (2, "string_too_long", "c is longer than 4096 characters"),
                              (3, "value_too_large", "x exceeds +-1e+15"),
                              (4, "string_too_long", "c is longer than 4096 characters")]
    assert outcomes[0][1] == [0]
