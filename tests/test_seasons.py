"""Issue 14 #1: seasonal references. A stream with daily and weekly cycles and no incident raises nothing when
its reference profiles each hour of the week; the same cycles against an overall reference raise drift; a
0.5-sigma shift on top of the cycle is caught about as fast as on a stream without cycles.

Streams here are made with numpy (a loan-scoring model: `amount` with a +-30% daily cycle, `visits` with a
+-20% weekly one, three steady features and a categorical one) and run through both stages in process
(`monitor.app.replay`), exactly as the daemon computes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.app.replay import replay
from monitor.core.profiles import NumericProfile, ReferenceProfile
from monitor.core.seasons import SEASONS, FieldSeasons, SeasonalReference, bucket_name, buckets, season_profile
from monitor.core.types import Alert, RawRecord
from monitor.profile.build import build_profile, profile_numeric
from monitor.profile.store import profile_size
from monitor.settings import Settings, load_settings
from tests.helpers import column_records

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
STEP_MS = 2_000  # one event every 2 s: 302,400 a week
REF_START = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp() * 1000)  # a Monday
LIVE_START = int(dt.datetime(2026, 2, 2, tzinfo=dt.UTC).timestamp() * 1000)  # four weeks later, a Monday
SCHEMA = {"type": "record", "name": "Loan", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "amount", "type": "double"},
    {"name": "visits", "type": "double"},
    {"name": "income", "type": "double"},
    {"name": "age", "type": "double"},
    {"name": "tenure", "type": "double"},
    {"name": "region", "type": "string"},
]}
NUMERIC = ("amount", "visits", "income", "age", "tenure")
NOISE = {"amount": 25.0, "visits": 4.0}  # the cyclic features' noise std: "sigma" of the shifts below


def stream(start_ms: int, weeks: float, seed: int, cycles: bool = True,
           shift: tuple[str, int, float] | None = None) -> dict[str, np.ndarray]:
    """Columns of a loan stream from `start_ms`, an event every STEP_MS. `shift`: (feature, from event time,
    size in NOISE sigmas)."""
    rng = np.random.default_rng(seed)
    t = start_ms + np.arange(int(weeks * WEEK_MS / STEP_MS), dtype=np.int64) * STEP_MS
    n = len(t)
    day = np.sin(2 * np.pi * (t % DAY_MS) / DAY_MS) if cycles else np.zeros(n)
    week = np.sin(2 * np.pi * ((t - REF_START) % WEEK_MS) / WEEK_MS) if cycles else np.zeros(n)
    cols = {
        "event_time": t,
        "amount": 100.0 * (1 + 0.3 * day) + rng.normal(0, NOISE["amount"], n),
        "visits": 20.0 * (1 + 0.2 * week) + rng.normal(0, NOISE["visits"], n),
        "income": rng.lognormal(8, 0.5, n),
        "age": rng.normal(40, 12, n),
        "tenure": rng.exponential(5, n),
        "region": rng.choice(np.array(["north", "south", "east", "west"]), n, p=[0.4, 0.3, 0.2, 0.1]),
    }
    if shift is not None:
        name, at, size = shift
        cols[name] = cols[name] + np.where(t >= at, size * NOISE[name], 0.0)
    return cols


def settings_for(tmp: Path, **top: Any) -> Settings:
    (tmp / "loan.avsc").write_text(json.dumps(SCHEMA))
    cfg = {"window": {"by": "time", "block_ms": 600_000, "blocks": 10, "resolve_windows": 3},
           "models": [{"name": "loans", "id_field": "event_id", "time_field": "event_time",
                       "features": {"topic": "loans.features", "schema": str(tmp / "loan.avsc")}}], **top}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return load_settings(tmp / "monitor.yaml", environ={})


def reference(tmp: Path, season: str | None, cycles: bool = True) -> ReferenceProfile:
    """Two weeks of training data from other weeks than the live stream (and another seed)."""
    from monitor.cli.main import _model_specs

    cols = stream(REF_START, 2, seed=1, cycles=cycles)
    columns = {k: (v, np.zeros(len(v), dtype=bool)) for k, v in cols.items()}
    settings = settings_for(tmp)
    return build_profile("loans", _model_specs(settings, "loans"), columns, version="v1", source="two weeks",
                         sentinels={}, time_field="event_time", season=season)


def records(cols: dict[str, np.ndarray], partitions: int = 3) -> dict[tuple[str, int], list[RawRecord]]:
    return column_records(cols, "loans.features", SCHEMA, partitions)


def opened(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.status == "OPEN"]


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReferenceProfile]:
    tmp = tmp_path_factory.mktemp("refs")
    return {"seasonal": reference(tmp, "hour_of_week"), "overall": reference(tmp, None),
            "steady": reference(tmp, None, cycles=False)}


@pytest.fixture(scope="module")
def live() -> dict[tuple[str, int], list[RawRecord]]:
    return records(stream(LIVE_START, 2, seed=2))


def run(tmp: Path, recs: dict[tuple[str, int], list[RawRecord]], ref: ReferenceProfile, **top: Any) -> list[Alert]:
    settings = settings_for(tmp, **top)
    out = replay(settings, recs, {"loans": ref})
    return out.alerts + out.stage1_alerts


# -- the buckets and the profile, against independent computations -----------------------------------

@settings(max_examples=300, deadline=None)
@given(t=st.integers(-(10**12), 4 * 10**12))
def test_buckets_are_the_calendars_hour_and_weekday(t: int) -> None:
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=t)
    got = {by: int(buckets(by, np.array([t]))[0]) for by in SEASONS}
    assert got == {"hour_of_day": when.hour, "day_of_week": when.weekday(),
                   "hour_of_week": when.weekday() * 24 + when.hour}
    assert bucket_name("hour_of_week", got["hour_of_week"]).startswith(when.strftime("%a"))


def test_each_bucket_profiles_its_own_rows_and_thin_buckets_fall_back() -> None:
    """Counts per bin of each hour's rows by hand (np.histogram over the overall edges), mean and std by numpy;
    an hour with fewer than min_rows usable values is not stored and reads as the overall profile."""
    rng = np.random.default_rng(5)
    t = np.sort(rng.integers(0, DAY_MS, 5_000))
    x = rng.normal(10, 2, 5_000) + (t // 3_600_000)  # the mean climbs by 1 each hour
    x[::97] = np.nan
    keep = np.ones(len(t), dtype=bool)
    keep[(t // 3_600_000 == 5) & (np.arange(len(t)) % 10 != 0)] = False  # hour 5 keeps about 20 rows
    t, x = t[keep], x[keep]
    null = np.zeros(len(x), dtype=bool)
    overall = profile_numeric(x, null, [])
    raw = season_profile("hour_of_day", t.astype(float), {"x": (x, null)}, {"x": overall}, min_rows=50)
    assert raw["by"] == "hour_of_day" and raw["min_rows"] == 50
    stored = raw["fields"]["x"]
    assert "5" not in stored
    edges = np.r_[-np.inf, overall.edges, np.inf]
    for hour in (0, 11, 23):
        sel = x[(t // 3_600_000 == hour) & np.isfinite(x)]
        count, mean, std, counts = stored[str(hour)]
        assert count == len(sel)
        assert mean == pytest.approx(sel.mean(), rel=1e-12)
        assert std == pytest.approx(sel.std(ddof=1), rel=1e-12)
        assert counts == np.histogram(sel, edges)[0].tolist()
    seasons = FieldSeasons("hour_of_day", overall, stored)
    assert seasons.own[11] and not seasons.own[5]
    means, stds = seasons.standardisers(np.array([5, 11]) * 3_600_000 + 1_800_000)  # the hours' middles
    assert means[0] == overall.mean and stds[0] == overall.std
    assert means[1] == pytest.approx(x[(t // 3_600_000 == 11) & np.isfinite(x)].mean(), rel=1e-12)


def test_a_window_across_two_seasons_is_compared_with_their_mixture() -> None:
    """Two hours, weighted 3:1 by their events: the expected shares are 3/4 and 1/4 of theirs, sized as the
    smaller hour; the mean is the weighted mean, the std the mixture's (law of total variance, by hand)."""
    overall = NumericProfile("numeric", 1000, 0, 0, 0, [], 0.0, 9.0, 4.0, 2.0, [3.0, 6.0], [0.3, 0.4, 0.3])
    raw = {"1": [200, 2.0, 1.0, [100, 80, 20]], "2": [400, 6.0, 2.0, [40, 160, 200]]}
    seasons = FieldSeasons("hour_of_day", overall, raw)
    exp = seasons.expected(np.array([1, 1, 1, 2]), np.array([10.0, 10.0, 10.0, 10.0]))
    share = 0.75 * np.array([0.5, 0.4, 0.1]) + 0.25 * np.array([0.1, 0.4, 0.5])
    assert exp.counts == pytest.approx(share * 200)
    assert exp.mean == pytest.approx(0.75 * 2 + 0.25 * 6)
    assert exp.std == pytest.approx(math.sqrt(0.75 * (1 + (2 - 3) ** 2) + 0.25 * (4 + (6 - 3) ** 2)))
    assert exp.season == "hour_of_day 01h, 02h"
    # An hour without its own profile takes the overall one, named as such.
    other = seasons.expected(np.array([7]), np.array([1.0]))
    assert other.counts == pytest.approx(np.array([0.3, 0.4, 0.3]) * overall.counts().sum())
    assert other.season == "hour_of_day 07h (overall)"


