"""Connecting to Redis: one server or a Redis Cluster, chosen by the URL's scheme.

    redis://[user:password@]host:port/db     one server (rediss:// with TLS, unix:///path.sock?db=0)
    redis+cluster://[user:password@]host:port[,host:port...]  a Redis Cluster, found from any of these seed
                                             nodes (rediss+cluster:// with TLS)

The cluster client (redis-py's `RedisCluster`) discovers the other nodes and the slot map from the seed
node, follows MOVED/ASK redirections and re-reads the slot map after a failover. It reads from masters only:
a replica can be behind its master, and the fence and offset checks must see the newest values.

Every multi-key script and transaction of this package names keys of one hash tag, so one slot
(docs/architecture.md, "State in Redis"); `tests/test_key_layout.py` proves it for every key family.
"""

from __future__ import annotations

import time
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from monitor.errors import ConfigError, DependencyUnavailable

# What a Redis call can raise: RedisClusterException ("cannot be connected", "slot not covered") is not a
# RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
RedisClient: TypeAlias = "redis.Redis | RedisCluster"
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def connect(url: str, timeout: float = 5.0, wait_s: float = 0.0) -> Any:
    """A client for `url` (typed `Any`: the two clients share their command methods, not a base class).

    One server connects lazily, on the first command. A cluster client reads the slot map when it is made:
    if no seed answers, this retries for `wait_s` seconds, then raises `DependencyUnavailable`."""
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                              "health_check_interval": 10}
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        return redis.Redis.from_url(url, **common)
    netloc, slash, path = rest.partition("/")
    user, at, hosts = netloc.rpartition("@")
    seeds = [h for h in hosts.split(",") if h]
    if not seeds:
        raise ConfigError("redis_url: a redis+cluster:// URL names no node")
    others = []
    for seed in seeds[1:]:
        host, _, port = seed.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"redis_url: cluster seed {seed!r} is not host:port")
        others.append(ClusterNode(host, int(port)))  # type: ignore[no-untyped-call]
    plain = f"{CLUSTER_SCHEMES[scheme.lower()]}://{user}{at}{seeds[0]}{slash}{path}"
    db = urlsplit(plain).path.strip("/")
    if db not in ("", "0"):
        raise ConfigError(f"redis_url: a Redis Cluster has only database 0, the URL names /{db}")
    # No retries inside the client: the daemon's own loop retries after an outage pause (and says it is not
    # ready meanwhile). After a timeout the client re-reads the slot map from every node it knows, each with
    # its socket timeout: 2 s keeps a cluster that hangs as a whole from holding a call for more than ~15 s.
    cluster = {**common, "socket_timeout": min(timeout, 2.0), "socket_connect_timeout": min(timeout, 2.0),
               "retry": Retry(NoBackoff(), 0)}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return RedisCluster.from_url(plain, startup_nodes=others, **cluster)
        except REDIS_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise DependencyUnavailable(f"redis: cluster unreachable ({type(exc).__name__}: {exc})") from exc
            time.sleep(0.5)


def key_slot(key: str) -> int:
    """The cluster slot of `key` (CRC16 of its hash tag, if it has one, mod 16384)."""
    from redis.crc import key_slot as _slot

    return int(_slot(key.encode()))
