"""The state format (monitor.core.state_codec): versioned, binary, incremental; JSON state migrated on load."""

from __future__ import annotations

import copy
import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.state_codec import (
    BLOB_PREFIX,
    BLOCKS_FIELD,
    MAGIC,
    StateFormatError,
    changed_fields,
    encode_fields,
    read_fields,
    split_hot,
)
from monitor.io.state import MemoryStore


def test_a_closed_block_is_written_once_and_deleted_when_no_state_refers_to_it() -> None:
    block = np.arange(40, dtype=float) + 0.5  # a closed block: 40 floats, stored as a blob
    first = encode_fields({"f": {"closed": [block], "open": np.zeros(3)}})
    second = encode_fields({"f": {"closed": [block], "open": np.ones(3)}})
    blobs = [k for k in first if k.startswith(BLOB_PREFIX)]
    assert len(blobs) == 1 and blobs[0] in second
    changed, gone = changed_fields(second, first)
    assert list(changed) == ["f"] and gone == []  # only the field whose bytes changed
    third = encode_fields({"f": {"closed": [], "open": np.ones(3)}})
    changed, gone = changed_fields(third, second)
    assert gone == blobs


def test_the_memory_store_applies_the_deletes_of_a_commit() -> None:
    store = MemoryStore()
    fence = store.acquire("t", 0).fence
    store.commit("t", 0, fence, None, 1, {"a": b"1", "b": b"2"}, {})
    store.commit("t", 0, fence, 1, 2, {"a": b"3"}, {}, ["b"])
    assert store.read("t", 0).fields == {"a": b"3"}


def test_json_state_of_earlier_versions_is_read_and_a_newer_version_refused_by_name() -> None:
    old = {"__meta__": json.dumps({"events": 3, "rejects": 0}).encode()}
    assert read_fields(old)["__meta__"] == {"events": 3, "rejects": 0}
    newer = {"m/f": MAGIC + bytes([99]) + b"\x80"}
    with pytest.raises(StateFormatError, match=r"'m/f' has format version 99.*upgrade model-monitor"):
        read_fields(newer)
    with pytest.raises(StateFormatError, match=r"'x'.*neither"):
        read_fields({"x": b"\xff\xfe"})
    missing_blob = encode_fields({"f": {"v": np.arange(50, dtype=float) + 0.25}})
    with pytest.raises(StateFormatError, match="not stored"):
        read_fields({"f": missing_blob["f"]})


def test_integer_valued_vectors_take_a_fraction_of_their_float64_size() -> None:
    """A block summary is mostly counts: stored as narrow integers, it takes under half its float64 size."""
    counts = np.concatenate([np.array([500.0, 0, 0, 0, 500, 12.75, 499.3, -2.5, 3.1, 0, 0, 0]),
                             np.random.default_rng(1).integers(0, 200, 30).astype(float)])
    fields = encode_fields({"f": counts})
    size = sum(len(v) for v in fields.values())
    assert size < 0.5 * counts.nbytes  # 38 counts in 2 bytes, 4 floats in 8, the bitmap, headers
    assert read_fields(fields)["f"].tobytes() == counts.tobytes()


def test_a_labels_partition_at_max_pending_writes_its_new_labels_not_all_of_them() -> None:
    """50,000 labels waiting (the default max_pending): a checkpoint of the next 500 writes under 64 KiB (it was
    2.96 MB), and the state read back holds the same labels in the same order (the oldest is evicted first)."""
    from monitor.core.labels import LabelPartition, LabelRow
    from monitor.settings import PerformanceSettings

    settings = PerformanceSettings()
    part = LabelPartition("m", "labels", 0, "classifier", settings, None)
    written: dict[str, bytes] = {}
    offset = 0
    sizes = []
    while offset < settings.max_pending + 1_000:
        rows = [LabelRow(f"id-{offset + j}", float(j % 2), 1_767_225_600_000 + offset + j, offset + j)
                for j in range(500)]
        part.apply(rows, {})
        offset += 500
        fields = part.to_fields()
        changed, gone = changed_fields(fields, written)
        written = fields
        sizes.append(sum(len(v) for v in changed.values()) + sum(len(k) for k in gone))
    assert len(part.pending) == settings.max_pending and part.counts["evicted"] == 1_000
    assert max(sizes[-3:]) <= 64 * 1024, sizes[-3:]
    fresh = LabelPartition("m", "labels", 0, "classifier", settings, None)
    fresh.load_fields(written)
    assert list(fresh.pending.items()) == list(part.pending.items())
    assert fresh.to_fields() == written


vectors = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=12).map(np.array)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False),
                    st.text(max_size=4))
leaf = st.one_of(vectors, st.lists(vectors, min_size=1, max_size=4), st.floats(allow_nan=False),
                 st.dictionaries(st.sampled_from(["n", "mean", "m2"]), scalars, min_size=1),
                 st.lists(st.dictionaries(st.sampled_from(["a", "b", "__n__"]), st.integers(0, 9), min_size=1),
                          min_size=1, max_size=4),
                 scalars)
