"""The one exception hierarchy of model-monitor.

Library errors are translated at the boundary (`raise DecodeError(...) from exc`).
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base class of every error model-monitor raises on purpose."""


class ConfigError(MonitorError):
    """The configuration file or an environment override is invalid."""


class DecodeError(MonitorError):
    """A record could not be turned into a valid event; it goes to the dead-letter topic.

    `reason` is a short stable code (it becomes the `mm.error.reason` header).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DependencyUnavailable(MonitorError):
    """Redis, Kafka or a schema registry is unreachable: pause and retry, never dead-letter.

    `dependency` names it (`redis`, `kafka`, `schema_registry`, ...): the label of the outage metric and log;
    by default the message's prefix before the first colon."""

    def __init__(self, message: str, dependency: str | None = None) -> None:
        super().__init__(message)
        self.dependency = dependency or message.split(":", 1)[0].strip().replace(" ", "_")


class FencedError(MonitorError):
    """Another instance took over this partition; our writes for it are rejected."""


class OffsetConflict(MonitorError):
    """The stored offset is not the one this instance expected: reload the partition from the store."""

    def __init__(self, expected: int | None, stored: int | None) -> None:
        super().__init__(f"stored offset {stored} differs from expected {expected}")
        self.expected = expected
        self.stored = stored


class StateBehind(MonitorError):
    """The store's fence is below this instance's: the store forgot acknowledged writes (a Redis failover lost
    the last writes before its replica took over). Take the partition again and re-consume from what it has."""


class StateLost(MonitorError):
    """A partition has state but no stored offset (or the reverse): the store lost data."""
