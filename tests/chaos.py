"""Issue 13's cluster runs: partitions moved by a rolling restart, and the chaos run.

Both run three daemon replicas (both stages, the model view) on the stack of three Kafka brokers and a Redis
Cluster that `deploy/local/stack.sh` starts with MM_KAFKA_NODES=3 MM_REDIS_CLUSTER=1. `make chaos` runs
`python -m tests.chaos` (at least 100 faults, figures printed as a table); tests/test_cluster.py runs both at a
smaller size inside `make test-cluster`.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka.admin import AdminClient

from tests.helpers import (
    FAST_GROUP,
    MODEL_VIEW,
    BackgroundProducer,
    DaemonProcess,
    ModelViewFigures,
    Setup,
    both_stages_done,
    verify_model_view,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "local" / "stack.sh"
INCIDENTS = ["shift:feature=age,start=20000,size=1.5", "nan_burst:feature=credit_score,start=8000,length=3000,rate=0.4"]


class ClusterStack:
    """The running stack of `stack.sh` in `folder`: its nodes stopped and started one at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "MM_STACK_DIR": str(folder)}
        env = dict(line.removeprefix("export ").split("=", 1)
                   for line in (folder / "env").read_text().splitlines())
        self.bootstrap, self.redis_url = env["KAFKA_BOOTSTRAP_SERVERS"], env["REDIS_URL"]

    @staticmethod
    def is_cluster(folder: Path | None) -> bool:
        if folder is None:
            return False
        try:
            return ((folder / "kafka" / "nodes").read_text().strip() == "3"
                    and (folder / "redis" / "nodes").read_text().strip() == "6")
        except OSError:
            return False

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(STACK), *args], env=self.env, check=check, capture_output=True,
                              text=True)

    def redis_masters(self) -> list[int]:
        import redis

        masters = []
        for node in range(1, 7):
            port = int((self.folder / "redis" / str(node) / "port").read_text())
            try:
                if redis.Redis(port=port, socket_timeout=2).info("replication")["role"] == "master":
                    masters.append(node)
            except redis.RedisError:
                continue
        return masters

    def redis_totals(self) -> tuple[int, int]:
        """Commands processed and bytes received by the masters (INFO stats), summed."""
        import redis

        commands = received = 0
        for node in self.redis_masters():
            port = int((self.folder / "redis" / str(node) / "port").read_text())
            stats = redis.Redis(port=port, socket_timeout=2).info("stats")
            commands += int(stats["total_commands_processed"])
            received += int(stats["total_net_input_bytes"])
        return commands, received

    def redis_healthy(self) -> bool:
        return self.run("redis-healthy", check=False).returncode == 0

    def kill_redis_master(self, rng: random.Random) -> str:
        """kill -9 of a master; its replica takes over (cluster-node-timeout 2 s); the node is started again
        and rejoins as a replica; returns once every master has a replica again."""
        node = rng.choice(self.redis_masters())
        self.run("stop-node", "redis", str(node), "--hard")
        wait_until(lambda: len(self.redis_masters()) == 3, 60, "a replica to take over", interval=0.2)
        self.run("start-node", "redis", str(node))
        wait_until(self.redis_healthy, 90, "the Redis Cluster to be whole again", interval=0.5)
        return f"redis node {node}"

    def leader(self, topic: str, partition: int) -> int:
        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(topic, timeout=10)
        return int(md.topics[topic].partitions[partition].leader)

    def fully_replicated(self) -> bool:
        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=5)
        except Exception:
            return False
        if len(md.brokers) < 3:
            return False
        return all(len(p.isrs) == len(p.replicas) and p.leader >= 0
                   for t in md.topics.values() for p in t.partitions.values())

    def kill_leader_broker(self, topic: str, partition: int) -> str:
        """kill -9 of the broker leading `topic[partition]`, started again; returns once every partition of
        every topic has its whole ISR back."""
        node = self.leader(topic, partition)
        self.run("stop-node", "kafka", str(node), "--hard")
        self.run("start-node", "kafka", str(node))
        wait_until(self.fully_replicated, 180, "every partition to be fully replicated again", interval=0.5)
        return f"broker {node} (leader of {topic}[{partition}])"


@dataclass
class Replica:
    name: str
    config: Path
    log: Path
    proc: DaemonProcess | None = None

    def start(self) -> None:
        self.proc = DaemonProcess(self.config, self.log).start()

    def logs(self) -> list[dict[str, Any]]:
        """Every process this replica has been, one log file: its JSON lines."""
        return DaemonProcess(self.config, self.log).logs() if self.log.exists() else []

    def count(self, event: str) -> int:
        """Log lines of `event` over every process this replica has been."""
        return sum(f'"{event}"' in line for line in self.log.read_text().splitlines()) if self.log.exists() else 0

    def assigned_events(self) -> int:
        return self.count("partitions.assigned")


