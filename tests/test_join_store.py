"""The label join store: waiting labels are looked up again only where a prediction came since (issue 12)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.io.join import JoinStore, MemoryJoinStore, RedisJoinStore, encode_prediction
from monitor.io.redis_client import connect


@pytest.fixture(params=["memory", "redis"])
def joins(request: pytest.FixtureRequest) -> Iterator[JoinStore]:
    if request.param == "memory":
        yield MemoryJoinStore()
        return
    request.applymarker(pytest.mark.integration)
    client = connect(request.getfixturevalue("redis_url"))
    yield RedisJoinStore(client, prefix=f"j{request.getfixturevalue('unique')}", group="g")


def _put(joins: JoinStore, partition: int, ids: list[str]) -> None:
    joins.put("m", partition, {i: (encode_prediction((0.9, 1.0, 1_000, None)), 1_000) for i in ids}, 10**9, 10**6)


def test_waiting_labels_are_looked_up_where_their_prediction_came_since(joins: JoinStore) -> None:
    _put(joins, 0, ["a"])
    _put(joins, 1, ["b"])
    found, marks = joins.get_since("m", ["a"], ["x", "y"], {})  # no marks: everything, everywhere
    assert set(found) == {"a"} and set(marks) == {0, 1}
    _put(joins, 1, ["x", "c"])
    found, marks = joins.get_since("m", [], ["x", "y"], marks)
    assert set(found) == {"x"}
    found, again = joins.get_since("m", [], ["x", "y"], marks)
    assert found == {} and again == marks  # nothing came: nothing looked up, marks unchanged
    _put(joins, 0, ["y"])
    found, _ = joins.get_since("m", ["b"], ["y"], marks)  # the batch's own ids are always looked up
    assert set(found) == {"y", "b"}


@pytest.mark.integration
def test_redis_asks_only_for_ids_its_log_names_and_everything_when_the_log_was_trimmed(redis_url: str,
                                                                                      unique: str) -> None:
    """A prediction written behind the log's back is not found through a mark (proof that the lookup was
    narrowed), is found without one, and a mark older than the log's first entry means a full lookup."""
    client = connect(redis_url)
    joins = RedisJoinStore(client, prefix=f"j{unique}", group="g")
    _put(joins, 0, ["a"])
    _, marks = joins.get_since("m", [], ["ghost"], {})
    base = "{" + f"j{unique}:g:join:m:0" + "}"
    client.hset(f"{base}:preds", "ghost", encode_prediction((0.5, 0.0, 2_000, None)))
    _put(joins, 0, ["b"])
    found, marks2 = joins.get_since("m", [], ["ghost", "b"], marks)
    assert set(found) == {"b"}  # "ghost" is in the hash but no put since the mark named it
    found, _ = joins.get_since("m", [], ["ghost"], {})
    assert set(found) == {"ghost"}
    client.xtrim(f"{base}:log", maxlen=0)  # the log no longer reaches back to the mark
    _put(joins, 0, ["c"])
    found, _ = joins.get_since("m", [], ["ghost"], marks2)
    assert set(found) == {"ghost"}


DAY = 86_400_000


def test_a_prediction_waits_until_both_its_partition_and_every_labels_partition_are_a_ttl_past_it(
        joins: JoinStore) -> None:
    """Expiry by both topics' progress: with the labels' watermark unknown (-1) or behind, predictions months
    old stay; once every labels partition is past a prediction's time + ttl, it goes (issue 17)."""
    ttl = 7 * DAY
    old = {"old": (encode_prediction((0.2, 0.0, 0, None)), 0)}
    joins.put("m", 0, old, ttl, 10**6, -1)
    later = {f"t{k}": (encode_prediction((0.2, 0.0, k * 30 * DAY, None)), k * 30 * DAY) for k in range(1, 4)}
    assert joins.put("m", 0, later, ttl, 10**6, -1) == 0  # 90 days on, labels not read: nothing expires
    assert set(joins.get("m", ["old", "t1"])) == {"old", "t1"}
    assert joins.put("m", 0, {"t4": (encode_prediction((0.2, 0.0, 4 * 30 * DAY, None)), 4 * 30 * DAY)}, ttl,
                     10**6, 5 * DAY) == 0  # labels 5 days in: "old" (day 0) could still get its label
    assert joins.put("m", 0, {"t5": (encode_prediction((0.2, 0.0, 5 * 30 * DAY, None)), 5 * 30 * DAY)}, ttl,
                     10**6, 35 * DAY) == 1  # labels past day 7: "old" goes; t1 (day 30) stays until day 37
    assert set(joins.get("m", ["old", "t1"])) == {"t1"}
    # Offline (no labels side): the partition's own newest entry decides, as before.
    assert joins.put("m", 1, {"a": (encode_prediction((0.2, 0.0, 0, None)), 0)}, ttl, 10**6) == 0
    assert joins.put("m", 1, {"b": (encode_prediction((0.2, 0.0, 8 * DAY, None)), 8 * DAY)}, ttl, 10**6) == 1


def test_progress_is_kept_per_side_and_partition_and_only_moves_forward(joins: JoinStore) -> None:
    from monitor.io.join import LABELS, PREDICTIONS, watermark

    joins.put("m", 2, {"x": (encode_prediction((None, 1.0, 500, None)), 500)}, DAY, 10**6, -1)
    joins.advance("m", PREDICTIONS, 2, 400)  # a replay of predictions puts older ones again: ignored
    joins.advance("m", LABELS, 0, 300)
    joins.advance("m", LABELS, 0, 200)  # a label now waits from 200: the labels' progress goes back to it
    joins.advance("m", LABELS, 1, 900)
    progress = joins.progress("m")
    assert progress == {PREDICTIONS: {2: 500}, LABELS: {0: 200, 1: 900}}
    assert watermark(progress[LABELS], 2) == 200 and watermark(progress[LABELS], 3) is None
    assert watermark(progress[PREDICTIONS], 3) is None  # partitions 0 and 1 have put nothing yet
