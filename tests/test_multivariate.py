"""Issue 15 #1: multivariate drift, the PCA reconstruction error of the standardised numeric features.

The PCA and the errors are checked against an independent computation (the eigenvectors of the correlation
matrix); then streams made with numpy run through both stages in process (`monitor.app.replay`), exactly as the
daemon computes: two features whose correlation flips from +0.8 to -0.8 with unchanged marginals raise the
multivariate check within two windows and nothing else; the same stream without the flip raises nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.app.replay import replay
from monitor.core.multivariate import MV_FIELD, Multivariate, fit
from monitor.core.profiles import ReferenceProfile
from monitor.core.types import Alert, RawRecord
from monitor.profile.build import build_profile
from monitor.settings import Settings, load_settings
from tests.helpers import column_records

START = 1_780_000_000_000
STEP_MS = 50  # 20 events a second
BLOCK_MS, BLOCKS = 10_000, 10  # a window: 100 s, 2,000 events
SCHEMA = {"type": "record", "name": "Pair", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "event_time", "type": "long"},
    {"name": "x", "type": "double"},
    {"name": "y", "type": "double"},
    {"name": "a", "type": "double"},
    {"name": "b", "type": "double"},
    {"name": "channel", "type": "string"},
]}


def stream(n: int, seed: int, flip_at: int | None = None, rho: float = 0.8) -> dict[str, np.ndarray]:
    """x, y standard normal with correlation rho (then -rho from event `flip_at`): the marginals never change;
    a and b independent; a categorical channel."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    e = rng.normal(0, 1, n)
    sign = np.ones(n) if flip_at is None else np.where(np.arange(n) >= flip_at, -1.0, 1.0)
    y = sign * rho * x + np.sqrt(1 - rho ** 2) * e
    return {"event_time": START + np.arange(n, dtype=np.int64) * STEP_MS, "x": 10 + 2 * x, "y": 50 + 5 * y,
            "a": rng.exponential(3, n), "b": rng.normal(100, 15, n),
            "channel": rng.choice(np.array(["web", "app", "store"]), n, p=[0.5, 0.3, 0.2])}


def settings_for(tmp: Path, enabled: bool = True, **top: Any) -> Settings:
    (tmp / "pair.avsc").write_text(json.dumps(SCHEMA))
    cfg = {"window": {"by": "time", "block_ms": BLOCK_MS, "blocks": BLOCKS, "resolve_windows": 3},
           "models": [{"name": "pairs", "id_field": "event_id", "time_field": "event_time",
                       "multivariate": {"enabled": enabled},
                       "features": {"topic": "pairs.features", "schema": str(tmp / "pair.avsc")}}], **top}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return load_settings(tmp / "monitor.yaml", environ={})


def reference(tmp: Path) -> ReferenceProfile:
    from monitor.cli.main import _model_specs

    cols = stream(40_000, seed=1)
    columns = {k: (v, np.zeros(len(v), dtype=bool)) for k, v in cols.items()}
    s = settings_for(tmp)
    specs = _model_specs(s, "pairs")
    return build_profile("pairs", specs, columns, version="v1", source="train", sentinels={},
                         time_field="event_time", feature_fields=[f.name for f in specs])


def records(cols: dict[str, np.ndarray], partitions: int = 3) -> dict[tuple[str, int], list[RawRecord]]:
    return column_records(cols, "pairs.features", SCHEMA, partitions)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    return reference(tmp_path_factory.mktemp("ref"))


def run(tmp: Path, cols: dict[str, np.ndarray], ref: ReferenceProfile, **kwargs: Any) -> list[Alert]:
    out = replay(settings_for(tmp, **kwargs), records(cols), {"pairs": ref})
    return out.alerts + out.stage1_alerts


# -- the PCA against an independent computation ---------------------------------------------------------

def test_two_correlated_features_keep_one_component_and_the_error_is_the_other_ones_square() -> None:
    """corr 0.8: eigenvalues 1.8 and 0.2 of the correlation matrix, so 0.9 of the variance on the first
    direction: one component kept; an event's error is its squared projection on (1, -1)/sqrt 2."""
    cols = stream(100_000, seed=3)
    mv = fit({"x": cols["x"], "y": cols["y"]}, ["x", "y"], {}, variance_share=0.9)
    assert mv is not None and len(mv.components) == 1
    assert mv.explained == pytest.approx([0.9, 0.1], abs=0.01)
    zx = (cols["x"] - np.mean(cols["x"])) / np.std(cols["x"], ddof=1)
    zy = (cols["y"] - np.mean(cols["y"])) / np.std(cols["y"], ddof=1)
    by_hand = ((zx - zy) / np.sqrt(2)) ** 2
    assert np.allclose(mv.errors({"x": cols["x"], "y": cols["y"]}), by_hand, rtol=0, atol=1e-3 * by_hand.max())


