"""Where predictions wait for their labels: a store keyed by event id, bounded by count and event time.

Writes are idempotent (the same prediction written twice is one entry), so the daemon writes a batch's
predictions before checkpointing it and a crash in between changes nothing.

Expiry follows both topics, not one: each side records how far it has read in event time (`advance`:
predictions partition p -> the newest prediction time put, labels partition l -> the newest label time
checkpointed), and a prediction expires only once *both* its own partition and every labels partition are past
its time + `join_ttl_s` (`put`'s `labels_time`), as a waiting label expires only once every predictions
partition is past its time + `join_ttl_s` (`LabelPartition.apply`). One topic read far ahead of the other (a
replay, a backfill, catching up after an outage) then loses nothing: the side that runs ahead waits for the
other, bounded by `max_predictions` and `max_pending`.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol

from monitor.errors import DependencyUnavailable
from monitor.io.redis_client import REDIS_ERRORS, RedisClient

Prediction = tuple[float | None, float, int | None, str | None]  # score, predicted value, time, version
LOG_PUTS = 10_000  # puts remembered per predictions partition (ids put, for lookups of waiting labels)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sid_key(sid: str) -> tuple[int, int]:
    """A Redis stream id (`<ms>-<seq>`) as numbers, to compare."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def encode_prediction(p: Prediction) -> bytes:
    return json.dumps(p, separators=(",", ":")).encode()


def decode_prediction(raw: bytes) -> Prediction:
    score, pred, t, version = json.loads(raw)
    return (score, float(pred), t, version)


PREDICTIONS, LABELS = "p", "l"  # the two sides of the join, in `advance` and `progress`


def watermark(progress: dict[int, int], partitions: int) -> int | None:
    """How far every one of `partitions` partitions has read (the least of their progress), or None while one
    of them has not reported yet (`partitions` 0: the count is not known).

    >>> watermark({0: 50, 1: 20, 2: 90}, 3), watermark({0: 50, 2: 90}, 3), watermark({}, 0)
    (20, None, None)
    """
    if partitions <= 0 or any(p not in progress for p in range(partitions)):
        return None
    return min(progress[p] for p in range(partitions))


class JoinStore(Protocol):
    def put(self, model: str, partition: int, entries: dict[str, tuple[bytes, int]], ttl_ms: int,
            max_entries: int, labels_time: int | None = None) -> int:
        """Store predictions (id -> (value, event time)), record the partition's progress, and drop the entries
        past the ttl (older than min(newest here, `labels_time`) - ttl; `labels_time` None: the newest here
        alone, offline use) or beyond the cap; return how many were dropped."""
        ...

    def advance(self, model: str, side: str, partition: int, event_time: int) -> None:
        """Record how far `side` (`PREDICTIONS` or `LABELS`) partition `partition` has read, in event time: a
        predictions partition's progress only moves forward (its newest prediction put); a labels partition's
        is set as given (`LabelPartition.join_progress`: back to its oldest waiting label when one waits)."""
        ...

    def progress(self, model: str) -> dict[str, dict[int, int]]:
        """Each side's progress by partition: {"p": {partition: time}, "l": {...}}."""
        ...

    def get(self, model: str, ids: list[str]) -> dict[str, Prediction]: ...

    def get_since(self, model: str, ids: list[str], recheck: list[str], marks: dict[int, str]
                  ) -> tuple[dict[str, Prediction], dict[int, str]]:
        """`get` of `ids`, and of those of `recheck` (ids looked up before, found nowhere) that a predictions
        partition received since its mark in `marks` (partition -> a position in its log of ids put; a
        partition without a mark, or whose log no longer reaches back to it, is asked for all of `recheck`).
        Returns the predictions found and the new marks."""
        ...


class MemoryJoinStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[tuple[str, int], dict[str, tuple[bytes, int]]] = {}
        self._log: dict[tuple[str, int], list[list[str]]] = {}  # the ids of each put, in order
        self._progress: dict[str, dict[str, dict[int, int]]] = {}  # model -> side -> partition -> event time

    def put(self, model: str, partition: int, entries: dict[str, tuple[bytes, int]], ttl_ms: int,
            max_entries: int, labels_time: int | None = None) -> int:
        if entries:
            self.advance(model, PREDICTIONS, partition, max(t for _, t in entries.values()))
        with self._lock:
            box = self._data.setdefault((model, partition), {})
            box.update(entries)
            self._log.setdefault((model, partition), []).append(list(entries))
            newest = max((t for _, t in box.values()), default=0)
            horizon = newest if labels_time is None else min(newest, labels_time)
            old = [k for k, (_, t) in box.items() if horizon - t > ttl_ms]
            for k in old:
                del box[k]
            excess = sorted(box, key=lambda k: box[k][1])[: max(0, len(box) - max_entries)]
            for k in excess:
                del box[k]
            return len(old) + len(excess)

    def advance(self, model: str, side: str, partition: int, event_time: int) -> None:
        with self._lock:
            sides = self._progress.setdefault(model, {PREDICTIONS: {}, LABELS: {}})
            forward = side == PREDICTIONS
            sides[side][partition] = max(sides[side].get(partition, event_time), event_time) if forward \
                else event_time

    def progress(self, model: str) -> dict[str, dict[int, int]]:
        with self._lock:
            sides = self._progress.get(model, {PREDICTIONS: {}, LABELS: {}})
            return {side: dict(by) for side, by in sides.items()}

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

    def get_since(self, model: str, ids: list[str], recheck: list[str], marks: dict[int, str]
                  ) -> tuple[dict[str, Prediction], dict[int, str]]:
        with self._lock:
            out: dict[str, Prediction] = {}
            new_marks = {}
            for (m, p), box in self._data.items():
                if m != model:
                    continue
                log = self._log.get((m, p), [])
                new_marks[p] = str(len(log))
                mark = marks.get(p)
                if mark is None:
                    wanted = [*ids, *recheck]
                else:
                    recent = {i for put in log[int(mark):] for i in put}
                    wanted = [*ids, *(i for i in recheck if i in recent)]
                for i in wanted:
                    if i in box:
                        out[i] = decode_prediction(box[i][0])
            return out, new_marks


_PUT = """
local n = tonumber(ARGV[1])
local i = 4
local ids = {}
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
  ids[#ids + 1] = ARGV[i]
  i = i + 3
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[i], '*', 'ids', table.concat(ids, '\\n'))
local dropped = 0
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if newest[2] then
  local horizon = tonumber(newest[2])
  if ARGV[i + 1] ~= '' then  -- the labels' watermark: nothing expires before every labels partition is past it
    horizon = math.min(horizon, tonumber(ARGV[i + 1]))
  end
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (horizon - tonumber(ARGV[2])))
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

_ADVANCE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '0' or not current or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
"""


