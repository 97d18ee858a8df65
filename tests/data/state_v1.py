"""A stream and the states 0.2 (JSON state, commit 3af1345) wrote for it: the fixture of the state-format
migration test. `python tests/data/state_v1.py` with model-monitor 0.2 on PYTHONPATH writes state_v1.json;
the test imports `stream` and `run` from here with the current code.

Both stages and a labels partition, each state taken after the first half of the stream."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
SCHEMA = {"type": "record", "name": "R", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "event_time", "type": "long"},
    {"name": "x", "type": ["null", "double"], "default": None}, {"name": "n", "type": "long"},
    {"name": "c", "type": "string"}]}
EVENTS, HALF, BATCH = 6_000, 3_000, 250


def stream() -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(EVENTS):
        x = None if rng.random() < 0.05 else round(float(rng.normal(3.0, 2.0)), 4)
        out.append({"event_id": f"e{i % 5_500}", "event_time": 1_767_225_600_000 + i * 7, "x": x,
                    "n": int(rng.integers(0, 40)), "c": f"k{int(rng.integers(0, 6))}"})
    return out


def processors(tmp: Path) -> tuple[Any, Any]:
    from monitor.app.models import ModelProcessor
    from monitor.app.pipeline import build_processors
    from monitor.settings import load_settings

    (tmp / "r.avsc").write_text(json.dumps(SCHEMA))
    cfg = {"window": {"by": "time", "block_ms": 1000, "blocks": 4},
           "models": [{"name": "m", "id_field": "event_id", "time_field": "event_time",
                       "features": {"topic": "m.f", "schema": "r.avsc"}}]}
    (tmp / "m.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(tmp / "m.yaml", environ={})
    proc = build_processors(settings)["m.f"]
    models = ModelProcessor(settings, {"m.f": proc})
    models.input_partitions = {"m.f": 1}
    return proc, models


def run(proc: Any, models: Any, part: Any, mpart: Any, labels: Any, lo: int, hi: int, block_offset: int) -> int:
    """Events [lo, hi) through stage 1, their blocks through stage 2, and a label per event to `labels`."""
    from fastavro import parse_schema

    from monitor.core.labels import LabelRow
    from monitor.core.types import RawRecord
    from monitor.io.avro import encode_plain

    parsed = parse_schema(SCHEMA)
    events = stream()
    for start in range(lo, hi, BATCH):
        batch = [RawRecord("m.f", 0, i, 1_767_225_600_000 + i * 7, encode_plain(parsed, events[i]))
                 for i in range(start, min(start + BATCH, hi))]
        out = proc.process(part, batch)
        if out.blocks:
            models.process(mpart, [RawRecord("blocks", 0, block_offset, b"m", models.codec.encode(out.blocks))])
            block_offset += 1
        rows = [LabelRow(f"p{i}", float(i % 3 == 0), 1_767_225_600_000 + i * 7, i)
                for i in range(start, min(start + BATCH, hi))]
        lookups = {f"p{i}": (0.7, 1.0, 1_767_225_600_000 + i * 7, None) for i in range(start, min(start + BATCH, hi))
                   if i % 2 == 0}
        labels.apply(rows, lookups)
    return block_offset


def label_partition() -> Any:
    from monitor.core.labels import LabelPartition
    from monitor.settings import PerformanceSettings

    return LabelPartition("m", "m.l", 0, "classifier", PerformanceSettings(block_size=50), None)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, models = processors(Path(tmp))
        part, mpart, labels = proc.new_partition(0), models.new_partition(0), label_partition()
        offset = run(proc, models, part, mpart, labels, 0, HALF, 0)
        mpart.dirty |= set(mpart.streams)
        state = {"stage1": part.to_fields(), "stage2": mpart.to_fields(), "labels": labels.to_fields(),
                 "block_offset": offset}
        text = {k: ({f: v.decode() for f, v in s.items()} if isinstance(s, dict) else s) for k, s in state.items()}
        (HERE / "state_v1.json").write_text(json.dumps(text, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
