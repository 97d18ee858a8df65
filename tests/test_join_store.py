"""The label join store: waiting labels are looked up again only where a prediction came since (issue 12)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from monitor.io.join import JoinStore, MemoryJoinStore, RedisJoinStore, encode_prediction


@pytest.fixture(params=["memory", "redis"])
def joins(request: pytest.FixtureRequest) -> Iterator[JoinStore]:
    if request.param == "memory":
        yield MemoryJoinStore()
        return
    request.applymarker(pytest.mark.integration)
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
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
    client = redis.Redis.from_url(redis_url)
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
