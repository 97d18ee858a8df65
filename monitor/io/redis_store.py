"""The Redis `StateStore`: state, outbox and offset of a partition written by one atomic Lua script.

Keys share a hash tag per partition, so a partition lives in one Redis Cluster slot (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.cluster import RedisCluster

from monitor.errors import DependencyUnavailable, FencedError, MonitorError, OffsetConflict, StateBehind
from monitor.io.redis_client import REDIS_ERRORS, RedisClient, connect
from monitor.io.state import Commit, PartitionSnapshot

# Take ownership: a new fence token above the stored one and above the server's clock in microseconds, so a
# token handed out after a failover that lost the last writes is still above every token handed out before
# it (a counter alone would hand the same token to two owners). Read offset, state and outbox with it.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now)
fence = string.format('%.0f', fence)
redis.call('SET', KEYS[2], fence)
return {fence, redis.call('GET', KEYS[1]) or '', redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"""

# Check everything before the first write: Redis scripts are atomic but have no rollback. A stored fence
# below ours means the store forgot our acquire (BEHIND), above ours that another owner took over (FENCED).
_COMMIT = """
local fence = redis.call('GET', KEYS[2])
if fence ~= ARGV[1] then
  if tonumber(fence or '0') < tonumber(ARGV[1]) then return {'BEHIND', fence or ''} end
  return {'FENCED', fence or ''}
end
local stored = redis.call('GET', KEYS[1])
if (stored or '') ~= ARGV[2] then return {'CONFLICT', stored or ''} end
local n_state = tonumber(ARGV[4])
local n_gone = tonumber(ARGV[5])
local i = 6
for _ = 1, n_state do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, n_gone do
  redis.call('HDEL', KEYS[3], ARGV[i])
  i = i + 1
end
while i < #ARGV do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('SET', KEYS[1], ARGV[3])
return {'OK', ARGV[3]}
"""