@settings(max_examples=40, deadline=None)
@given(d=st.integers(2, 6), share=st.floats(0.3, 0.99), seed=st.integers(0, 10_000))
def test_errors_are_the_variance_left_in_the_discarded_eigenvectors(d: int, share: float, seed: int) -> None:
    """For any data: the error equals the squared norm of the standardised vector's projection on the
    eigenvectors of the correlation matrix (numpy's eigh) beyond the k kept, and k is the fewest reaching the
    share (at most d - 1); the reference's mean error is the discarded eigenvalues' sum."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(0, 1, (d, d))
    data = rng.normal(0, 1, (2_000, d)) @ mixing + rng.normal(0, 5, d)
    names = [f"f{i}" for i in range(d)]
    cols = {n: data[:, i] for i, n in enumerate(names)}
    mv = fit(cols, names, {}, variance_share=share)
    assert mv is not None
    z = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)
    eigval, eigvec = np.linalg.eigh(np.corrcoef(data, rowvar=False))
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    shares = np.cumsum(eigval) / eigval.sum()
    k = min(int(np.argmax(shares >= share - 1e-12)) + 1, d - 1)
    assert len(mv.components) == k
    if k < d - 1 and abs(shares[k - 1] - share) < 1e-9:
        return  # the share falls on a boundary: either k is right
    want = ((z @ eigvec[:, k:]) ** 2).sum(axis=1)
    got = mv.errors(cols)
    assert np.allclose(got, want, rtol=1e-6, atol=1e-8)
    assert float(got.mean()) == pytest.approx(float(eigval[k:].sum()) * (len(data) - 1) / len(data), rel=1e-6)


def test_a_missing_or_sentinel_value_gives_no_error_and_the_profile_round_trips() -> None:
    cols = stream(5_000, seed=4)
    mv = fit({"x": cols["x"], "y": cols["y"]}, ["x", "y"], {"y": [-1.0]})
    assert mv is not None
    x, y = cols["x"][:4].copy(), cols["y"][:4].copy()
    x[1], y[2] = np.nan, -1.0
    err = mv.errors({"x": x, "y": y})
    assert np.isnan(err[1]) and np.isnan(err[2]) and np.isfinite(err[[0, 3]]).all()
    assert Multivariate.from_dict(json.loads(json.dumps(mv.to_dict()))) == mv


def test_reference_build_fits_the_pca_and_profiles_the_errors(ref: ReferenceProfile) -> None:
    assert ref.multivariate is not None and ref.multivariate["fields"] == ["x", "y", "a", "b"]
    again = ReferenceProfile.from_json(ref.to_json())
    assert again.multivariate == ref.multivariate
    prof = again.multivariate_profile()
    assert prof is not None and prof.count == 40_000 and prof.mean is not None
    # Four standardised features, two independent and one pair at 0.8: eigenvalues 1.8, 1, 1, 0.2; three
    # components reach 0.9 x 4 = 3.6 of the variance, and the pair's 0.2 is the error's mean.
    assert len(ref.multivariate["components"]) == 3
    assert prof.mean == pytest.approx(0.2, abs=0.02)


# -- acceptance 1: through both stages --------------------------------------------------------------------

def test_a_correlation_flip_with_unchanged_marginals_is_found_by_the_multivariate_check_alone(
        tmp_path: Path, ref: ReferenceProfile) -> None:
    flip = 60_000  # 50 minutes in
    alerts = run(tmp_path, stream(90_000, seed=2, flip_at=flip), ref)
    opened = [a for a in alerts if a.status in ("OPEN", "UPDATED")]
    assert opened, "no alert for the flip"
    assert {(a.feature, a.check, str(a.kind)) for a in opened} == {("*", "multivariate", "DRIFT")}, \
        [(a.feature, a.check) for a in opened]
    first = min(opened, key=lambda a: a.event_time or 0)
    delay_ms = (first.event_time or 0) - (START + flip * STEP_MS)
    assert 0 <= delay_ms <= 2 * BLOCK_MS * BLOCKS, delay_ms  # within two windows of the flip
    assert first.source_partition == -1 and first.evidence["scope"] == "stream"
    assert "reconstruction error" in first.message


def test_the_same_stream_without_the_flip_and_a_clean_stream_of_200000_events_raise_nothing(
        tmp_path: Path, ref: ReferenceProfile) -> None:
    assert run(tmp_path, stream(200_000, seed=5), ref) == []


def test_off_by_default_and_a_flip_then_goes_unseen(tmp_path: Path, ref: ReferenceProfile) -> None:
    """Without multivariate.enabled the same flip raises nothing: no univariate check can see it."""
    assert run(tmp_path, stream(90_000, seed=2, flip_at=60_000), ref, enabled=False) == []
    assert MV_FIELD.startswith("*")


def test_the_report_shows_the_multivariate_check_and_its_statistic_over_time(tmp_path: Path,
                                                                              ref: ReferenceProfile) -> None:
    """After the flip the report's "*" row compares the window's errors with the reference's error profile
    (over its threshold), and its chart is the history's "*" points of the stream (not a segment's)."""
    from monitor.io.state import MemoryStore
    from monitor.ops.report import collect

    settings = settings_for(tmp_path)
    out = replay(settings, records(stream(90_000, seed=2, flip_at=60_000)), {"pairs": ref})
    store = MemoryStore()
    for bp, part in out.model_parts.items():
        snap = store.acquire(settings.blocks_topic, bp)
        store.commit(settings.blocks_topic, bp, snap.fence, None, 1, part.to_fields(), {})
    history = [{"stream": "features", "partition": -1, "time": START + i * 10_000,
                "values": {"*": ["multivariate", 0.01 * i, 0.12, ""], "x": ["psi", 0.0, 0.2, ""]}} for i in range(3)]
    history.append({"stream": "features#channel=web", "partition": -1, "time": START,
                    "values": {"*": ["multivariate", 9.0, 0.12, ""]}})
    features, _extra = collect(settings, settings.model("pairs"), store, ref, history)
    mv = next(f for f in features if f.name == "*")
    assert mv.value > mv.threshold and mv.statistic == "psi"
    assert [h[1] for h in mv.history] == [0.0, 0.01, 0.02]
    assert features[0].name == "*"  # open and the most drifted: first
    assert MV_FIELD not in {f.name for f in features}