def test_a_profile_without_seasons_reads_as_before_and_with_them_round_trips(refs: dict[str, ReferenceProfile]
                                                                               ) -> None:
    seasonal = refs["seasonal"]
    again = ReferenceProfile.from_json(seasonal.to_json())
    assert again == seasonal
    legacy = json.loads(refs["overall"].to_json())
    del legacy["seasons"]
    assert ReferenceProfile.from_json(json.dumps(legacy)).seasons is None
    parsed = SeasonalReference.of(again.seasons, again.fields)
    assert parsed is not None and parsed.by == "hour_of_week"
    # Two weeks at one event per 2 s: 3,600 rows an hour of the week, every bucket of every field its own.
    assert all(len(b) == 168 for b in seasonal.seasons["fields"].values())  # type: ignore[index]


# -- acceptance 1 ------------------------------------------------------------------------------------

def test_cycles_with_no_incident_raise_nothing_with_a_seasonal_reference(
        tmp_path: Path, refs: dict[str, ReferenceProfile], live: dict[tuple[str, int], list[RawRecord]]) -> None:
    """Two weeks of a +-30% daily cycle (amount) and a +-20% weekly one (visits), no incident: not one alert
    with the hour-of-week reference, in the model view and with per-partition alerts (ADWIN, Page-Hinkley)
    too; against the overall reference the same stream raises drift on both cyclic features."""
    assert opened(run(tmp_path, live, refs["seasonal"])) == []
    assert opened(run(tmp_path, live, refs["seasonal"], partition_alerts=True)) == []
    noisy = opened(run(tmp_path, live, refs["overall"]))
    named = {a.feature for a in noisy} | {f for a in noisy for f in a.evidence.get("features", "").split(", ")}
    assert named >= {"amount", "visits"}, [(a.feature, a.check, a.evidence.get("features")) for a in noisy]
    size = profile_size(refs["seasonal"]) / 1024
    print(f"seasonal profile: {size:.0f} KiB (overall alone {profile_size(refs['overall']) / 1024:.1f} KiB)")


