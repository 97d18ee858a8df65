"""Issue 14 acceptance 3 at full scale: `false_alarms_per_day: 1` on 30 features at 1,000 events/s.

One simulated day (86.4 million events) of 30 stationary features through both stages in process (stage 1's
compiled decoder, limits and block summaries; stage 2's merge, windows, drift and CUSUM), with thresholds
derived from the budget; then a 1-sigma shift of one feature, and its delay. Events are made in chunks of
1,000 s and encoded as Avro with numpy (each record has the same layout: a 13-character id, a 6-byte
timestamp varint, 30 little-endian doubles; checked against fastavro); nothing is kept but the alerts.

    .venv/bin/python bench/budget_day.py [--hours 24] [--rate 1000]

Prints the derived thresholds, the alerts of the stationary day and the shift's delay. About 15 minutes on
two cores for the full day (922 s here: 0 alerts over 86,400,000 events; the shift found by CUSUM 10 s, one
slot, after it began).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.app.models import ModelProcessor
from monitor.app.pipeline import StreamProcessor, build_processors, model_budget
from monitor.cli.main import _model_specs
from monitor.core.types import Alert, RawRecord
from monitor.profile.build import build_profile
from monitor.settings import Settings, load_settings

FEATURES = 30
START = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
SCHEMA = {"type": "record", "name": "Wide", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "event_time", "type": "long"},
    *({"name": f"f{i:02d}", "type": "double"} for i in range(FEATURES))]}
ID_LEN = 13


def columns(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 30) values: four shapes, as tests/test_budget.py."""
    n = len(t)
    out = np.empty((n, FEATURES))
    for i in range(FEATURES):
        shape = i % 4
        out[:, i] = (rng.normal(50, 10, n) if shape == 0 else rng.lognormal(3, 0.6, n) if shape == 1
                     else rng.exponential(4, n) if shape == 2 else rng.gamma(3, 2, n))
    return out


def encode(first_id: int, t: np.ndarray, values: np.ndarray) -> list[bytes]:
    """Avro binary of each record, all at once."""
    n = len(t)
    zz = (t.astype(np.int64) << 1).astype(np.uint64)  # zigzag of a positive long
    width = int(np.max(np.ceil(np.log2(zz.astype(float) + 1) / 7)))
    assert width == int(np.min(np.ceil(np.log2(zz.astype(float) + 1) / 7))), "timestamps of two varint widths"
    size = 1 + ID_LEN + width + 8 * FEATURES
    out = np.empty((n, size), dtype=np.uint8)
    out[:, 0] = ID_LEN * 2  # zigzag varint of the id's length
    ids = np.char.zfill(np.char.mod("%d", np.arange(first_id, first_id + n)), ID_LEN - 1)
    out[:, 1] = ord("e")
    out[:, 2:1 + ID_LEN] = np.frombuffer("".join(ids.tolist()).encode(), dtype=np.uint8).reshape(n, ID_LEN - 1)
    for k in range(width):
        byte = (zz >> np.uint64(7 * k)) & np.uint64(0x7F)
        if k < width - 1:
            byte |= np.uint64(0x80)
        out[:, 1 + ID_LEN + k] = byte.astype(np.uint8)
    out[:, 1 + ID_LEN + width:] = values.astype("<f8").view(np.uint8).reshape(n, 8 * FEATURES)
    flat = out.tobytes()
    return [flat[i * size:(i + 1) * size] for i in range(n)]


def check_encoding() -> None:
    from fastavro import parse_schema, schemaless_writer

    parsed = parse_schema(SCHEMA)
    t = START + np.arange(5, dtype=np.int64) * 1000
    values = np.random.default_rng(0).normal(0, 1, (5, FEATURES))
    for i, payload in enumerate(encode(7, t, values)):
        buf = io.BytesIO()
        row = {"event_id": f"e{7 + i:012d}", "event_time": int(t[i]),
               **{f"f{j:02d}": float(values[i, j]) for j in range(FEATURES)}}
        schemaless_writer(buf, parsed, row)
        assert buf.getvalue() == payload, "the numpy encoding differs from fastavro's"


