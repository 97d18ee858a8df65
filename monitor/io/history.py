"""Drift statistics over time, for reports: a capped Redis stream per model, written best effort.

Not part of the exactly-once state: a lost or repeated point only changes a chart.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from monitor.io.redis_client import REDIS_ERRORS, RedisClient

log = structlog.get_logger("monitor.history")
MAX_POINTS = 20_000


class DriftHistory:
    def __init__(self, client: RedisClient | None, prefix: str, group: str) -> None:
        self.client = client
        self.prefix = prefix
        self.group = group

    def key(self, model: str) -> str:
        return f"{self.prefix}:{self.group}:history:{model}"

    def record(self, model: str, stream: str, partition: int, event_time: int,
               values: dict[str, tuple[Any, ...]]) -> None:
        """`values`: feature -> (statistic, value, threshold[, level: "drift" | "possible" | ""])."""
        if self.client is None:
            return
        entry: dict[Any, Any] = {"s": stream, "p": str(partition), "t": str(event_time),
                                 "v": json.dumps({f: list(v) for f, v in values.items()})}
        try:
            self.client.xadd(self.key(model), entry, maxlen=MAX_POINTS, approximate=True)
        except REDIS_ERRORS as exc:
            log.warning("history.unavailable", error=type(exc).__name__)

    def read(self, model: str) -> list[dict[str, Any]]:
        """Points oldest first: {stream, partition, time, values: {feature: [statistic, value, threshold, level
        (the model view's: "drift", "possible" or "")]}}."""
        if self.client is None:
            return []
        out = []
        points: list[Any] = self.client.xrange(self.key(model)) or []
        for _id, fields in points:
            f = {_text(k): _text(v) for k, v in fields.items()}
            out.append({"stream": f["s"], "partition": int(f["p"]), "time": int(f["t"]),
                        "values": json.loads(f["v"])})
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
