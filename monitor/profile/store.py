"""Where reference profiles live: immutable versions and an active pointer per model (Redis or memory)."""

from __future__ import annotations

from typing import Protocol

import redis

from monitor.core.profiles import ReferenceProfile
from monitor.errors import DependencyUnavailable, MonitorError

# -- storing ---------------------------------------------------------------------------------------


class ReferenceStore(Protocol):
    def put(self, profile: ReferenceProfile) -> None: ...
    def get(self, model: str, version: str) -> ReferenceProfile: ...
    def versions(self, model: str) -> list[str]: ...
    def activate(self, model: str, version: str) -> None: ...
    def active_version(self, model: str) -> str | None: ...
    def next_version(self, model: str) -> str: ...


class MemoryReferenceStore:
    """In-process reference store, for unit tests and offline replay."""

    def __init__(self) -> None:
        self._profiles: dict[tuple[str, str], str] = {}
        self._active: dict[str, str] = {}

    def put(self, profile: ReferenceProfile) -> None:
        key = (profile.model, profile.version)
        if key in self._profiles:
            raise MonitorError(f"reference {profile.model} {profile.version} exists; profiles are immutable")
        self._profiles[key] = profile.to_json()

    def get(self, model: str, version: str) -> ReferenceProfile:
        if (model, version) not in self._profiles:
            raise MonitorError(f"no reference {version} for model {model}")
        return ReferenceProfile.from_json(self._profiles[(model, version)])

    def versions(self, model: str) -> list[str]:
        return [v for m, v in self._profiles if m == model]

    def activate(self, model: str, version: str) -> None:
        self.get(model, version)
        self._active[model] = version

    def active_version(self, model: str) -> str | None:
        return self._active.get(model)

    def next_version(self, model: str) -> str:
        return f"v{len(self.versions(model)) + 1}"


class RedisReferenceStore:
    """Profiles as immutable JSON strings: `<prefix>:ref:<model>:v:<version>`, a `versions` list,
    an `active` pointer and a `seq` counter for automatic version names."""

    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
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
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def get(self, model: str, version: str) -> ReferenceProfile:
        try:
            raw = self.client.get(self._k(model, "v", version))
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        if raw is None:
            raise MonitorError(f"no reference {version} for model {model}")
        return ReferenceProfile.from_json(raw)

    def versions(self, model: str) -> list[str]:
        try:
            return [v.decode() for v in self.client.lrange(self._k(model, "versions"), 0, -1)]
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def activate(self, model: str, version: str) -> None:
        self.get(model, version)
        try:
            self.client.set(self._k(model, "active"), version)
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def active_version(self, model: str) -> str | None:
        try:
            raw = self.client.get(self._k(model, "active"))
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        return None if raw is None else raw.decode()

    def next_version(self, model: str) -> str:
        try:
            return f"v{self.client.incr(self._k(model, 'seq'))}"
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc


def profile_size(profile: ReferenceProfile) -> int:
    return len(profile.to_json().encode())
