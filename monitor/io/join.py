"""Where predictions wait for their labels: a store keyed by event id, bounded by count and event time.

Writes are idempotent (the same prediction written twice is one entry), so the daemon writes a batch's
predictions before checkpointing it and a crash in between changes nothing.
"""

from __future__ import annotations

import json
import threading
from typing import Protocol

import redis

from monitor.errors import DependencyUnavailable

Prediction = tuple[float | None, float, int | None, str | None]  # score, predicted value, time, version


def encode_prediction(p: Prediction) -> bytes:
    return json.dumps(p, separators=(",", ":")).encode()


def decode_prediction(raw: bytes) -> Prediction:
    score, pred, t, version = json.loads(raw)
    return (score, float(pred), t, version)


class JoinStore(Protocol):
    def put(self, model: str, partition: int, entries: dict[str, tuple[bytes, int]], ttl_ms: int,
            max_entries: int) -> int:
        """Store predictions (id -> (value, event time)); drop older than ttl or beyond the cap; return dropped."""
        ...

    def get(self, model: str, ids: list[str]) -> dict[str, Prediction]: ...


class MemoryJoinStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[tuple[str, int], dict[str, tuple[bytes, int]]] = {}

    def put(self, model: str, partition: int, entries: dict[str, tuple[bytes, int]], ttl_ms: int,
            max_entries: int) -> int:
        with self._lock:
            box = self._data.setdefault((model, partition), {})
            box.update(entries)
            newest = max((t for _, t in box.values()), default=0)
            old = [k for k, (_, t) in box.items() if newest - t > ttl_ms]
            for k in old:
                del box[k]
            excess = sorted(box, key=lambda k: box[k][1])[: max(0, len(box) - max_entries)]
            for k in excess:
                del box[k]
            return len(old) + len(excess)

    def get(self, model: str, ids: list[str]) -> dict[str, Prediction]:
        with self._lock:
            out = {}
            for (m, _p), box in self._data.items():
                if m != model:
                    continue
                for i in ids:
                    if i in box:
                        out[i] = decode_prediction(box[i][0])
            return out


_PUT = """
local n = tonumber(ARGV[1])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
  i = i + 3
end
local dropped = 0
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if newest[2] then
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(newest[2]) - tonumber(ARGV[2])))
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    dropped = dropped + 1
  end
end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local ids = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    dropped = dropped + 1
  end
end
return dropped
"""


class RedisJoinStore:
    """Per predictions partition: a hash `{<prefix>:<group>:join:<model>:<p>}:preds` (id -> prediction) and a
    sorted set `...:time` (id by event time) for expiry; `<prefix>:<group>:join:<model>:partitions` lists them."""

    def __init__(self, client: redis.Redis[bytes], prefix: str, group: str) -> None:
        self.client = client
        self.prefix = prefix
        self.group = group
        self._put = client.register_script(_PUT)

    def _base(self, model: str, partition: int) -> str:
        return "{" + f"{self.prefix}:{self.group}:join:{model}:{partition}" + "}"

    def _index(self, model: str) -> str:
        return f"{self.prefix}:{self.group}:join:{model}:partitions"

    def put(self, model: str, partition: int, entries: dict[str, tuple[bytes, int]], ttl_ms: int,
            max_entries: int) -> int:
        if not entries:
            return 0
        base = self._base(model, partition)
        args: list[object] = [len(entries), ttl_ms, max_entries]
        for event_id, (value, t) in entries.items():
            args += [event_id, value, t]
        try:
            self.client.sadd(self._index(model), partition)
            return int(self._put(keys=[f"{base}:preds", f"{base}:time"], args=args))
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def get(self, model: str, ids: list[str]) -> dict[str, Prediction]:
        if not ids:
            return {}
        try:
            partitions = sorted(int(p) for p in self.client.smembers(self._index(model)))
            pipe = self.client.pipeline(transaction=False)
            for p in partitions:
                pipe.hmget(f"{self._base(model, p)}:preds", ids)
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        out: dict[str, Prediction] = {}
        for reply in replies:
            for event_id, raw in zip(ids, reply, strict=True):
                if raw is not None:
                    out[event_id] = decode_prediction(raw)
        return out
