"""Reference inputs: CSV (with NaN and empty cells) and Avro container files read into the same profile."""

from __future__ import annotations

import math
from pathlib import Path

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
