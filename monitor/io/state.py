"""Where partition state lives: the `StateStore` protocol and `MemoryStore`, a real in-process store.

`MemoryStore` backs unit tests and offline replay; `monitor.io.redis_store.RedisStore` backs the daemon.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from monitor.errors import FencedError, MonitorError, OffsetConflict, StateBehind, StateLost


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """What the store holds for one input partition, read when the partition is assigned."""

    fence: int
    offset: int | None  # next offset to consume; None = never checkpointed
    fields: dict[str, bytes] = field(default_factory=dict)
    outbox: dict[str, bytes] = field(default_factory=dict)  # alert_id -> model name + b"\n" + Avro bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """One partition's checkpoint, as `StateStore.commit` takes it (for `commit_many`)."""

    topic: str
    partition: int
    fence: int
    expected_offset: int | None
    new_offset: int
    fields: dict[str, bytes]
    outbox: dict[str, bytes]
    deletes: Sequence[str] = ()


class StateStore(Protocol):
    def acquire(self, topic: str, partition: int) -> PartitionSnapshot:
        """Take ownership (a fence token above every one handed out before) and read the partition's offset,
        state and outbox."""
        ...

    def acquire_many(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], PartitionSnapshot]:
        """`acquire` of each partition (one round trip where the store allows: a rebalance hands out many)."""
        ...

    def read(self, topic: str, partition: int) -> PartitionSnapshot:
        """Read without taking ownership (for `status`)."""
        ...

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
        """Atomically write state fields (and delete `deletes`), outbox entries and the new offset, if the fence
        and offset still match.

        Raises `FencedError` if another owner took the partition, `StateBehind` if the stored fence is below
        ours (the store forgot writes it acknowledged), `OffsetConflict` if the stored offset is not
        `expected_offset`; in each case nothing is written.
        """
        ...

    def commit_many(self, commits: Sequence[Commit]) -> list[MonitorError | None]:
        """`commit` of each (one round trip where the store allows: a consume brings batches of many
        partitions). Each commit is atomic and checked on its own; the answer, in order, is None where it was
        written, or the error `commit` would have raised (`DependencyUnavailable` for all when the store did
        not answer: those may have been written, as with `commit`)."""
        ...

    def outbox_done(self, topic: str, partition: int, alert_ids: list[str]) -> None:
        """Forget outbox entries whose delivery Kafka confirmed."""
        ...

    def positions(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int | None]]:
        """The stored (fence, offset) of each partition, without its state: the cheap check that the store
        still holds what was written."""
        ...

    def partitions(self) -> list[tuple[str, int]]:
        """Every input partition the store has state for."""
        ...

    def ping(self) -> None: ...


def check_consistent(topic: str, partition: int, snap: PartitionSnapshot) -> None:
    """State without an offset (or the reverse) means the store lost data: never resume silently."""
    if (snap.offset is None) != (not snap.fields):
        have = "state but no offset" if snap.offset is None else "an offset but no state"
        raise StateLost(f"{topic}[{partition}] has {have}: the store lost data")


class MemoryStore:
    """A `StateStore` in process memory with the same guarantees as the Redis one (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fence: dict[tuple[str, int], int] = {}
        self._offset: dict[tuple[str, int], int] = {}
        self._fields: dict[tuple[str, int], dict[str, bytes]] = {}
        self._outbox: dict[tuple[str, int], dict[str, bytes]] = {}

    def acquire(self, topic: str, partition: int) -> PartitionSnapshot:
        key = (topic, partition)
        with self._lock:
            self._fence[key] = self._fence.get(key, 0) + 1
            return self._snapshot(key)

    def acquire_many(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], PartitionSnapshot]:
        return {(t, p): self.acquire(t, p) for t, p in partitions}

    def read(self, topic: str, partition: int) -> PartitionSnapshot:
        with self._lock:
            return self._snapshot((topic, partition))

    def _snapshot(self, key: tuple[str, int]) -> PartitionSnapshot:
        return PartitionSnapshot(
            self._fence.get(key, 0),
            self._offset.get(key),
            dict(self._fields.get(key, {})),
            dict(self._outbox.get(key, {})),
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
        key = (topic, partition)
        with self._lock:
            if self._fence.get(key, 0) > fence:
                raise FencedError(f"{topic}[{partition}] fence {fence} is stale")
            if self._fence.get(key, 0) < fence:
                raise StateBehind(f"{topic}[{partition}] fence {fence} is ahead of the store's")
            stored = self._offset.get(key)
            if stored != expected_offset:
                raise OffsetConflict(expected_offset, stored)
            state = self._fields.setdefault(key, {})
            state.update(fields)
            for name in deletes:
                state.pop(name, None)
            self._outbox.setdefault(key, {}).update(outbox)
            self._offset[key] = new_offset

    def commit_many(self, commits: Sequence[Commit]) -> list[MonitorError | None]:
        out: list[MonitorError | None] = []
        for c in commits:
            try:
                self.commit(c.topic, c.partition, c.fence, c.expected_offset, c.new_offset, c.fields, c.outbox,
                            c.deletes)
                out.append(None)
            except (FencedError, StateBehind, OffsetConflict) as exc:
                out.append(exc)
        return out

    def positions(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int | None]]:
        with self._lock:
            return {tp: (self._fence.get(tp, 0), self._offset.get(tp)) for tp in partitions}

    def outbox_done(self, topic: str, partition: int, alert_ids: list[str]) -> None:
        with self._lock:
            box = self._outbox.get((topic, partition), {})
            for alert_id in alert_ids:
                box.pop(alert_id, None)

    def partitions(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(set(self._offset) | set(self._fields))

    def ping(self) -> None:
        return None
