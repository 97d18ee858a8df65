"""The packed numeric part of a block summary: layouts, conversion between them, merging, a malformed block."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.app.models import ModelProcessor
from monitor.app.pipeline import StreamProcessor
from monitor.core.blocks import CLIPPED, ROW_HEAD, Layout, pack, pack_categorical, unpack_categorical
from monitor.core.sketches import FINITE, HEAD, M2, MAX, MIN, SUM, merge_numeric
from monitor.core.state_codec import read_fields
from monitor.core.types import RawRecord
from monitor.io.avro import encode_plain
from tests.helpers import small_model

NAMES = ["a", "b", "c", "d", "e"]
small = st.floats(-1e6, 1e6, allow_nan=False)


def _row(data: Any, bins: int) -> np.ndarray:
    return np.array(data.draw(st.lists(small, min_size=ROW_HEAD + bins, max_size=ROW_HEAD + bins)))


def _summary(row: np.ndarray) -> np.ndarray:
    """A row a block could hold: a whole, non-negative count of finite values, no sum or M2 without them."""
    row[FINITE] = abs(round(row[FINITE]))
    row[M2] = abs(row[M2]) if row[FINITE] > 1 else 0.0
    if row[FINITE] == 0:
        row[SUM] = 0.0
    return row


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_convert_keeps_each_fields_row_wherever_it_sits(data: Any) -> None:
    """A block laid out in any field order and subset, with any histogram lengths, reads back field by field."""
    target_bins = data.draw(st.lists(st.integers(0, 4), min_size=len(NAMES), max_size=len(NAMES)))
    target = Layout(NAMES, target_bins)
    names = data.draw(st.permutations(NAMES).map(lambda p: list(p)[: data.draw(st.integers(0, len(NAMES)))]))
    bins = [data.draw(st.sampled_from([target_bins[NAMES.index(n)], 0, 3])) for n in names]
    rows = {n: _row(data, b) for n, b in zip(names, bins, strict=True)}
    source = Layout(names, bins)
    keep = data.draw(st.booleans())
    out = target.convert(source, source.read(pack([rows[n] for n in names])), keep)
    assert len(out) == target.size
    for j, name in enumerate(NAMES):
        got = target.row(out, name)
        assert len(got) == ROW_HEAD + target_bins[j]
        if name not in rows:
            assert got[0] == 0 and got[MIN] == np.inf and got[MAX] == -np.inf and not got[ROW_HEAD:].any()
            continue
        src = rows[name]
        assert got[:ROW_HEAD].tolist() == src[:ROW_HEAD].tolist()
        if keep and len(src) == len(got):
            assert got[ROW_HEAD:].tolist() == src[ROW_HEAD:].tolist()
        else:
            assert not got[ROW_HEAD:].any()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_merge_adds_counts_and_keeps_min_and_max(data: Any) -> None:
    bins = data.draw(st.lists(st.integers(0, 3), min_size=len(NAMES), max_size=len(NAMES)))
    layout = Layout(NAMES, bins)
    rows_a = [_summary(_row(data, b)) for b in bins]
    rows_b = [_summary(_row(data, b)) for b in bins]
    acc = layout.read(pack(rows_a))
    layout.merge(acc, layout.read(pack(rows_b)))
    for name, a, b in zip(NAMES, rows_a, rows_b, strict=True):
        got = layout.row(acc, name)
        for k in range(len(a)):
            if k == MIN:
                assert got[k] == min(a[k], b[k])
            elif k == MAX:
                assert got[k] == max(a[k], b[k])
            elif k == M2:
                # Chan's pairwise correction agrees with merge_numeric's sum of n_i (mean_i - mean)^2 form.
                want = merge_numeric([a[:HEAD], b[:HEAD]])[M2]
                assert got[k] == pytest.approx(want, rel=1e-9, abs=1e-9), (name, k)
            else:
                assert got[k] == a[k] + b[k], (name, k)


def test_empty_is_the_identity_of_merge() -> None:
    layout = Layout(["x", "y"], [2, 0])
    row_x = np.arange(ROW_HEAD + 2, dtype=float)
    row_y = np.arange(ROW_HEAD, dtype=float) + 100
    acc = layout.empty()
    layout.merge(acc, layout.read(pack([row_x, row_y])))
    assert layout.row(acc, "x").tolist() == row_x.tolist()
    assert layout.row(acc, "y").tolist() == row_y.tolist()
    assert CLIPPED == HEAD  # the clipped sum follows the sketch head


def _processors(tmp: Path) -> tuple[StreamProcessor, ModelProcessor]:
    return small_model(tmp, [{"name": "x", "type": "double"}, {"name": "y", "type": "double"}])


def test_a_block_whose_values_do_not_match_its_fields_is_dead_lettered_and_changes_nothing(tmp_path: Path) -> None:
    proc, models = _processors(tmp_path)
    schema = proc.decoder.reader_schema
    records = [RawRecord("m.f", 0, i, None, encode_plain(schema, {"event_id": f"e{i}", "event_time": 1000 * i,
                                                                   "x": float(i), "y": 2.0 * i}))
               for i in range(5)]
    part = proc.new_partition(0)
    blocks = proc.process(part, records).blocks
    assert len(blocks) == 4 and blocks[0]["numeric_fields"] == ["x", "y"]
    mpart = models.new_partition(0)
    good = [RawRecord("blocks", 0, 0, b"m", models.codec.encode([blocks[0]]))]
    models.process(mpart, good)
    before = mpart.to_fields()
    bad = dict(blocks[1], numeric_values=blocks[1]["numeric_values"][:-8])  # one float64 short
    out = models.process(mpart, [RawRecord("blocks", 0, 1, b"m", models.codec.encode([bad]))])
    assert [r.reason for r in out.rejects] == ["bad_block"]
    assert "numeric_values" in out.rejects[0].message
    mpart.dirty.add("m/features")
    after = mpart.to_fields()
    assert after["m/features"] == before["m/features"]
    assert read_fields(after, ["__meta__"])["__meta__"]["rejects"] == 1
    # The same block, well formed, is applied afterwards as if the bad one had never come.
    out = models.process(mpart, [RawRecord("blocks", 0, 2, b"m", models.codec.encode([blocks[1]]))])
    assert not out.rejects
    view = mpart.streams["m/features"]
    assert view.counts["blocks"] == 2
    assert view.features["x"].totals[0] == 2  # one event in each of the first two blocks


def test_a_batch_of_blocks_is_cut_into_messages_that_fit(tmp_path: Path) -> None:
    """Stage 1 sends a batch's blocks in as few messages as stay under the limit, in order, none lost."""
    proc, models = _processors(tmp_path)
    schema = proc.decoder.reader_schema
    records = [RawRecord("m.f", 0, i, None, encode_plain(schema, {"event_id": f"e{i}", "event_time": 1000 * i,
                                                                   "x": float(i), "y": 1.0}))
               for i in range(301)]
    blocks = proc.process(proc.new_partition(0), records).blocks
    assert len(blocks) == 300
    one = len(models.codec.encode(blocks[:1]))
    limit = 20 * one  # about 20 blocks a message
    chunks = models.codec.encode_chunks(blocks, limit)
    assert all(len(value) <= limit for _, value in chunks)
    assert 15 <= len(chunks) <= 40  # as few as fit, not one per block
    decoded = [b for _, value in chunks for b in models.codec.decode(value)]
    assert [b["seq"] for b in decoded] == list(range(300))
    assert [b for chunk, _ in chunks for b in chunk] == blocks
    assert models.codec.encode_chunks([], limit) == []
    assert len(models.codec.encode_chunks(blocks[:1], 10)) == 1  # a block alone is never dropped


