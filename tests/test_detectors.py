"""Our batched detectors find changes at exactly the indices river's do, and survive a JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from river import drift

from monitor.core.detectors import DDM, EDDM, HDDMA, Adwin, PageHinkley


def _stream(seed: int, n: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    cut1, cut2 = rng.integers(500, n // 2), rng.integers(n // 2, n - 200)
    x[cut1:] += rng.choice([-1.5, -0.7, 0.5, 1.0, 2.0])
    x[cut2:] *= rng.choice([0.5, 2.0, 3.0])
    return x


def _river_indices(detector: Any, x: np.ndarray) -> list[int]:
    out = []
    for i, v in enumerate(x.tolist()):
        detector.update(v)
        if detector.drift_detected:
            out.append(i)
    return out


def _chunked(x: np.ndarray, seed: int) -> list[np.ndarray]:
    """Split a stream at random points, as micro-batches would."""
    rng = np.random.default_rng(seed + 1000)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=25, replace=False))
    return np.split(x, cuts)


@pytest.mark.parametrize("seed", range(12))
def test_adwin_matches_river_indices(seed: int) -> None:
    """ADWIN: same detections as river.drift.ADWIN, fed in random micro-batches with state round trips."""
    x = _stream(seed)
    expected = _river_indices(drift.ADWIN(delta=0.002), x)
    ours = Adwin(delta=0.002)
    got, offset = [], 0
    for chunk in _chunked(x, seed):
        got += [offset + d.index for d in ours.update_many(chunk)]
        offset += len(chunk)
        restored = Adwin(delta=0.002)
        restored.load_state(json.loads(json.dumps(ours.to_state())))
        ours = restored
    assert expected, "the stream should contain detectable changes"
    assert got == expected


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("params", [{}, {"delta": 0.5, "threshold": 25.0}, {"mode": "up", "threshold": 10.0}])
def test_page_hinkley_matches_river_indices(seed: int, params: dict[str, float | str]) -> None:
    """Page-Hinkley: same detections as river.drift.PageHinkley across batches and state round trips."""
    x = _stream(seed) * 3.0 + 1.0
    expected = _river_indices(drift.PageHinkley(**params), x)  # type: ignore[arg-type]
    ours = PageHinkley(**params)  # type: ignore[arg-type]
    got, offset = [], 0
    for chunk in _chunked(x, seed):
        got += [offset + d.index for d in ours.update_many(chunk)]
        offset += len(chunk)
        restored = PageHinkley(**params)  # type: ignore[arg-type]
        restored.load_state(json.loads(json.dumps(ours.to_state())))
        ours = restored
    assert expected
    assert got == expected


def test_page_hinkley_statistic_is_the_crossing_test_value() -> None:
    """The statistic reported with a detection is the test value that crossed the threshold."""
    x = np.r_[np.zeros(100), np.full(50, 10.0)]
    det = PageHinkley(min_instances=30, delta=0.0, threshold=50.0, alpha=1.0, mode="up")
    (hit,) = det.update_many(x)
    # By hand: mean after 100 zeros and k tens is 10k/(100+k); the increase sum is sum of deviations.
    s = 0.0
    for k in range(1, 51):
        s += 10.0 - 10.0 * k / (100 + k)
        if s > 50.0:
            break
    assert hit.index == 99 + k
    assert hit.statistic == pytest.approx(s, rel=1e-12)


def _error_stream(seed: int, n: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rate = np.full(n, rng.uniform(0.05, 0.3))
    cut = rng.integers(1000, n - 1000)
    rate[cut:] = np.minimum(rate[cut:] + rng.uniform(0.05, 0.3), 0.95)
    return (rng.random(n) < rate).astype(float)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: DDM(), lambda: drift.binary.DDM()),
        (lambda: EDDM(), lambda: drift.binary.EDDM()),
        (lambda: HDDMA(), lambda: drift.binary.HDDMA()),
        (lambda: HDDMA(two_sided_test=True), lambda: drift.binary.HDDMA(two_sided_test=True)),
    ],
    ids=["ddm", "eddm", "hddm_a", "hddm_a_two_sided"],
)
def test_error_stream_detectors_match_river(seed: int, ours: Any, theirs: Any) -> None:
    """DDM, EDDM and HDDM_A: same detections as river's, across micro-batches and JSON round trips."""
    x = _error_stream(seed)
    expected = _river_indices(theirs(), x)
    det = ours()
    got, offset = [], 0
    for chunk in _chunked(x, seed):
        got += [offset + d.index for d in det.update_many(chunk)]
        offset += len(chunk)
        restored = ours()
        restored.load_state(json.loads(json.dumps(det.to_state())))
        det = restored
    assert got == expected
