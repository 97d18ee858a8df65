"""RELIABILITY.md scenarios 4-6: Redis killed and restarted, Redis unreachable, the broker restarted.

These stop and start services, so they run on a Kafka broker and a Redis server of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    BackgroundProducer,
    DaemonProcess,
    Setup,
    fast_config,
    http_get,
    stored_offsets,
    total_offsets,
    verify_exactly_once,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "local" / "stack.sh"
INCIDENTS = ["shift:feature=age,start=6000,size=1.5"]
BAD = {i: ("garbage", bytes(range(200, 230))) for i in (700, 9_000)}


class PrivateStack:
    def __init__(self, folder: Path) -> None:
        self.env = {**{k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")},
                    "MM_STACK_DIR": str(folder)}
        self.folder = folder
        out = self.run("up")
        values = dict(line.removeprefix("export ").split("=", 1) for line in Path(out.strip()).read_text().splitlines())
        self.bootstrap, self.redis_url = values["KAFKA_BOOTSTRAP_SERVERS"], values["REDIS_URL"]

    def run(self, *args: str) -> str:
        return subprocess.run(["bash", str(STACK), *args], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def redis_pids(self) -> list[int]:
        """Every redis-server of the stack: one, or the six nodes of a cluster."""
        return [int(p.read_text()) for p in sorted((self.folder / "redis").glob("*/pid"))]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    stack = PrivateStack(tmp_path_factory.mktemp("private-stack"))
    yield stack
    stack.run("down")


@pytest.fixture
def setup(private: PrivateStack, unique: str, tmp_path: Path) -> Setup:
    s = Setup(unique, private.bootstrap, private.redis_url, tmp_path, batch=50)
    s.create_topics()
    return s


def _run(setup: Setup, daemons: list[DaemonProcess]) -> tuple[DaemonProcess, BackgroundProducer, Path]:
    config = fast_config(setup, http={"host": "127.0.0.1", "port": setup.http_port})
    stream = BackgroundProducer(setup, 20_000, rate=2_000, seed=41, incidents=INCIDENTS, bad=BAD)
    d = DaemonProcess(config, setup.tmp / "daemon.log").start()
    daemons.append(d)
    wait_for_log(d, "partitions.assigned", 60)
    wait_until(lambda: stored_offsets(setup) > 3_000, 60, "progress before the fault")
    return d, stream, config


def _finish(setup: Setup, d: DaemonProcess, stream: BackgroundProducer, config: Path) -> str:
    rows, bad = stream.join()
    total = total_offsets(setup)
    wait_until(lambda: stored_offsets(setup) == total, 180, "the daemon to reach the end")
    figures = verify_exactly_once(setup, config, len(rows) + bad)
    assert d.terminate() == 0
    return str(figures)


def test_redis_killed_and_restarted(private: PrivateStack, setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 4: kill -9 of redis-server mid-stream, restarted on its AOF: nothing lost or applied twice
    (a write lost with the last second of AOF takes its offset with it, so the batch is simply redone)."""
    d, stream, config = _run(setup, daemons)
    private.run("stop-service", "redis", "--hard")
    killed = time.monotonic()
    wait_until(lambda: http_get(setup.http_port, "/readyz")[0] == 503, 30, "not ready while Redis is down")
    private.run("start-service", "redis")
    wait_until(lambda: http_get(setup.http_port, "/readyz")[0] == 200, 60, "ready again")
    recovered = time.monotonic() - killed
    figures = _finish(setup, d, stream, config)
    print(f"scenario 4: redis kill -9 + AOF restart, ready again after {recovered:.1f} s; {figures}")


def test_redis_unreachable_for_a_while(private: PrivateStack, setup: Setup,
                                       daemons: list[DaemonProcess]) -> None:
    """Scenario 5: Redis frozen (SIGSTOP) for 8 s: consumption pauses, nothing is dead-lettered, it resumes."""
    d, stream, config = _run(setup, daemons)
    for pid in private.redis_pids():
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: http_get(setup.http_port, "/readyz")[0] == 503, 30, "not ready while Redis hangs")
        time.sleep(8)  # the outage itself: how long Redis stays unreachable
    finally:
        for pid in private.redis_pids():
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: http_get(setup.http_port, "/readyz")[0] == 200, 60, "ready again")
    assert any(e.get("event") == "dependency.down" and e.get("dependency") == "redis" for e in d.logs())
    figures = _finish(setup, d, stream, config)
    print(f"scenario 5: redis unreachable 8 s; {figures}")


def test_broker_restarted(private: PrivateStack, setup: Setup, daemons: list[DaemonProcess]) -> None:
    """Scenario 6: the Kafka broker stopped and started again mid-stream."""
    d, stream, config = _run(setup, daemons)
    stopped = time.monotonic()
    private.run("stop-service", "kafka")
    time.sleep(3)  # the broker stays down this long
    private.run("start-service", "kafka")
    figures = _finish(setup, d, stream, config)
    print(f"scenario 6: broker restart (down {time.monotonic() - stopped:.0f} s incl. catch-up); {figures}")


def test_a_broker_outage_longer_than_freshness_raises_no_silence(private: PrivateStack, setup: Setup,
                                                                  daemons: list[DaemonProcess]) -> None:
    """Issue 11 #6: while the daemon cannot reach Kafka, a quiet partition says nothing about the stream: a
    broker down for twice `freshness_s` raises no `stream_stopped`, and everything is counted once after.
    (freshness_s 12 s: longer than librdkafka's 10 s reconnect backoff, so the producer is back in time.)"""
    config = fast_config(setup, http={"host": "127.0.0.1", "port": setup.http_port})
    raw = yaml.safe_load(config.read_text())
    raw["models"][0]["freshness_s"] = 12.0
    config.write_text(yaml.safe_dump(raw))
    stream = BackgroundProducer(setup, 20_000, rate=2_000, seed=42, incidents=INCIDENTS, bad=BAD)
    d = DaemonProcess(config, setup.tmp / "daemon.log").start()
    daemons.append(d)
    wait_for_log(d, "partitions.assigned", 60)
    wait_until(lambda: stored_offsets(setup) > 3_000, 60, "progress before the fault")
    private.run("stop-service", "kafka")
    wait_until(lambda: any(e.get("event") == "kafka.error" for e in d.logs()), 30, "the daemon to see the outage")
    time.sleep(24)  # the outage itself: twice freshness_s
    private.run("start-service", "kafka")
    figures = _finish(setup, d, stream, config)
    silences = [e for e in d.logs() if e.get("event") == "alert.raised" and e.get("check") == "stream_stopped"]
    assert silences == [], silences
    print(f"broker down 24 s with freshness_s 12: no silence alert; {figures}")
