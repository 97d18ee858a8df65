"""Every multi-key script and transaction stays in one Redis Cluster slot (issue 13).

The slot is computed by redis-py's CRC16 (`redis.crc.key_slot`), not by our code; the key names come from the
stores themselves. `assert_key_layout` (tests/helpers.py) checks the keys a real daemon run wrote, with the
server's own CLUSTER KEYSLOT when the suite runs on a cluster.
"""

from __future__ import annotations

import redis
from hypothesis import given
from hypothesis import strategies as st

from monitor.io.join import RedisJoinStore
from monitor.io.redis_client import key_slot
from monitor.io.redis_store import RedisStore

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1,
               max_size=40)
# A client that never connects: making the stores registers their scripts locally (a SHA1), nothing more.
OFFLINE = redis.Redis(host="127.0.0.1", port=1)


@given(prefix=NAME, group=NAME, topic=NAME, partition=st.integers(0, 100_000))
def test_a_partitions_state_offset_fence_and_outbox_share_a_slot(prefix: str, group: str, topic: str,
                                                                 partition: int) -> None:
    """The commit script and the read transaction touch these four keys (both stages: the blocks topic's
    partitions are stage 2's)."""
    keys = RedisStore(OFFLINE, prefix, group).keys(topic, partition)
    assert sorted(keys) == ["fence", "offset", "outbox", "state"]
    assert len({key_slot(k) for k in keys.values()}) == 1


@given(prefix=NAME, group=NAME, model=NAME, partition=st.integers(0, 100_000))
def test_the_join_scripts_keys_share_a_slot(prefix: str, group: str, model: str, partition: int) -> None:
    """The put script writes the predictions hash, the expiry set and the put log of one partition."""
    keys = RedisJoinStore(OFFLINE, prefix, group).partition_keys(model, partition)
    assert len(keys) == 3 and len({key_slot(k) for k in keys}) == 1


def test_partitions_spread_over_the_slots() -> None:
    """One tag per partition, not one for everything: 96 partitions land on many slots (a cluster shares
    the load), checked against the CRC16 of the tag alone."""
    store = RedisStore(OFFLINE, "mm", "model-monitor")
    slots = {key_slot(store.keys("features", p)["state"]) for p in range(96)}
    assert len(slots) > 90
    assert key_slot(store.keys("features", 7)["state"]) == key_slot("mm:model-monitor:features:7")


def test_cluster_urls_are_checked_before_connecting() -> None:
    """A cluster URL with a database other than 0, a seed that is not host:port, or no node is a clear
    config error; redis:// stays a one-server client (made without connecting)."""
    import pytest

    from monitor.errors import ConfigError
    from monitor.io.redis_client import connect, is_cluster

    for url, why in [("redis+cluster://127.0.0.1:7000/1", "only database 0"),
                     ("redis+cluster://127.0.0.1:7000,nonsense", "not host:port"),
                     ("rediss+cluster://user:pw@/0", "names no node")]:
        with pytest.raises(ConfigError, match=why):
            connect(url)
    assert is_cluster("REDIS+CLUSTER://h:1") and not is_cluster("redis://h:1/0")
    assert isinstance(connect("redis://127.0.0.1:1/0"), redis.Redis)
