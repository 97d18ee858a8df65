"""What `notify` remembers: which alert ids each receiver got, and which incidents Alertmanager holds firing.

Keys (single-key commands only, so any Redis Cluster slot does):

    <prefix>:<notify group>:notify:sent:<receiver>     sorted set: alert id -> epoch ms it was delivered
    <prefix>:<notify group>:notify:sending:<receiver>  hash: alert id -> epoch ms its delivery began (while it runs)
    <prefix>:<notify group>:notify:firing              hash: incident key -> JSON of the alert posted for it

A delivery is begun (`begin`) before the request goes out and marked sent right after the receiver accepted
it, before the alerts topic's offset is committed: a restart reads the uncommitted alerts again and skips every
sent one; one begun but never marked (a crash while it was in flight) is `in_doubt`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from monitor.errors import DependencyUnavailable
from monitor.io.redis_client import REDIS_ERRORS, RedisClient


class NotifyStore(Protocol):
    def sent(self, receiver: str, alert_id: str) -> bool: ...

    def mark(self, receiver: str, alert_id: str, now_ms: int) -> None: ...

    def begin(self, receiver: str, alert_id: str, now_ms: int) -> None: ...

    def in_doubt(self, receiver: str, alert_id: str) -> bool: ...

    def abandon(self, receiver: str, alert_id: str) -> None: ...

    def forget_before(self, receiver: str, before_ms: int) -> None: ...

    def firing(self) -> dict[str, dict[str, Any]]: ...

    def set_firing(self, incident: str, posted: dict[str, Any]) -> None: ...

    def end_firing(self, incident: str) -> None: ...


class MemoryNotifyStore:
    """In memory: unit tests and a notify without Redis (marks are lost with the process)."""

    def __init__(self) -> None:
        self.marks: dict[str, dict[str, int]] = {}
        self.sending: dict[str, dict[str, int]] = {}
        self.open: dict[str, dict[str, Any]] = {}

    def sent(self, receiver: str, alert_id: str) -> bool:
        return alert_id in self.marks.get(receiver, {})

    def mark(self, receiver: str, alert_id: str, now_ms: int) -> None:
        self.marks.setdefault(receiver, {})[alert_id] = now_ms
        self.sending.get(receiver, {}).pop(alert_id, None)

    def begin(self, receiver: str, alert_id: str, now_ms: int) -> None:
        self.sending.setdefault(receiver, {})[alert_id] = now_ms

    def in_doubt(self, receiver: str, alert_id: str) -> bool:
        return alert_id in self.sending.get(receiver, {})

    def abandon(self, receiver: str, alert_id: str) -> None:
        self.sending.get(receiver, {}).pop(alert_id, None)

    def forget_before(self, receiver: str, before_ms: int) -> None:
        marks = self.marks.get(receiver, {})
        for alert_id in [a for a, t in marks.items() if t < before_ms]:
            del marks[alert_id]

    def firing(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.open.items()}

    def set_firing(self, incident: str, posted: dict[str, Any]) -> None:
        self.open[incident] = dict(posted)

    def end_firing(self, incident: str) -> None:
        self.open.pop(incident, None)


class RedisNotifyStore:
    def __init__(self, client: RedisClient, prefix: str, group: str) -> None:
        self.client = client
        self.base = f"{prefix}:{group}:notify"

    def _sent_key(self, receiver: str) -> str:
        return f"{self.base}:sent:{receiver}"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: notify {what}: {type(exc).__name__}", dependency="redis") from exc

    def sent(self, receiver: str, alert_id: str) -> bool:
        return self._call("read a mark", self.client.zscore, self._sent_key(receiver), alert_id) is not None

    def mark(self, receiver: str, alert_id: str, now_ms: int) -> None:
        self._call("write a mark", self.client.zadd, self._sent_key(receiver), {alert_id: now_ms})
        self._call("end a delivery", self.client.hdel, f"{self.base}:sending:{receiver}", alert_id)

    def begin(self, receiver: str, alert_id: str, now_ms: int) -> None:
        self._call("begin a delivery", self.client.hset, f"{self.base}:sending:{receiver}", alert_id, now_ms)

    def in_doubt(self, receiver: str, alert_id: str) -> bool:
        return bool(self._call("read a delivery", self.client.hexists, f"{self.base}:sending:{receiver}",
                               alert_id))

    def abandon(self, receiver: str, alert_id: str) -> None:
        self._call("abandon a delivery", self.client.hdel, f"{self.base}:sending:{receiver}", alert_id)

    def forget_before(self, receiver: str, before_ms: int) -> None:
        self._call("trim marks", self.client.zremrangebyscore, self._sent_key(receiver), "-inf", f"({before_ms}")

    def firing(self) -> dict[str, dict[str, Any]]:
        raw = self._call("read firing incidents", self.client.hgetall, f"{self.base}:firing")
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}

    def set_firing(self, incident: str, posted: dict[str, Any]) -> None:
        self._call("write a firing incident", self.client.hset, f"{self.base}:firing", incident,
                   json.dumps(posted, sort_keys=True))

    def end_firing(self, incident: str) -> None:
        self._call("end a firing incident", self.client.hdel, f"{self.base}:firing", incident)