class RedisStore:
    def __init__(self, client: RedisClient, prefix: str, group: str) -> None:
        self.client = client
        self.prefix = prefix
        self.group = group
        self._commit = client.register_script(_COMMIT)
        self._acquire = client.register_script(_ACQUIRE)

    @classmethod
    def from_url(cls, url: str, prefix: str, group: str, wait_s: float = 0.0) -> RedisStore:
        """One server or a Redis Cluster (`redis+cluster://`), see `monitor.io.redis_client.connect`."""
        return cls(connect(url, wait_s=wait_s), prefix, group)

    def base(self, topic: str, partition: int) -> str:
        return "{" + f"{self.prefix}:{self.group}:{topic}:{partition}" + "}"

    def keys(self, topic: str, partition: int) -> dict[str, str]:
        base = self.base(topic, partition)
        return {name: f"{base}:{name}" for name in ("offset", "fence", "state", "outbox")}

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:{self.group}:partitions"

    def _order(self, topic: str, partition: int) -> list[str]:
        k = self.keys(topic, partition)
        return [k["offset"], k["fence"], k["state"], k["outbox"]]

    def acquire(self, topic: str, partition: int) -> PartitionSnapshot:
        try:
            self.client.sadd(self.index_key, f"{topic}:{partition}")
            fence, offset, fields, outbox = self._acquire(keys=self._order(topic, partition))
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        return PartitionSnapshot(int(fence), int(offset) if offset else None, _pairs(fields), _pairs(outbox))

    def acquire_many(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], PartitionSnapshot]:
        """`acquire` of each partition; on one server in one round trip (a pipeline of the same script, each
        call atomic on its own), on a cluster one call each (their keys live in different slots)."""
        if isinstance(self.client, RedisCluster) or len(partitions) < 2:
            return {(t, p): self.acquire(t, p) for t, p in partitions}
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(self.index_key, *[f"{t}:{p}" for t, p in partitions])
            for t, p in partitions:
                self._acquire(keys=self._order(t, p), client=pipe)
            replies = pipe.execute()
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        out = {}
        for tp, (fence, offset, fields, outbox) in zip(partitions, replies[1:], strict=True):
            out[tp] = PartitionSnapshot(int(fence), int(offset) if offset else None, _pairs(fields), _pairs(outbox))
        return out

    def read(self, topic: str, partition: int) -> PartitionSnapshot:
        k = self.keys(topic, partition)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.get(k["fence"])
            pipe.get(k["offset"])
            pipe.hgetall(k["state"])
            pipe.hgetall(k["outbox"])
            fence, offset, fields, outbox = pipe.execute()
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        return PartitionSnapshot(
            int(fence or 0),
            None if offset is None else int(offset),
            {_s(f): v for f, v in fields.items()},
            {_s(f): v for f, v in outbox.items()},
        )

    def commit(
        self,
        topic: str,
        partition: int,
        fence: int,
        expected_offset: int | None,
        new_offset: int,
        fields: dict[str, bytes],
        outbox: dict[str, bytes],
        deletes: Sequence[str] = (),
    ) -> None:
        self._commit_one(Commit(topic, partition, fence, expected_offset, new_offset, fields, outbox, deletes))

    def _commit_one(self, c: Commit) -> None:
        try:
            status, value = self._commit(keys=self._order(c.topic, c.partition), args=_commit_args(c))
        except REDIS_ERRORS as exc:
            # The reply may be lost after the script ran: the caller re-reads the stored offset.
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        problem = _refusal(c, status, value)
        if problem is not None:
            raise problem

    def commit_many(self, commits: Sequence[Commit]) -> list[MonitorError | None]:
        """On one server, the commit scripts in one pipeline (not a transaction: each script is atomic and
        checked on its own, as alone); on a cluster, one call each (the partitions live in different slots)."""
        out: list[MonitorError | None] = []
        if isinstance(self.client, RedisCluster) or len(commits) < 2:
            for c in commits:
                try:
                    self._commit_one(c)
                    out.append(None)
                except (FencedError, StateBehind, OffsetConflict, DependencyUnavailable) as exc:
                    out.append(exc)
            return out
        try:
            pipe = self.client.pipeline(transaction=False)
            for c in commits:
                self._commit(keys=self._order(c.topic, c.partition), args=_commit_args(c), client=pipe)
            replies = pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            # Some scripts may have run: each caller re-reads its stored offset.
            unavailable = DependencyUnavailable(f"redis: {type(exc).__name__}")
            unavailable.__cause__ = exc
            return [unavailable] * len(commits)
        for c, reply in zip(commits, replies, strict=True):
            if isinstance(reply, Exception):  # this script failed (out of memory, ...), not the others
                failed = DependencyUnavailable(f"redis: {type(reply).__name__}")
                failed.__cause__ = reply
                out.append(failed)
            else:
                out.append(_refusal(c, *reply))
        return out

    def positions(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int | None]]:
        try:
            pipe = self.client.pipeline(transaction=False)  # on a cluster: one round trip per node
            for topic, partition in partitions:
                k = self.keys(topic, partition)
                pipe.get(k["fence"])
                pipe.get(k["offset"])
            replies = pipe.execute()
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        return {tp: (int(replies[2 * i] or 0), None if replies[2 * i + 1] is None else int(replies[2 * i + 1]))
                for i, tp in enumerate(partitions)}

    def outbox_done(self, topic: str, partition: int, alert_ids: list[str]) -> None:
        if not alert_ids:
            return
        try:
            self.client.hdel(self.keys(topic, partition)["outbox"], *alert_ids)
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def partitions(self) -> list[tuple[str, int]]:
        try:
            members = self.client.smembers(self.index_key)
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        out = []
        for m in members:
            topic, _, part = _s(m).rpartition(":")
            out.append((topic, int(part)))
        return sorted(out)

    def ping(self) -> None:
        try:
            self.client.ping()
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc


def _commit_args(c: Commit) -> list[Any]:
    """The `_COMMIT` script's arguments: fence, expected and new offset, the counts, then the fields to write,
    the fields to delete and the outbox entries."""
    args: list[Any] = [c.fence, "" if c.expected_offset is None else c.expected_offset, c.new_offset,
                       len(c.fields), len(c.deletes)]
    for name, value in c.fields.items():
        args += [name, value]
    args += list(c.deletes)
    for name, value in c.outbox.items():
        args += [name, value]
    return args


def _refusal(c: Commit, status: bytes, value: bytes) -> MonitorError | None:
    """The error a `_COMMIT` reply means (None: written)."""
    where = f"{c.topic}[{c.partition}]"
    if status == b"BEHIND":
        return StateBehind(f"{where} fence {c.fence} is ahead of the store's ({_s(value) or 'none'}): "
                           f"the store lost acknowledged writes")
    if status == b"FENCED":
        return FencedError(f"{where} fence {c.fence} is stale (now {_s(value)})")
    if status == b"CONFLICT":
        stored = _s(value)
        return OffsetConflict(c.expected_offset, int(stored) if stored else None)
    return None


def _pairs(flat: list[bytes]) -> dict[str, bytes]:
    """HGETALL's reply inside a script: field, value, field, value..."""
    return {_s(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
