"""Reference profiles in Redis (`monitor.profile.store.ReferenceStore` on a server or a cluster)."""

from __future__ import annotations

from monitor.core.profiles import ReferenceProfile
from monitor.errors import DependencyUnavailable, MonitorError
from monitor.io.redis_client import REDIS_ERRORS, RedisClient


class RedisReferenceStore:
    """Profiles as immutable JSON strings: `<prefix>:ref:<model>:v:<version>`, a `versions` list,
    an `active` pointer and a `seq` counter for automatic version names."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _k(self, model: str, *parts: str) -> str:
        return ":".join((self.prefix, "ref", model, *parts))

    def put(self, profile: ReferenceProfile) -> None:
        try:
            created = self.client.set(self._k(profile.model, "v", profile.version), profile.to_json(), nx=True)
            if not created:
                raise MonitorError(f"reference {profile.model} {profile.version} exists; profiles are immutable")
            self.client.rpush(self._k(profile.model, "versions"), profile.version)
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def get(self, model: str, version: str) -> ReferenceProfile:
        try:
            raw = self.client.get(self._k(model, "v", version))
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        if raw is None:
            raise MonitorError(f"no reference {version} for model {model}")
        return ReferenceProfile.from_json(raw)

    def versions(self, model: str) -> list[str]:
        try:
            return [_text(v) for v in self.client.lrange(self._k(model, "versions"), 0, -1)]
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def activate(self, model: str, version: str) -> None:
        self.get(model, version)
        try:
            self.client.set(self._k(model, "active"), version)
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def active_version(self, model: str) -> str | None:
        try:
            raw = self.client.get(self._k(model, "active"))
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        return None if raw is None else _text(raw)

    def next_version(self, model: str) -> str:
        try:
            return f"v{self.client.incr(self._k(model, 'seq'))}"
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
