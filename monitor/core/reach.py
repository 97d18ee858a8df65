"""Checks whose window can never hold the events they need at the rate a stream runs: say so, and what to change.

A window check is skipped while its window holds fewer events than its minimum (`min_window_count` for the
rate checks, `drift.min_window_count` for drift, `performance.cbpe_min_window` for the CBPE estimate). At a
low rate a time window may never get there, and the check then never runs, silently. `unreachable` compares
the events a full window holds (expected from a rate, or counted in a full window) with each minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from monitor.settings import ModelSettings, Settings, WindowSettings


@dataclass(frozen=True)
class Unreachable:
    """A check that cannot run: its window holds about `window_events`, it needs `needs` (`setting`)."""

    stream: str
    check: str
    setting: str
    needs: int
    window_events: float
    advice: str


def minimums(settings: Settings, model: ModelSettings, stream: str) -> list[tuple[str, str, int]]:
    """(check, setting, minimum) of the window checks of a model's stream, the features' defaults and
    overrides taken at their smallest (a check that one feature can run is not reported)."""
    checks = [settings.defaults, *(settings.checks_for(model, f) for f in model.overrides)]
    out = [("rate checks (missing, NaN, sentinel, out of range, unseen, constant)", "min_window_count",
            min(c.min_window_count for c in checks))]
    if any(c.drift.enabled for c in checks):
        drift = min(c.drift.min_window_count for c in checks if c.drift.enabled)
        out.append(("drift", "drift.min_window_count", drift))
    if stream == "predictions" and model.score_field and model.performance.cbpe:
        out.append(("cbpe_accuracy", "performance.cbpe_min_window", model.performance.cbpe_min_window))
    return out


def unreachable(window: WindowSettings, stream: str, needs: list[tuple[str, str, int]],
                window_events: float) -> list[Unreachable]:
    """The checks of `needs` whose minimum is above `window_events` (the events a full window holds), each
    with what to change.

    >>> w = WindowSettings(by="time", block_ms=86_400_000, blocks=10)
    >>> [u.advice for u in unreachable(w, "features", [("drift", "drift.min_window_count", 200)], 160.0)]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['a full window holds about 160 events (10 blocks of 86400 s); drift needs 200: set window.block_ms to at
      least 108000000 or window.blocks to at least 13, or drift.min_window_count to at most 160']
    """
    out = []
    for check, setting, minimum in needs:
        if window_events >= minimum:
            continue
        have = max(window_events, 0.0)
        if window.by == "time":
            shape = f"{window.blocks} blocks of {window.block_ms / 1000:g} s"
            if have > 0:
                factor = minimum / have
                change = (f"set window.block_ms to at least {math.ceil(window.block_ms * factor)} or "
                          f"window.blocks to at least {math.ceil(window.blocks * factor)}, or ")
            else:
                change = "no event reached a window: check the stream, or "
        else:
            shape = f"{window.blocks} blocks of {window.block_size} events"
            change = f"set window.block_size x window.blocks to at least {minimum}, or "
        out.append(Unreachable(stream, check, setting, minimum, have,
                               f"a full window holds about {have:.0f} events ({shape}); {check} needs {minimum}: "
                               f"{change}{setting} to at most {math.floor(have)}"))
    return out


def expected_window_events(window: WindowSettings, rate_per_s: float, partitions: int) -> float:
    """Events a full window holds at `rate_per_s` (the whole stream): the model view merges all partitions;
    per-partition windows (`partitions` > 1) see their share."""
    if window.by == "count":
        return float(window.block_size * window.blocks)
    return rate_per_s / max(partitions, 1) * window.block_ms / 1000.0 * window.blocks
