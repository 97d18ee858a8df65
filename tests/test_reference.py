"""Reference inputs: CSV (with NaN and empty cells) and Avro container files read into the same profile."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest

from monitor.core.schema import FieldSpec
from monitor.errors import ConfigError, MonitorError
from monitor.profile.build import build_profile, quantile_edges, read_table
from monitor.profile.store import MemoryReferenceStore

SPECS = [FieldSpec("x", "numeric", True), FieldSpec("c", "categorical", True)]


def _profile(path: Path):  # type: ignore[no-untyped-def]
    return build_profile("m", SPECS, read_table(path), version="v1", source=path.name, sentinels={"x": [-1.0]},
                         time_field="t")


def test_csv_and_avro_give_the_same_profile(tmp_path: Path) -> None:
    """Null, NaN and sentinel rates, bins and categories agree, counted by hand from the rows."""
    rows = [{"x": 1.0, "c": "a", "t": 0}, {"x": None, "c": "b", "t": 1000}, {"x": math.nan, "c": "a", "t": 2000},
            {"x": -1.0, "c": None, "t": 3000}, {"x": 3.0, "c": "a", "t": 4000}]
    csv = tmp_path / "ref.csv"
    csv.write_text("x,c,t\n1.0,a,0\n,b,1000\nNaN,a,2000\n-1,,3000\n3.0,a,4000\n")
    avro = tmp_path / "ref.avro"
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": ["null", "double"]},
                                                        {"name": "c", "type": ["null", "string"]},
                                                        {"name": "t", "type": "long"}]}
    with avro.open("wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), rows)
    for path in (csv, avro):
        p = _profile(path)
        x, c = p.fields["x"], p.fields["c"]
        assert p.rows == 5 and p.event_rate == pytest.approx(4 / 4.0)
        assert (x.null_rate, x.nan_rate, x.sentinel_rate) == (0.2, 0.2, 0.2)
        assert x.edges == [2.0] and x.fractions == [0.5, 0.5] and (x.min, x.max) == (1.0, 3.0)
        assert x.top_share == 0.5  # 1.0 and 3.0 once each among the clean values (stuck_value's reference)
        assert c.null_rate == 0.2 and c.categories == ["a", "b"] and c.fractions == [0.75, 0.25, 0.0]


def test_quantile_edges_for_continuous_data() -> None:
    """Continuous data: 49 interior edges at the 2%, 4%, ... quantiles, about 2% of the values per bin."""
    x = np.random.default_rng(0).normal(size=100_000)
    edges = quantile_edges(x)
    assert len(edges) == 49
    assert edges.tolist() == pytest.approx(np.quantile(x, np.arange(1, 50) / 50).tolist())


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"expected \.csv"):
        read_table(tmp_path / "f.txt")
    (tmp_path / "other.csv").write_text("y\n1\n")
    with pytest.raises(ConfigError, match="none of the monitored fields"):
        _profile(tmp_path / "other.csv")


def test_profiles_are_immutable_and_one_is_active(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("x,c,t\n1,a,0\n2,b,1\n")
    store = MemoryReferenceStore()
    profile = _profile(tmp_path / "r.csv")
    store.put(profile)
    with pytest.raises(MonitorError, match="immutable"):
        store.put(profile)
    assert store.active_version("m") is None
    store.activate("m", "v1")
    assert store.active_version("m") == "v1" and store.get("m", "v1") == profile
    with pytest.raises(MonitorError):
        store.activate("m", "v9")


LOGICAL_SCHEMA = {"type": "record", "name": "L", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "at", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}]},
    {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
]}


def _logical_rows(n: int) -> list[dict[str, Any]]:
    import datetime as dt
    import uuid
    from decimal import Decimal

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return [{"event_id": f"e{i}", "event_time": start + dt.timedelta(milliseconds=1500 * i),
             "day": dt.date(2026, 1, 1) + dt.timedelta(days=i % 7), "at": dt.time(0, i % 60, 1),
             "amount": None if i % 10 == 0 else Decimal(f"{i}.25"), "ref": uuid.UUID(int=i % 3)}
            for i in range(40)]


def test_logical_types_in_an_avro_reference_file_and_in_the_stream(tmp_path: Path) -> None:
    """Issue 11 #11: `reference build --input train.avro` failed on a timestamp-millis field (fastavro gives a
    datetime). Every logical type fastavro returns is a number (or text, for a uuid) in the reference file and
    in the stream alike, in the units Avro stores: epoch ms, days since the epoch, ms since midnight, the
    decimal's value."""
    from monitor.core.schema import infer_fields
    from monitor.core.sketches import SUM, N
    from monitor.core.types import RawRecord
    from monitor.io.avro import encode_plain
    from tests.helpers import small_model

    rows = _logical_rows(40)
    avro = tmp_path / "train.avro"
    with avro.open("wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(LOGICAL_SCHEMA), rows)
    specs = infer_fields(LOGICAL_SCHEMA, skip={"event_id", "event_time"})
    assert [(s.name, s.kind) for s in specs] == [("day", "numeric"), ("at", "numeric"), ("amount", "numeric"),
                                                 ("ref", "categorical")]
    profile = build_profile("m", specs, read_table(avro), version="v1", source="train.avro", sentinels={},
                            time_field="event_time")
    # By hand: days 20454..20460 (2026-01-01 is day 20454), i minutes + 1 s after midnight, amounts i + 0.25.
    assert (profile.fields["day"].min, profile.fields["day"].max) == (20454.0, 20460.0)
    assert profile.fields["at"].max == 39 * 60_000 + 1000  # i < 40
    amounts = [i + 0.25 for i in range(40) if i % 10]
    assert profile.fields["amount"].mean == pytest.approx(sum(amounts) / len(amounts))
    assert profile.fields["amount"].null_rate == 0.1
    assert profile.fields["ref"].categories == ["00000000-0000-0000-0000-000000000000",
                                                "00000000-0000-0000-0000-000000000001",
                                                "00000000-0000-0000-0000-000000000002"]
    assert profile.event_rate == pytest.approx(39 / (39 * 1.5))

    proc, _models = small_model(tmp_path, [f for f in LOGICAL_SCHEMA["fields"][2:]])
    schema = proc.decoder.reader_schema
    # small_model's event_time is a plain long: the time as epoch ms; the other logical types as written.
    records = [RawRecord("m.f", 0, i, None, encode_plain(schema, {**r, "event_time": 1_767_225_600_000 + 1500 * i}))
               for i, r in enumerate(rows)]
    part = proc.new_partition(0)
    proc.process(part, records)  # raised TypeError (a date is not a float) before
    totals = part.features["amount"].totals
    assert totals[N] == 40 and totals[SUM] == pytest.approx(sum(amounts))
    assert part.features["day"].totals[SUM] == pytest.approx(sum(20454 + i % 7 for i in range(40)))


def test_temporal_parquet_and_csv_columns_are_numbers(tmp_path: Path) -> None:
    """Issue 11 #15: a Parquet timestamp column failed (`could not convert string to float`); so did a CSV
    column pyarrow reads as a timestamp. Both are epoch ms now, dates days, decimals their values."""
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    start = dt.datetime(2026, 1, 1)
    table = pa.table({
        "ts": pa.array([start + dt.timedelta(seconds=2 * i) for i in range(5)], pa.timestamp("us")),
        "day": pa.array([dt.date(1970, 1, 1 + i) for i in range(5)], pa.date32()),
        "amount": pa.array([Decimal(f"{i}.50") for i in range(5)], pa.decimal128(5, 2)),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("ts,amount\n" + "".join(
        f"{(start + dt.timedelta(seconds=2 * i)).isoformat(sep=' ')}.000,{i}.5\n" for i in range(5)))
    epoch_ms = int(start.replace(tzinfo=dt.UTC).timestamp()) * 1000
    for path in (tmp_path / "t.parquet", tmp_path / "t.csv"):
        cols = read_table(path)
        assert np.asarray(cols["ts"][0], dtype=float).tolist() == [epoch_ms + 2000 * i for i in range(5)], path
        assert np.asarray(cols["amount"][0], dtype=float).tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert np.asarray(read_table(tmp_path / "t.parquet")["day"][0], dtype=float).tolist() == [0, 1, 2, 3, 4]
    p = build_profile("m", [FieldSpec("amount", "numeric", False)], read_table(tmp_path / "t.parquet"),
                      version="v1", source="t.parquet", sentinels={}, time_field="ts")
    assert p.event_rate == pytest.approx(4 / 8.0)


@pytest.mark.integration
def test_a_failed_build_uses_no_version_number(tmp_path: Path, redis_url: str, unique: str) -> None:
    """Issue 11 #15: the first good build after two failed ones was `v3`; a version is taken only on success.
    (The CLI runs in a process of its own: in this one, its logging setup would outlive the test.)"""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    from monitor.cli.simulate import Simulator
    from tests.helpers import _clean_env
    from tests.test_model_view import settings_for

    settings_for(tmp_path, redis_url=redis_url, key_prefix=f"v{unique}")
    config = str(tmp_path / "monitor.yaml")

    def build(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor", "reference", "build", "--model", "churn",
                               "--input", str(path), "--config", config], capture_output=True, text=True,
                              env=_clean_env())

    bad = tmp_path / "bad.csv"
    bad.write_text("nothing,useful\n1,2\n")
    for _ in range(2):
        assert build(bad).returncode == 2
    rows = [{**f, **p} for feats, preds in Simulator(seed=5).batches(2_000, 1_000)
            for f, p in zip(feats, preds, strict=True)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    good = build(tmp_path / "train.parquet")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "v1"


def test_integer_and_boolean_categories_are_spelled_alike_in_every_reference_format_and_the_stream(
        tmp_path: Path) -> None:
    """Issue 17: an integer column listed as categorical (with a gap) was profiled from CSV as "1.0", "2.0"
    while the stream's Avro int says "1": every event would have been an unseen category. CSV, Parquet, Avro
    and the stream now give the same categories: "1", "2", "3" and "True", "False" (counted by hand)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from monitor.core.types import RawRecord
    from monitor.io.avro import encode_plain
    from tests.helpers import small_model

    plans = [1, 2, None, 1, 3, 1, 2]
    flags = [True, False, True, None, True, True, False]
    rows = [{"plan": p, "promo": f} for p, f in zip(plans, flags, strict=True)]
    schema = {"type": "record", "name": "R", "fields": [{"name": "plan", "type": ["null", "int"]},
                                                        {"name": "promo", "type": ["null", "boolean"]}]}
    files = {"csv": tmp_path / "t.csv", "parquet": tmp_path / "t.parquet", "avro": tmp_path / "t.avro"}
    files["csv"].write_text("plan,promo\n" + "".join(f"{'' if p is None else p},{'' if f is None else str(f).lower()}\n"
                                                     for p, f in zip(plans, flags, strict=True)))
    pq.write_table(pa.Table.from_pylist(rows), files["parquet"])
    with files["avro"].open("wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), rows)
    specs = [FieldSpec("plan", "categorical", True), FieldSpec("promo", "categorical", True)]
    for kind, path in files.items():
        profile = build_profile("m", specs, read_table(path), version="v1", source=path.name, sentinels={},
                                time_field=None)
        assert profile.fields["plan"].categories == ["1", "2", "3"], kind  # by count, then by name
        assert profile.fields["promo"].categories == ["True", "False"], kind

    proc, _models = small_model(tmp_path, schema["fields"], categorical=["plan", "promo"])
    stream_schema = proc.decoder.reader_schema
    records = [RawRecord("m.f", 0, i, None, encode_plain(stream_schema, {**r, "event_id": str(i),
                                                                         "event_time": 1_767_225_600_000 + i}))
               for i, r in enumerate(rows)]
    part = proc.new_partition(0)
    proc.process(part, records)
    seen = part.features["plan"].window.open
    assert {k: v for k, v in seen.items() if not k.startswith("__")} == {"1": 3, "2": 2, "3": 1}
    flags_seen = part.features["promo"].window.open
    assert {k: v for k, v in flags_seen.items() if not k.startswith("__")} == {"True": 4, "False": 2}
