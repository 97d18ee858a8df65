"""Where reference profiles live: immutable versions and an active pointer per model.

The protocol and the in-memory store; the Redis one is `monitor.io.references.RedisReferenceStore`."""

from __future__ import annotations

from typing import Protocol

from monitor.core.profiles import ReferenceProfile
from monitor.errors import MonitorError

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


def profile_size(profile: ReferenceProfile) -> int:
    return len(profile.to_json().encode())