def settings_for(tmp: Path) -> Settings:
    (tmp / "wide.avsc").write_text(json.dumps(SCHEMA))
    cfg = {"window": {"by": "time", "block_ms": 10_000, "blocks": 30, "resolve_windows": 3},
           "models": [{"name": "wide", "id_field": "event_id", "time_field": "event_time",
                       "features": {"topic": "wide.features", "schema": str(tmp / "wide.avsc")},
                       "alerts": {"false_alarms_per_day": 1}}]}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return load_settings(tmp / "monitor.yaml", environ={})


def run(settings: Settings, reference: Any, start: int, seconds: int, rate: int, seed: int,
        shift_at: int | None = None, say: Any = print) -> list[Alert]:
    """Both stages over `seconds` of events; the stage-2 alerts."""
    proc = build_processors(settings, {"wide": reference})["wide.features"]
    assert isinstance(proc, StreamProcessor)
    models = ModelProcessor(settings, {"wide.features": proc})
    models.input_partitions = {"wide.features": 1}
    part, mpart = proc.new_partition(0, 1), models.new_partition(0)
    rng = np.random.default_rng(seed)
    alerts: list[Alert] = []
    offset = block_offset = 0
    chunk_s = 1_000
    started = time.monotonic()
    for lo in range(0, seconds, chunk_s):
        n = min(chunk_s, seconds - lo) * rate
        t = start + lo * 1000 + (np.arange(n, dtype=np.int64) * 1000) // rate
        values = columns(t, rng)
        if shift_at is not None:
            values[:, 0] += np.where(t >= shift_at, 10.0, 0.0)  # f00 ~ N(50, 10): one standard deviation
        payloads = encode(offset, t, values)
        records = [RawRecord("wide.features", 0, offset + i, None, p, timestamp_ms=int(t[i]))
                   for i, p in enumerate(payloads)]
        offset += n
        for b in range(0, n, 500):
            out = proc.process(part, records[b:b + 500])
            alerts += out.alerts
            if out.blocks:
                rec = RawRecord("blocks", 0, block_offset, b"wide", models.codec.encode(out.blocks))
                block_offset += 1
                alerts += models.process(mpart, [rec]).alerts
        done = lo + chunk_s
        if done // 14_400 != (done - chunk_s) // 14_400 or done >= seconds:  # every 4 h of event time
            say(f"  {min(done, seconds) / 3600:.1f} h of event time, {offset:,} events, "
                f"{sum(a.status == 'OPEN' for a in alerts)} opened, {time.monotonic() - started:.0f} s")
    return alerts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--rate", type=int, default=1_000)
    args = parser.parse_args()
    check_encoding()
    tmp = Path(tempfile.mkdtemp(prefix="budget-day-"))
    settings = settings_for(tmp)
    ref_s = 1_000  # a reference of 1,000 s of another day at the same rate: the event rate and the shapes
    t = START - 86_400_000 + (np.arange(ref_s * args.rate, dtype=np.int64) * 1000) // args.rate
    values = columns(t, np.random.default_rng(1))
    cols = {"event_time": (t, np.zeros(len(t), bool)),
            **{f"f{i:02d}": (values[:, i], np.zeros(len(t), bool)) for i in range(FEATURES)}}
    reference = build_profile("wide", _model_specs(settings, "wide"), cols, version="v1", source="1,000 s",
                              sentinels={}, time_field="event_time")
    budget = model_budget(settings, settings.model("wide"), reference)
    assert budget is not None
    print(f"budget: {budget.summary()}")
    seconds = int(args.hours * 3600)
    day = run(settings, reference, START, seconds, args.rate, seed=2)
    opened = [a for a in day if a.status == "OPEN"]
    print(f"stationary: {seconds * args.rate:,} events, {len(opened)} alerts opened: "
          + "; ".join(f"{a.feature} {a.check} {a.statistic:.4g} > {a.threshold:.4g}" for a in opened))
    onset = START + 1_800_000
    shifted = run(settings, reference, START, 3_600, args.rate, seed=3, shift_at=onset, say=lambda _: None)
    hits = [a for a in shifted if a.status == "OPEN" and (a.feature == "f00" or "f00" in
                                                            a.evidence.get("features", ""))]
    if hits:
        delay = ((hits[0].window.last_event_time or onset) - onset) / 1000
        print(f"1-sigma shift of f00: found by {hits[0].check} {delay:.0f} s after it began "
              f"(the end of the first window that showed it)")
    else:
        print("1-sigma shift of f00: NOT found")
    return 0 if len(opened) <= budget.per_day and hits else 1


if __name__ == "__main__":
    raise SystemExit(main())