def _first_delay_s(alerts: list[Alert], feature: str, onset: int) -> float:
    hits = [a for a in opened(alerts) if a.feature == feature]
    assert hits, "the shift was not detected"
    first = hits[0]
    assert first.window.last_event_time is not None and first.window.last_event_time >= onset, first
    return (first.window.last_event_time - onset) / 1000


def test_a_half_sigma_shift_on_the_cycle_is_caught_as_fast_as_without_cycles(
        tmp_path: Path, refs: dict[str, ReferenceProfile]) -> None:
    """A 0.5-sigma shift of amount (sigma: its noise, 25) from the middle of the second week: with the cycle
    and the seasonal reference it is detected, and no later than the same shift on a stream without cycles
    against a reference without cycles, plus one window (10 min) — and nothing fires before it."""
    onset = LIVE_START + WEEK_MS + WEEK_MS // 2 + 3 * 3_600_000
    cyclic = stream(LIVE_START + WEEK_MS, 1, seed=3, shift=("amount", onset, 0.5))
    steady = stream(LIVE_START + WEEK_MS, 1, seed=3, cycles=False, shift=("amount", onset, 0.5))
    seasonal_alerts = run(tmp_path, records(cyclic), refs["seasonal"])
    baseline_alerts = run(tmp_path, records(steady), refs["steady"])
    for alerts in (seasonal_alerts, baseline_alerts):
        early = [a for a in opened(alerts) if (a.window.last_event_time or 0) < onset]
        assert early == [], [(a.feature, a.check) for a in early]
    seasonal = _first_delay_s(seasonal_alerts, "amount", onset)
    baseline = _first_delay_s(baseline_alerts, "amount", onset)
    print(f"0.5-sigma shift detected after {seasonal:.0f} s with cycles and the seasonal reference, "
          f"{baseline:.0f} s without cycles")
    assert seasonal <= baseline + 600