class _RefusingProducer:
    """Refuses every message as librdkafka does when its local queue is full."""

    def __init__(self) -> None:
        self.tries = 0

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        self.tries += 1
        raise BufferError("Local: Queue full")

    def poll(self, _timeout: float) -> int:
        return 0


def test_an_entry_kafka_refuses_stays_in_the_outbox_and_the_stage_keeps_running() -> None:
    from monitor.app.outbox import Outbox
    from monitor.io.state import MemoryStore
    from monitor.ops.metrics import Metrics

    outbox = Outbox(MemoryStore(), Metrics(), "alerts", "blocks")
    producer = _RefusingProducer()
    outbox.producer = producer  # type: ignore[assignment]
    outbox.add(("t", 0), {"blk:t:0:000000000000": b"m\nvalue"})
    outbox.publish(wait=0.0)  # no exception escapes
    assert producer.tries == 1
    assert "blk:t:0:000000000000" in outbox.pending and not outbox.inflight
    outbox.publish(wait=0.0)
    assert producer.tries == 1  # not retried on every loop: after a pause


@settings(max_examples=100, deadline=None)
@given(fields=st.dictionaries(st.text(min_size=1, max_size=5),
                              st.tuples(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9),
                                        st.dictionaries(st.text(max_size=8), st.integers(0, 10**9), max_size=6)),
                              max_size=5))
