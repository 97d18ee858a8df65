"""The Redis `StateStore`: state, outbox and offset of a partition written by one atomic Lua script.

Keys share a hash tag per partition, so a partition lives in one Redis Cluster slot (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitor.errors import DependencyUnavailable, FencedError, OffsetConflict
from monitor.io.redis_client import REDIS_ERRORS, RedisClient, connect
from monitor.io.state import PartitionSnapshot

# Check everything before the first write: Redis scripts are atomic but have no rollback.
_COMMIT = """
local fence = redis.call('GET', KEYS[2])
if fence ~= ARGV[1] then return {'FENCED', fence or ''} end
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

    def _read(self, topic: str, partition: int, bump: bool) -> PartitionSnapshot:
        k = self.keys(topic, partition)
        try:
            if bump:
                self.client.sadd(self.index_key, f"{topic}:{partition}")
            pipe = self.client.pipeline(transaction=True)
            if bump:
                pipe.incr(k["fence"])
            else:
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

    def acquire(self, topic: str, partition: int) -> PartitionSnapshot:
        return self._read(topic, partition, bump=True)

    def read(self, topic: str, partition: int) -> PartitionSnapshot:
        return self._read(topic, partition, bump=False)

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
        k = self.keys(topic, partition)
        args: list[Any] = [fence, "" if expected_offset is None else expected_offset, new_offset, len(fields),
                           len(deletes)]
        for name, value in fields.items():
            args += [name, value]
        args += list(deletes)
        for name, value in outbox.items():
            args += [name, value]
        try:
            status, value = self._commit(keys=[k["offset"], k["fence"], k["state"], k["outbox"]], args=args)
        except REDIS_ERRORS as exc:
            # The reply may be lost after the script ran: the caller re-reads the stored offset.
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        if status == b"FENCED":
            raise FencedError(f"{topic}[{partition}] fence {fence} is stale (now {_s(value)})")
        if status == b"CONFLICT":
            stored = _s(value)
            raise OffsetConflict(expected_offset, int(stored) if stored else None)

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


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
