"""Fixtures: one real Kafka broker and one real Redis per test session, unique names per test."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """KAFKA_BOOTSTRAP_SERVERS / REDIS_URL from the environment, or a stack started for this session."""
    have = {k: os.environ[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL") if os.environ.get(k)}
    if len(have) == 2:
        yield have
        return
    stack_dir = tmp_path_factory.mktemp("stack")
    env = {**os.environ, "MM_STACK_DIR": str(stack_dir)}
    script = REPO / "deploy" / "local" / "stack.sh"
    out = subprocess.run(["bash", str(script), "up"], env=env, check=True, capture_output=True, text=True)
    values = dict(have)
    for line in Path(out.stdout.strip()).read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values.setdefault(key, value)
    try:
        yield values
    finally:
        subprocess.run(["bash", str(script), "down"], env=env, check=False, capture_output=True)


@pytest.fixture
def kafka_bootstrap(stack: dict[str, str]) -> str:
    return stack["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
def redis_url(stack: dict[str, str]) -> str:
    return stack["REDIS_URL"]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A client for the session's Redis: one server, or a Redis Cluster (`make test-cluster`)."""
    from monitor.io.redis_client import connect

    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A short unique token for topic names, group ids and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    """Daemon subprocesses a test starts; whatever is left (even SIGSTOPped) is killed afterwards."""
    import signal

    started: list[Any] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.signal(signal.SIGCONT)
        d.kill()