feature = st.fixed_dictionaries({"kind": st.just("numeric"), "totals": leaf,
                                 "window": st.fixed_dictionaries({"open": leaf, "closed": leaf})})


@settings(max_examples=150, deadline=None)
@given(states=st.dictionaries(st.sampled_from(["m/a", "m/b", "m/c", "__meta__"]), feature, min_size=1),
       nested=st.dictionaries(st.sampled_from(["x", "y"]), feature, max_size=2))
def test_moving_parts_into_group_fields_and_back_changes_nothing(states: dict[str, Any],
                                                                 nested: dict[str, Any]) -> None:
    """`split_hot` (plain and "*" paths) then `read_fields` gives back every state as it was, bit for bit."""
    states = {**states, "m/streams": {"features": nested, "slots": {"1": [1, 2]}}}
    before = plain_bits(copy.deepcopy(states))
    grouped = split_hot(copy.deepcopy(states), [("totals",), ("window", "open"), ("features", "*", "totals"),
                                                ("slots",)])
    grouped = split_hot(grouped, [("window", "closed"), ("features", "*", "window", "closed")], BLOCKS_FIELD)
    assert plain_bits(read_fields(encode_fields(grouped))) == before


def plain_bits(obj: Any) -> Any:
    """Comparable with ==, floats by their bits (NaN, -0.0)."""
    if isinstance(obj, dict):
        return {k: plain_bits(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain_bits(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return ("array", obj.dtype.str, obj.tobytes())
    if isinstance(obj, float):
        return ("float", struct.pack("<d", obj))
    return obj


def test_every_encoding_carries_the_blobs_it_refers_to_even_for_arrays_encoded_before() -> None:
    """Read-only arrays are encoded once (the ring of recent ids: chunks that did not change). Two equal ones
    share a blob; when one changes, the other's field must still bring the blob along (it once did not: a
    checkpoint deleted a blob the state still referred to)."""
    zeros = [np.zeros(32, dtype=np.uint32) for _ in range(2)]
    for z in zeros:
        z.flags.writeable = False
    first = encode_fields({"f": {"chunks": list(zeros)}})
    changed = np.arange(32, dtype=np.uint32)
    changed.flags.writeable = False
    second = encode_fields({"f": {"chunks": [changed, zeros[1]]}})
    written, gone = changed_fields(second, first)
    stored = {k: v for k, v in {**first, **written}.items() if k not in gone}
    back = read_fields(stored)["f"]["chunks"]
    assert [c.tolist() for c in back] == [changed.tolist(), [0] * 32]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 300), st.integers(0, 2**53)), max_size=60))
def test_the_compiled_varint_writer_agrees_with_the_definition(values: list[int]) -> None:
    from monitor.core.state_codec import _from_varints, varints
    from monitor.core.varint import encode_varints

    arr = np.array(values, dtype=np.int64)
    assert encode_varints(arr).tobytes() == varints(arr).tobytes()
    assert _from_varints(varints(arr), len(values)).tolist() == [float(v) for v in values]


@settings(max_examples=100, deadline=None)
@given(slots=st.lists(st.lists(st.one_of(st.integers(0, 10**6), st.floats(allow_nan=False), vectors), min_size=1,
                               max_size=6), min_size=1, max_size=8),
       keep=st.lists(st.booleans(), min_size=8, max_size=8))
def test_values_stored_once_encode_as_a_fresh_packed_and_always_carry_their_blobs(slots: list[list[Any]],
                                                                                 keep: list[bool]) -> None:
    """A frozen value encodes to the same fields as the same value packed afresh, at its first encoding and
    at every later one (memo hits included, read-only arrays inside); and a checkpoint that keeps only some
    of them still stores every blob its fields refer to (nothing deleted while referred to)."""
    from monitor.core.state_codec import Packed, stored_once

    for slot in slots:
        for v in slot:
            if isinstance(v, np.ndarray):
                v.flags.writeable = False
    fresh = encode_fields({"s": {"slots": [Packed(s, min_bytes=16) for s in slots]}})
    first = encode_fields({"s": {"slots": [stored_once(s, min_bytes=16) for s in slots]}})
    again = encode_fields({"s": {"slots": [stored_once(s, min_bytes=16) for s in slots]}})
    assert first == fresh and again == fresh
    kept = [s for s, k in zip(slots, keep, strict=False) if k]
    later = encode_fields({"s": {"slots": [stored_once(s, min_bytes=16) for s in kept]}})
    written, gone = changed_fields(later, first)
    stored = {k: v for k, v in {**first, **written}.items() if k not in gone}
    assert plain_bits(read_fields(stored)["s"]["slots"]) == plain_bits(kept)