def test_categorical_counts_read_back_as_written(fields: dict[str, Any]) -> None:
    summaries = [(name, c, m, u, cats) for name, (c, m, u, cats) in fields.items()]
    names, categories, counts = pack_categorical(summaries)
    assert unpack_categorical(names, categories, counts) == summaries


def test_categorical_counts_that_do_not_match_their_categories_are_refused() -> None:
    names, _categories, counts = pack_categorical([("c", 3, 0, 0, {"a": 2, "b": 1})])
    try:
        unpack_categorical(names, [["a"]], counts)
    except ValueError as exc:
        assert "categorical_counts" in str(exc)
    else:
        raise AssertionError("a count without its category was accepted")


@pytest.mark.parametrize("spread", [5.0, 0.3])
def test_moments_of_a_feature_near_1_7e9_survive_blocks_and_the_merge(tmp_path: Path, spread: float) -> None:
    """Issue 11 #3: a feature around 1.7e9 with spread 5 had a negative variance from block sums of squares
    (std fell back to 1, Page-Hinkley false alarms); with spread 0.3 the std came out 39 (a blind detector).
    Through stage 1's blocks, their Avro encoding and stage 2's merge, the model's warm-up std and the
    totals' M2 now equal numpy's on the same values."""
    proc, models = small_model(tmp_path, [{"name": "x", "type": "double"}])
    schema = proc.decoder.reader_schema
    rng = np.random.default_rng(3)
    x = 1.7e9 + rng.normal(0.0, spread, 3_000)
    records = [RawRecord("m.f", 0, i, None, encode_plain(schema, {"event_id": f"e{i}", "event_time": 10 * i,
                                                                   "x": float(v)}))
               for i, v in enumerate(x)]
    part, mpart = proc.new_partition(0), models.new_partition(0)
    for lo in range(0, len(records), 500):
        blocks = proc.process(part, records[lo:lo + 500]).blocks
        if blocks:
            models.process(mpart, [RawRecord("blocks", 0, lo, b"m", models.codec.encode(blocks))])
    view = mpart.streams["m/features"]
    n, mean, m2 = view.warm["x"]
    assert n >= 500  # the warm-up is complete: whole 1 s slots of 100 events
    first = x[: int(n)]
    assert mean == pytest.approx(first.mean(), rel=1e-12)
    assert math.sqrt(m2 / (n - 1)) == pytest.approx(np.std(first - 1.7e9, ddof=1), rel=1e-6)
    totals = view.features["x"].totals
    merged = int(totals[FINITE])
    assert totals[M2] == pytest.approx(np.var(x[:merged] - 1.7e9) * merged, rel=1e-6)