class RedisJoinStore:
    """Per predictions partition: a hash `{<prefix>:<group>:join:<model>:<p>}:preds` (id -> prediction) and a
    sorted set `...:time` (id by event time) for expiry; `<prefix>:<group>:join:<model>:partitions` lists them;
    `{<prefix>:<group>:join:<model>}:progress` holds each side's progress (`p:<partition>`, `l:<partition>`)."""

    def __init__(self, client: RedisClient, prefix: str, group: str) -> None:
        self.client = client
        self.prefix = prefix
        self.group = group
        self._put = client.register_script(_PUT)
        self._advance = client.register_script(_ADVANCE)

    def _progress_key(self, model: str) -> str:
        return "{" + f"{self.prefix}:{self.group}:join:{model}" + "}:progress"

    def advance(self, model: str, side: str, partition: int, event_time: int) -> None:
        try:
            self._advance(keys=[self._progress_key(model)],
                          args=[f"{side}:{partition}", int(event_time), int(side == PREDICTIONS)])
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def progress(self, model: str) -> dict[str, dict[int, int]]:
        try:
            raw = self.client.hgetall(self._progress_key(model))
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        out: dict[str, dict[int, int]] = {PREDICTIONS: {}, LABELS: {}}
        for key, value in raw.items():
            side, _, part = _s(key).partition(":")
            if side in out:
                out[side][int(part)] = int(float(_s(value)))
        return out

    def _base(self, model: str, partition: int) -> str:
        return "{" + f"{self.prefix}:{self.group}:join:{model}:{partition}" + "}"

    def partition_keys(self, model: str, partition: int) -> list[str]:
        """The keys `put`'s script writes together (one hash tag, so one cluster slot)."""
        base = self._base(model, partition)
        return [f"{base}:preds", f"{base}:time", f"{base}:log"]

    def _index(self, model: str) -> str:
        return f"{self.prefix}:{self.group}:join:{model}:partitions"

    def put(self, model: str, partition: int, entries: dict[str, tuple[bytes, int]], ttl_ms: int,
            max_entries: int, labels_time: int | None = None) -> int:
        if not entries:
            return 0
        args: list[Any] = [len(entries), ttl_ms, max_entries]
        for event_id, (value, t) in entries.items():
            args += [event_id, value, t]
        args += [LOG_PUTS, "" if labels_time is None else int(labels_time)]
        try:
            self.client.sadd(self._index(model), partition)
            dropped = int(self._put(keys=self.partition_keys(model, partition), args=args))
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        # After the entries: a label that sees this progress finds every prediction up to it in the store.
        self.advance(model, PREDICTIONS, partition, max(t for _, t in entries.values()))
        return dropped

    def get_since(self, model: str, ids: list[str], recheck: list[str], marks: dict[int, str]
                  ) -> tuple[dict[str, Prediction], dict[int, str]]:
        try:
            partitions = sorted(int(p) for p in self.client.smembers(self._index(model)))
            pipe = self.client.pipeline(transaction=False)
            for p in partitions:
                log = f"{self._base(model, p)}:log"
                if p in marks:  # what came since the mark, and where the log begins (trimmed past the mark?)
                    pipe.xrange(log, min="(" + marks[p], max="+")
                    pipe.xrange(log, min="-", max="+", count=1)
                else:
                    pipe.xrevrange(log, max="+", min="-", count=1)
            replies = pipe.execute()
            new_marks: dict[int, str] = {}
            wanted: dict[int, list[str]] = {}
            at = 0
            for p in partitions:
                if p in marks:
                    recent, first = replies[at], replies[at + 1]
                    at += 2
                    reaches = bool(first) and _sid_key(_s(first[0][0])) <= _sid_key(marks[p])
                    new_marks[p] = _s(recent[-1][0]) if recent else marks[p]
                    if reaches:
                        put = {i for _entry, f in recent for i in _s(f[b"ids"]).split("\n")}
                        wanted[p] = [*ids, *(i for i in recheck if i in put)]
                        continue
                else:
                    last = replies[at]
                    at += 1
                    new_marks[p] = _s(last[0][0]) if last else "0-0"
                wanted[p] = [*ids, *recheck]
            pipe = self.client.pipeline(transaction=False)
            asked = [(p, w) for p, w in wanted.items() if w]
            for p, w in asked:
                pipe.hmget(f"{self._base(model, p)}:preds", w)
            replies = pipe.execute() if asked else []
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        out: dict[str, Prediction] = {}
        for (_p, w), reply in zip(asked, replies, strict=True):
            for event_id, raw in zip(w, reply, strict=True):
                if raw is not None:
                    out[event_id] = decode_prediction(raw)
        return out, new_marks

    def get(self, model: str, ids: list[str]) -> dict[str, Prediction]:
        if not ids:
            return {}
        try:
            partitions = sorted(int(p) for p in self.client.smembers(self._index(model)))
            pipe = self.client.pipeline(transaction=False)
            for p in partitions:
                pipe.hmget(f"{self._base(model, p)}:preds", ids)
            replies = pipe.execute()
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        out: dict[str, Prediction] = {}
        for reply in replies:
            for event_id, raw in zip(ids, reply, strict=True):
                if raw is not None:
                    out[event_id] = decode_prediction(raw)
        return out
