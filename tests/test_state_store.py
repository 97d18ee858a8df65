"""MemoryStore and RedisStore keep the same promises: fenced, offset-guarded, atomic commits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.errors import FencedError, OffsetConflict, StateBehind, StateLost
from monitor.io.redis_client import connect, is_cluster
from monitor.io.redis_store import RedisStore
from monitor.io.state import MemoryStore, StateStore, check_consistent


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    request.applymarker(pytest.mark.integration)
    url = request.getfixturevalue("redis_url")
    unique = request.getfixturevalue("unique")
    yield RedisStore(connect(url), prefix=f"p{unique}", group="g")


def test_first_commit_and_read_back(store: StateStore) -> None:
    """A new partition has no offset; a commit stores state, outbox and offset together."""
    snap = store.acquire("t", 0)
    assert snap.offset is None and snap.fields == {} and snap.fence >= 1
    store.commit("t", 0, snap.fence, None, 10, {"a": b"1"}, {"id1": b"m\nx"})
    again = store.read("t", 0)
    assert again.offset == 10 and again.fields == {"a": b"1"} and again.outbox == {"id1": b"m\nx"}
    assert store.partitions() == [("t", 0)]


def test_stale_fence_writes_nothing(store: StateStore) -> None:
    """After another owner acquires the partition, the old owner's commit is refused and changes nothing."""
    old = store.acquire("t", 1)
    store.commit("t", 1, old.fence, None, 5, {"a": b"old"}, {})
    new = store.acquire("t", 1)
    assert new.fence > old.fence
    with pytest.raises(FencedError):
        store.commit("t", 1, old.fence, 5, 9, {"a": b"zombie"}, {"z": b"m\nz"})
    snap = store.read("t", 1)
    assert snap.offset == 5 and snap.fields == {"a": b"old"} and snap.outbox == {}


def test_offset_guard_refuses_a_replayed_batch(store: StateStore) -> None:
    """A commit whose expected offset is not the stored one raises OffsetConflict and writes nothing."""
    snap = store.acquire("t", 2)
    store.commit("t", 2, snap.fence, None, 100, {"a": b"1"}, {})
    with pytest.raises(OffsetConflict) as info:
        store.commit("t", 2, snap.fence, None, 100, {"a": b"2"}, {})
    assert info.value.stored == 100
    assert store.read("t", 2).fields == {"a": b"1"}


def test_outbox_entries_are_removed_after_delivery(store: StateStore) -> None:
    """outbox_done forgets exactly the confirmed ids."""
    snap = store.acquire("t", 3)
    store.commit("t", 3, snap.fence, None, 1, {"a": b"1"}, {"x": b"m\n1", "y": b"m\n2"})
    store.outbox_done("t", 3, ["x"])
    assert store.read("t", 3).outbox == {"y": b"m\n2"}


def test_acquiring_many_partitions_at_once_is_acquiring_each(store: StateStore) -> None:
    """`acquire_many` (a rebalance's partitions in one round trip on one Redis server): each partition's
    offset, state and outbox as `acquire` reads them, under a new fence above every one before, which
    refuses the previous owner's writes; a new partition reads as empty; every partition is listed."""
    old = {p: store.acquire("t", p) for p in (5, 6)}
    store.commit("t", 5, old[5].fence, None, 40, {"a": b"5"}, {"o": b"m\n5"})
    store.commit("t", 6, old[6].fence, None, 60, {"b": b"6"}, {})
    snaps = store.acquire_many([("t", 5), ("t", 6), ("t", 7)])
    assert list(snaps) == [("t", 5), ("t", 6), ("t", 7)]
    assert (snaps[("t", 5)].offset, snaps[("t", 5)].fields, snaps[("t", 5)].outbox) == (40, {"a": b"5"},
                                                                                        {"o": b"m\n5"})
    assert (snaps[("t", 6)].offset, snaps[("t", 6)].fields, snaps[("t", 6)].outbox) == (60, {"b": b"6"}, {})
    assert (snaps[("t", 7)].offset, snaps[("t", 7)].fields) == (None, {})
    for p in (5, 6):
        assert snaps[("t", p)].fence > old[p].fence
        with pytest.raises(FencedError):
            store.commit("t", p, old[p].fence, store.read("t", p).offset, 99, {"z": b"zombie"}, {})
    store.commit("t", 7, snaps[("t", 7)].fence, None, 1, {"c": b"7"}, {})
    assert store.read("t", 7).offset == 1
    assert {("t", 5), ("t", 6), ("t", 7)} <= set(store.partitions())


def test_committing_many_partitions_at_once_is_committing_each(store: StateStore) -> None:
    """`commit_many` (a consume's checkpoints, one round trip on one Redis server): each commit is checked and
    written on its own, as `commit` would: in one call, a good commit is written while a stale fence, an
    offset that moved, and a fence the store never handed out are refused, each with `commit`'s error,
    writing nothing of theirs."""
    from monitor.io.state import Commit

    snaps = {p: store.acquire("t", p) for p in range(10, 14)}
    store.commit("t", 11, snaps[11].fence, None, 5, {"a": b"11"}, {})
    stale = snaps[12].fence
    snaps[12] = store.acquire("t", 12)  # another owner took it
    results = store.commit_many([
        Commit("t", 10, snaps[10].fence, None, 7, {"a": b"10"}, {"o": b"m\n10"}),
        Commit("t", 11, snaps[11].fence, None, 9, {"a": b"zombie"}, {}),  # the stored offset is 5 now
        Commit("t", 12, stale, None, 3, {"a": b"zombie"}, {"z": b"m\nz"}),
        Commit("t", 13, snaps[13].fence + 10, None, 3, {"a": b"ahead"}, {}),
        Commit("t", 11, snaps[11].fence, 5, 8, {"b": b"11"}, {"p": b"m\n11"}, ["a"]),
    ])
    assert [type(r) for r in results] == [type(None), OffsetConflict, FencedError, StateBehind, type(None)]
    assert (store.read("t", 10).offset, store.read("t", 10).fields, store.read("t", 10).outbox) == (
        7, {"a": b"10"}, {"o": b"m\n10"})
    assert (store.read("t", 11).offset, store.read("t", 11).fields, store.read("t", 11).outbox) == (
        8, {"b": b"11"}, {"p": b"m\n11"})
    for p in (12, 13):
        assert (store.read("t", p).offset, store.read("t", p).fields, store.read("t", p).outbox) == (None, {}, {})
    assert store.commit_many([]) == []