@dataclass
class Group:
    """Three replicas of one config, each with its own instance id (static membership) unless `static` is
    False; their logs, one file per replica across restarts, tell who owned which partition when."""

    setup: Setup
    config: dict[str, Any]
    static: bool = True
    names: tuple[str, ...] = ("a", "b", "c")
    replicas: dict[str, Replica] = field(default_factory=dict)
    started: list[DaemonProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.names:
            cfg = {**self.config, "http": {"host": "127.0.0.1", "port": 0}}
            if self.static:
                cfg["instance_id"] = f"{self.setup.unique}-{name}"
            path = self.setup.tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            self.replicas[name] = Replica(name, path, self.setup.tmp / f"{name}.log")

    def start(self, name: str) -> None:
        """Start a replica and wait until both its stages run (a SIGTERM before that would find Python's
        default handler, not the daemon's)."""
        r = self.replicas[name]
        before = r.count("daemon.started")
        r.start()
        assert r.proc is not None
        self.started.append(r.proc)
        wait_until(lambda: r.count("daemon.started") >= before + 2, 60, f"{name} to start", interval=0.05)

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.signal(signal.SIGCONT)
            proc.kill()

    def events(self) -> list[tuple[str, str, str, str]]:
        """(time, replica, assigned|revoked|lost, topic[partition]) from every replica's log, in time order."""
        out = []
        for name, r in self.replicas.items():
            for e in r.logs():
                kind = str(e.get("event", "")).removeprefix("partitions.")
                if kind in ("assigned", "revoked", "lost"):
                    for p in e["partitions"]:
                        out.append((e["timestamp"], name, kind, p.split("@")[0]))
        return sorted(out)

    def owners(self) -> dict[str, str | None]:
        """Who holds each partition now (None: revoked and not assigned again yet)."""
        held: dict[str, str | None] = {}
        for _t, name, kind, tp in self.events():
            if kind == "assigned":
                held[tp] = name
            elif held.get(tp) == name:
                held[tp] = None
        return held

    def moved(self, since: str) -> int:
        """Partitions given to another replica than the one that held them last, after `since`: a partition
        that goes back to the replica that held it (a static member restarted) is not a move."""
        last: dict[str, str] = {}
        moves = 0
        for t, name, kind, tp in self.events():
            if kind != "assigned":
                continue
            if t >= since and tp in last and last[tp] != name:
                moves += 1
            last[tp] = name
        return moves

    def settled(self, partitions: int, balanced: bool = True) -> bool:
        """Every input partition held and, if `balanced`, each replica holding its share (cooperative-sticky
        ends balanced; its first rounds give the newcomers nothing, so "everything held" alone comes too
        early). The chaos run does not ask for balance: after a broker kill the 100-fault run once saw the
        group settle at 6/6/0 and stay so (librdkafka made no further round); nothing is lost by it."""
        held = [o for tp, o in self.owners().items() if o is not None and not tp.startswith(self.setup.blocks)]
        share = Counter(held)
        return len(held) == partitions and (not balanced or
                                            all(share[n] >= partitions // len(self.names) for n in self.names))

    def restart(self, name: str, partitions: int, balanced: bool = True) -> None:
        """SIGTERM one replica, start it again, and wait until it holds partitions and every input partition
        has an owner."""
        r = self.replicas[name]
        assert r.proc is not None
        assert r.proc.terminate() == 0
        before = r.assigned_events()
        self.start(name)
        wait_until(lambda: r.assigned_events() > before and self.settled(partitions, balanced), 120,
                   f"{name} to hold partitions again")

    def rolling_restart(self, partitions: int, balanced: bool = True) -> None:
        for name in self.names:
            self.restart(name, partitions, balanced)


def now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def model_config(setup: Setup, **extra: Any) -> dict[str, Any]:
    """The model view with a consumer that notices a dead member within seconds. idle_timeout_s is longer
    than any fault keeps a partition from delivering (a broker restart, a pause past the session timeout), so
    the run's windows are the replay's."""
    path = setup.write_config({**MODEL_VIEW, "model_view": {"enabled": True, "idle_timeout_s": 120.0},
                               "consumer": FAST_GROUP, "batch": {"max_messages": 200, "timeout_s": 0.2},
                               "store_check_s": 1.0, **extra})
    return dict(yaml.safe_load(path.read_text()))


def put_reference(setup: Setup, reference: Any) -> None:
    from monitor.io.redis_client import connect
    from monitor.io.references import RedisReferenceStore

    refs = RedisReferenceStore(connect(setup.redis_url), setup.prefix)
    refs.put(reference)
    refs.activate(reference.model, reference.version)


@dataclass
class RestartFigures:
    moved: int
    partitions: int
    records: int  # input records (features + predictions) of the run
    redis_commands_per_record: float  # over the whole run (start, restarts and all), on the masters
    redis_bytes_per_record: float


def rolling_restart_moves(stack: ClusterStack, setup: Setup, reference: Any, static: bool) -> RestartFigures:
    """Three replicas settle, then a rolling restart, under a steady producer; the partitions moved and
    what the run cost Redis per input record."""
    put_reference(setup, reference)
    commands0, bytes0 = stack.redis_totals()
    # Static: a session long enough to outlast a restart (a member back in time keeps its partitions).
    slow = {**FAST_GROUP, "session.timeout.ms": "30000", "max.poll.interval.ms": "60000"}
    extra = {"consumer": slow} if static else {}
    group = Group(setup, model_config(setup, **extra), static=static)
    partitions = 2 * setup.partitions
    stream = BackgroundProducer(setup, 12_000, rate=400.0, seed=61)
    try:
        group.start_all()
        wait_until(lambda: all(r.assigned_events() for r in group.replicas.values()) and group.settled(partitions),
                   120, "the three replicas to share the partitions")
        since = now_iso()
        group.rolling_restart(partitions)
        moved = group.moved(since)
        rows, _bad = stream.join(120)
        wait_until(lambda: both_stages_done(setup), 120, "the replicas to reach the end")
        commands1, bytes1 = stack.redis_totals()
    finally:
        group.kill_all()
    records = 2 * len(rows)
    return RestartFigures(moved, partitions, records, (commands1 - commands0) / records, (bytes1 - bytes0) / records)


# -- the chaos run ---------------------------------------------------------------------------------------

FAULTS = {"replica kill -9": 30, "replica SIGSTOP past the session timeout": 15, "Redis master kill -9": 25,
          "leader broker kill -9": 20, "rolling restart": 10}


@dataclass
class ChaosResult:
    faults: Counter[str]
    seconds: float
    produced: int
    figures: ModelViewFigures
    rollbacks: int
    replayed: int
    fenced: int
    redis_outages: int

    def table(self) -> str:
        rows = [("faults", str(sum(self.faults.values())))]
        rows += [(f"  {k}", str(v)) for k, v in sorted(self.faults.items())]
        rows += [("run time (s)", f"{self.seconds:.0f}"), ("events produced (valid + bad)", str(self.produced)),
                 ("events counted once (stage 1 = replay)", str(self.figures.events)),
                 ("dead-lettered (distinct; copies)",
                  f"{self.figures.dead_lettered}; {self.figures.dead_letter_copies}"),
                 ("lost (produced - counted - dead-lettered)",
                  str(self.produced - self.figures.events - self.figures.dead_lettered)),
                 ("double-counted", "0 (every stored state equals the replay's)"),
                 ("alert ids (= replay); copies on the topic", f"{self.figures.alerts}; {self.figures.alert_copies}"),
                 ("store rollbacks found; records consumed again", f"{self.rollbacks}; {self.replayed}"),
                 ("writes refused by the fence", str(self.fenced)),
                 ("Redis outages ridden out (dependency.down logs)", str(self.redis_outages))]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


def chaos(stack: ClusterStack, setup: Setup, reference: Any, faults: int, seed: int = 13,
          say: Callable[[str], None] = print) -> ChaosResult:
    """At least `faults` faults drawn from FAULTS (each kind at least once) on three replicas under a steady
    producer, one at a time, each waited out until its system is whole again; then the pass condition."""
    rng = random.Random(seed)
    kinds = list(FAULTS)
    schedule = kinds + rng.choices(kinds, weights=[FAULTS[k] for k in kinds], k=max(faults - len(kinds), 0))
    rng.shuffle(schedule)
    put_reference(setup, reference)
    group = Group(setup, model_config(setup), static=True)
    partitions = 2 * setup.partitions
    rate = 400.0
    bad = {i: ("garbage", bytes(range(200, 230))) for i in range(997, 10**7, 7919)}
    events = int(rate * 7.0 * len(schedule)) + 5_000
    bad = {i: v for i, v in bad.items() if i < events}
    stream = BackgroundProducer(setup, events, rate=rate, seed=seed, incidents=INCIDENTS, bad=bad)
    started = time.monotonic()
    done: Counter[str] = Counter()
    try:
        group.start_all()
        wait_until(lambda: group.settled(partitions), 120, "the replicas to share the partitions")
        for i, kind in enumerate(schedule):
            t0 = time.monotonic()
            what = _fault(kind, stack, group, setup, partitions, rng)
            done[kind] += 1
            say(f"fault {i + 1}/{len(schedule)}: {kind}: {what} ({time.monotonic() - t0:.1f} s)")
            time.sleep(rng.uniform(0.0, 1.0))  # a random gap between faults: not synchronisation
        rows, n_bad = stream.join(600)
        wait_until(lambda: both_stages_done(setup), 600, "both stages to reach the end, every alert sent")
        seconds = time.monotonic() - started
        figures, _expected = verify_model_view(setup, group.replicas["a"].config, reference, len(rows) + n_bad)
    finally:
        group.kill_all()
    logs = [e for r in group.replicas.values() for e in r.logs()]
    return ChaosResult(done, seconds, len(rows) + n_bad, figures,
                       sum(e.get("event") == "state.rolled_back" for e in logs),
                       sum(int(e.get("records_replayed", 0)) for e in logs if e.get("event") == "state.rolled_back"),
                       sum(e.get("event") == "partition.fenced" for e in logs),
                       sum(e.get("event") == "dependency.down" and e.get("dependency") == "redis" for e in logs))


def _fault(kind: str, stack: ClusterStack, group: Group, setup: Setup, partitions: int, rng: random.Random) -> str:
    name = rng.choice(group.names)
    r = group.replicas[name]
    if kind == "replica kill -9":
        assert r.proc is not None
        r.proc.kill()
        group.start(name)
        return name
    if kind == "replica SIGSTOP past the session timeout":
        assert r.proc is not None
        mine = {tp for tp, o in group.owners().items() if o == name}
        r.proc.signal(signal.SIGSTOP)
        try:  # once its session times out, another replica is given one of its partitions
            if mine:
                wait_until(lambda: any(group.owners().get(tp) not in (name, None) for tp in mine), 60,
                           f"{name}'s partitions to move", interval=0.2)
            else:  # it holds nothing to watch move: the fault itself is a stop past the 6 s session timeout
                time.sleep(8)
        finally:
            r.proc.signal(signal.SIGCONT)
        return name
    if kind == "Redis master kill -9":
        return stack.kill_redis_master(rng)
    if kind == "leader broker kill -9":
        topic = rng.choice([setup.features, setup.predictions])
        return stack.kill_leader_broker(topic, rng.randrange(setup.partitions))
    if kind == "rolling restart":
        group.rolling_restart(partitions, balanced=False)
        return "a, b, c"
    raise ValueError(kind)


def main() -> int:
    import uuid

    from tests.test_model_view import build_reference

    parser = argparse.ArgumentParser(description="the chaos run of issue 13 on a running cluster stack")
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    folder = Path(os.environ.get("MM_STACK_DIR", REPO / ".stack" / "cluster"))
    if not ClusterStack.is_cluster(folder):
        print(f"chaos: {folder} is not a running three-broker + Redis Cluster stack (make chaos starts one)",
              file=sys.stderr)
        return 2
    stack = ClusterStack(folder)
    run = folder / f"run-{time.strftime('%Y%m%d-%H%M%S')}"  # kept after the run: the replicas' logs
    run.mkdir(parents=True)
    print(f"chaos: the replicas' logs and configs go to {run}")
    setup = Setup(uuid.uuid4().hex[:10], stack.bootstrap, stack.redis_url, run, partitions=6)
    setup.create_topics()
    reference = build_reference(run)
    static = rolling_restart_moves(stack, _fresh(stack, run, "rs"), reference, static=True)
    dynamic = rolling_restart_moves(stack, _fresh(stack, run, "rd"), reference, static=False)
    result = chaos(stack, setup, reference, args.faults, args.seed)
    print(result.table())
    print(f"| rolling restart of 3 replicas, {static.partitions} input partitions: partitions moved with static "
          f"membership / without | {static.moved} / {dynamic.moved} |")
    print(f"| Redis commands / bytes received per input record (3 replicas, {static.records} records, "
          f"restarts included) | {static.redis_commands_per_record:.3f} / {static.redis_bytes_per_record:.1f} |")
    return 0


def _fresh(stack: ClusterStack, run: Path, name: str) -> Setup:
    import uuid

    folder = run / name
    folder.mkdir()
    setup = Setup(uuid.uuid4().hex[:10], stack.bootstrap, stack.redis_url, folder, partitions=6)
    setup.create_topics()
    return setup


if __name__ == "__main__":
    sys.exit(main())
