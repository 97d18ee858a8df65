"""Issue 13 on three Kafka brokers and a Redis Cluster (`make test-cluster`): a rolling restart moves no
partition with static membership, and a chaos run of every fault kind loses and doubles nothing.

Skipped on the one-broker, one-Redis stack of `make test`: these kill brokers and Redis masters.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import FAULTS, ClusterStack, chaos, rolling_restart_moves
from tests.helpers import Setup

FOLDER = Path(os.environ["MM_STACK_DIR"]) if os.environ.get("MM_STACK_DIR") else None
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not ClusterStack.is_cluster(FOLDER),
                                 reason="needs the three-broker Kafka and the Redis Cluster: make test-cluster")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterStack]:
    assert FOLDER is not None
    stack = ClusterStack(FOLDER)
    yield stack
    # Whatever a failed test left stopped is started again for the tests after it.
    stack.run("start-service", "kafka", check=False)
    stack.run("start-service", "redis", check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.test_model_view import build_reference

    return build_reference(tmp_path_factory.mktemp("ref"))


def _setup(cluster: ClusterStack, tmp: Path, partitions: int = 6) -> Setup:
    setup = Setup(uuid.uuid4().hex[:10], cluster.bootstrap, cluster.redis_url, tmp, partitions=partitions)
    setup.create_topics()
    return setup


def test_topics_are_replicated_three_times_with_two_in_sync(cluster: ClusterStack, tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    setup = _setup(cluster, tmp_path)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    md = admin.list_topics(setup.features, timeout=10)
    assert {len(p.replicas) for p in md.topics[setup.features].partitions.values()} == {3}
    res = ConfigResource(ResourceType.TOPIC, setup.features)
    config = next(iter(admin.describe_configs([res]).values())).result(30)
    assert config["min.insync.replicas"].value == "2"


def test_a_rolling_restart_moves_no_partition_with_static_membership(cluster: ClusterStack, tmp_path: Path,
                                                                     reference: Any) -> None:
    """Three replicas (both stages), each restarted in turn with SIGTERM: with an instance id each gets its
    own partitions back and no other partition moves; without, the same restart moves partitions (the
    measure can fail)."""
    (tmp_path / "static").mkdir()
    (tmp_path / "dynamic").mkdir()
    static = rolling_restart_moves(cluster, _setup(cluster, tmp_path / "static"), reference, static=True)
    dynamic = rolling_restart_moves(cluster, _setup(cluster, tmp_path / "dynamic"), reference, static=False)
    print(f"rolling restart of 3 replicas over {static.partitions} input partitions: moved {static.moved} with "
          f"static membership, {dynamic.moved} without; Redis per input record: "
          f"{static.redis_commands_per_record:.3f} commands, {static.redis_bytes_per_record:.1f} bytes")
    assert static.moved == 0
    assert dynamic.moved > 0


def test_chaos_every_fault_kind_loses_and_doubles_nothing(cluster: ClusterStack, tmp_path: Path,
                                                          reference: Any) -> None:
    """`make chaos` at a smaller size: each fault kind at least once (kill -9 and SIGSTOP of a replica, kill -9
    of a Redis master and of a partition's leader broker, a rolling restart) under a steady producer."""
    result = chaos(cluster, _setup(cluster, tmp_path), reference, faults=len(FAULTS) + 3)
    print(result.table())
    assert set(result.faults) == set(FAULTS)
    assert result.produced == result.figures.events + result.figures.dead_lettered