def test_state_without_offset_is_an_alarm() -> None:
    """State with no offset (or the reverse) raises StateLost instead of resuming silently."""
    from monitor.io.state import PartitionSnapshot

    check_consistent("t", 0, PartitionSnapshot(1, None, {}, {}))
    check_consistent("t", 0, PartitionSnapshot(1, 5, {"a": b"1"}, {}))
    with pytest.raises(StateLost):
        check_consistent("t", 0, PartitionSnapshot(1, None, {"a": b"1"}, {}))
    with pytest.raises(StateLost):
        check_consistent("t", 0, PartitionSnapshot(1, 5, {}, {}))


@pytest.mark.integration
def test_redis_keys_share_one_hash_tag(redis_url: str, unique: str) -> None:
    """All keys of a partition carry the same {hash tag}, so one Redis Cluster slot holds them."""
    client = connect(redis_url)
    store = RedisStore(client, prefix=f"p{unique}", group="grp")
    snap = store.acquire("topic.a", 4)
    store.commit("topic.a", 4, snap.fence, None, 7, {"f": b"1"}, {"o": b"m\n1"})
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{{p{unique}:grp:topic.a:4}}:*"))
    assert keys == [f"{{p{unique}:grp:topic.a:4}}:{name}" for name in ("fence", "offset", "outbox", "state")]


@pytest.mark.integration
def test_redis_acl_user(redis_url: str, unique: str) -> None:
    """A Redis ACL user with a password in the URL works; a wrong password is an outage, not a crash."""
    from monitor.errors import DependencyUnavailable

    admin = connect(redis_url)
    user = f"mm_{unique}"
    # A cluster keeps users per node: the user is made on every node.
    on_all = {"target_nodes": "all"} if is_cluster(redis_url) else {}
    admin.execute_command("ACL", "SETUSER", user, "on", ">s3cret", "~*", "+@all", **on_all)
    scheme, _, rest = redis_url.partition("://")
    try:
        store = RedisStore.from_url(f"{scheme}://{user}:s3cret@{rest}", f"p{unique}", "g")
        snap = store.acquire("t", 0)
        store.commit("t", 0, snap.fence, None, 3, {"a": b"1"}, {})
        assert store.read("t", 0).offset == 3
        with pytest.raises(DependencyUnavailable):
            RedisStore.from_url(f"{scheme}://{user}:nope@{rest}", f"p{unique}", "g").read("t", 0)
    finally:
        admin.execute_command("ACL", "DELUSER", user, **on_all)


def test_a_commit_deletes_the_fields_it_names_in_the_same_write(store: StateStore) -> None:
    """Issue 12: a checkpoint writes the fields that changed and deletes those no state refers to any more."""
    snap = store.acquire("t", 0)
    store.commit("t", 0, snap.fence, None, 5, {"a": b"1", "b": b"2", "c": b"3"}, {})
    store.commit("t", 0, snap.fence, 5, 9, {"a": b"4"}, {}, ["b", "never-there"])
    after = store.read("t", 0)
    assert after.fields == {"a": b"4", "c": b"3"} and after.offset == 9
    with pytest.raises(OffsetConflict):  # nothing of a refused write happens, deletes included
        store.commit("t", 0, snap.fence, 5, 12, {}, {}, ["c"])
    assert store.read("t", 0).fields == {"a": b"4", "c": b"3"}


@pytest.mark.integration
def test_a_store_that_forgot_writes_is_found_behind_and_the_next_token_is_above_the_forgotten_one(
        redis_url: str, unique: str) -> None:
    """What a failover that loses the last acknowledged writes looks like (the keys set back to what they
    were, as the promoted replica has them): a commit with the forgotten token raises StateBehind, writes
    nothing; the next acquire hands out a token above the forgotten one (a counter would repeat it)."""
    client = connect(redis_url)
    store = RedisStore(client, prefix=f"p{unique}", group="g")
    first = store.acquire("t", 0)
    store.commit("t", 0, first.fence, None, 5, {"a": b"1"}, {})
    keys = store.keys("t", 0)
    before = {name: client.dump(key) for name, key in keys.items() if name != "outbox"}
    forgotten = store.acquire("t", 0)  # a rebalance: this instance takes the partition again...
    store.commit("t", 0, forgotten.fence, 5, 9, {"a": b"2"}, {"x": b"m\nx"})  # ...and writes
    for name, raw in before.items():  # the failover: the promoted replica never got the last two writes
        client.restore(keys[name], 0, raw, replace=True)
    client.delete(keys["outbox"])
    with pytest.raises(StateBehind):
        store.commit("t", 0, forgotten.fence, 9, 12, {"a": b"3"}, {})
    snap = store.read("t", 0)
    assert (snap.fence, snap.offset, snap.fields, snap.outbox) == (first.fence, 5, {"a": b"1"}, {})
    again = store.acquire("t", 0)
    assert again.fence > forgotten.fence > first.fence and again.offset == 5
