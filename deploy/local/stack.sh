#!/usr/bin/env bash
# Local stack for development, the demo and the tests: Apache Kafka (KRaft) and redis-server, on 127.0.0.1
# on free ports, each node with its own data folder under $MM_STACK_DIR (default .stack/).
#
#   stack.sh up            start what is not running; print the env file to source
#   stack.sh down          stop exactly the processes this stack started
#   stack.sh run -- CMD    up (if needed), run CMD with KAFKA_BOOTSTRAP_SERVERS and REDIS_URL set,
#                          then stop only what this call started; exits with CMD's status
#   stack.sh running       exit 0 if this stack's Kafka and Redis are both running
#   stack.sh stop-service kafka|redis [--hard]   stop a service, every node of it (kill -9 with --hard), keep data
#   stack.sh start-service kafka|redis           start it again on the same ports and data
#   stack.sh stop-node kafka|redis N [--hard]    stop node N only (1-based), for the chaos run
#   stack.sh start-node kafka|redis N            start node N again
#   stack.sh redis-healthy                       exit 0 if the Redis Cluster is ok and every master has a replica
#
# The shape is chosen when the stack is first started (kept in its folder after that):
#   MM_KAFKA_NODES=3     three combined broker+controller KRaft nodes; topics default to replication factor 3
#                        with min.insync.replicas=2 (default 1 node, replication factor 1)
#   MM_REDIS_CLUSTER=1   a Redis Cluster of three masters and three replicas made with `redis-cli --cluster
#                        create`; REDIS_URL is then redis+cluster://<the six nodes> (default one redis-server)
#
# KAFKA_BOOTSTRAP_SERVERS or REDIS_URL already set: that service is used as it is, nothing is started.
# Kafka's jars come from Maven Central through deploy/local/pom.xml, cached in
# ${MM_CACHE_DIR:-~/.cache/model-monitor}/kafka-<version>/ and reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
STACK_DIR="${MM_STACK_DIR:-$repo/.stack}"
CACHE_DIR="${MM_CACHE_DIR:-$HOME/.cache/model-monitor}/kafka-$KAFKA_VERSION"
JAVA="${JAVA:-java}"

say() { echo "stack: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

fetch_kafka() {
  if [[ -f "$CACHE_DIR/.complete" ]]; then return; fi
  command -v mvn >/dev/null || { say "mvn not found: install Maven (Debian package maven)"; exit 1; }
  say "resolving Apache Kafka $KAFKA_VERSION jars with Maven into $CACHE_DIR"
  mkdir -p "$CACHE_DIR"
  mvn -q -B -f "$here/pom.xml" -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$CACHE_DIR/libs" >&2
  touch "$CACHE_DIR/.complete"
}


KAFKA_JOPTS=(-Xms256m -Xmx768m)

kafka_nodes() { cat "$STACK_DIR/kafka/nodes" 2>/dev/null || echo "${MM_KAFKA_NODES:-1}"; }
redis_nodes() { cat "$STACK_DIR/redis/nodes" 2>/dev/null || { [[ "${MM_REDIS_CLUSTER:-0}" == 1 ]] && echo 6 || echo 1; }; }
kafka_alive() { local i; for i in $(seq 1 "$(kafka_nodes)"); do alive "$STACK_DIR/kafka/$i/pid" && return 0; done; return 1; }
redis_alive() { local i; for i in $(seq 1 "$(redis_nodes)"); do alive "$STACK_DIR/redis/$i/pid" && return 0; done; return 1; }

start_kafka() {
  local top="$STACK_DIR/kafka"
  if kafka_alive; then return; fi
  fetch_kafka
  local n="${MM_KAFKA_NODES:-1}" i
  rm -rf "$top" && mkdir -p "$top"
  echo "$n" > "$top/nodes"
  local ports=() cports=() voters="" bootstrap="" p
  while ((${#ports[@]} + ${#cports[@]} < 2 * n)); do
    p="$(free_port)"
    [[ " ${ports[*]} ${cports[*]} " == *" $p "* ]] && continue
    if ((${#ports[@]} < n)); then ports+=("$p"); else cports+=("$p"); fi
  done
  for i in $(seq 1 "$n"); do
    voters+="${voters:+,}$i@127.0.0.1:${cports[$((i - 1))]}"
    bootstrap+="${bootstrap:+,}127.0.0.1:${ports[$((i - 1))]}"
  done
  local rf=1 isr=1
  ((n >= 3)) && rf=3 && isr=2
  local cluster
  cluster="$(python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
  for i in $(seq 1 "$n"); do
    local dir="$top/$i"
    mkdir -p "$dir/data"
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${ports[$((i - 1))]},CONTROLLER://127.0.0.1:${cports[$((i - 1))]}
advertised.listeners=PLAINTEXT://127.0.0.1:${ports[$((i - 1))]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$isr
auto.create.topics.enable=false
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
unclean.leader.election.enable=false
PROPS
    cat > "$dir/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/kafka.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
PROPS
    "$JAVA" "${KAFKA_JOPTS[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
      -cp "$CACHE_DIR/libs/*" kafka.tools.StorageTool format --cluster-id="$cluster" -c "$dir/server.properties" \
      > "$dir/format.log" 2>&1 || { say "storage format failed:"; cat "$dir/format.log" >&2; exit 1; }
    echo "127.0.0.1:${ports[$((i - 1))]}" > "$dir/listener"
  done
  echo "$bootstrap" > "$top/bootstrap"
  for i in $(seq 1 "$n"); do launch_kafka "$i"; done
  for i in $(seq 1 "$n"); do await_kafka "$i"; done
}

# Start node i of an existing (formatted) stack folder; await_kafka waits until it serves. The nodes of a
# quorum are launched together and then awaited: one alone cannot elect a controller.
launch_kafka() {
  local dir="$STACK_DIR/kafka/$1" opts=("${KAFKA_JOPTS[@]}")
  (($(kafka_nodes) > 1)) && opts=(-Xms192m -Xmx512m)
  : > "$dir/kafka.log"
  nohup "$JAVA" "${opts[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$CACHE_DIR/libs/*" kafka.Kafka "$dir/server.properties" > "$dir/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  say "kafka node $1 starting on $(cat "$dir/listener") (pid $(cat "$dir/pid"), logs $dir/kafka.log)"
}

await_kafka() {
  local dir="$STACK_DIR/kafka/$1"
  local port; port="$(cut -d: -f2 "$dir/listener")"
  for _ in $(seq 1 360); do
    if ! alive "$dir/pid"; then say "kafka node $1 exited:"; tail -n 30 "$dir/stdout.log" "$dir/kafka.log" >&2; exit 1; fi
    if grep -q "Kafka Server started" "$dir/kafka.log" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      say "kafka node $1 ready"; return
    fi
    sleep 0.5
  done
  say "kafka node $1 did not become ready in 180 s"; tail -n 30 "$dir/kafka.log" >&2; exit 1
}

start_redis() {
  local top="$STACK_DIR/redis"
  if redis_alive; then return; fi
  command -v redis-server >/dev/null || { say "redis-server not found: apt-get install redis-server"; exit 1; }
  local n=1 i
  [[ "${MM_REDIS_CLUSTER:-0}" == 1 ]] && n=6
  rm -rf "$top" && mkdir -p "$top"
  echo "$n" > "$top/nodes"
  local seeds="" buses=""
  for i in $(seq 1 "$n"); do
    mkdir -p "$top/$i"
    local port bus; port="$(free_port)"
    while [[ ",$seeds,$buses," == *":$port,"* ]]; do port="$(free_port)"; done
    echo "$port" > "$top/$i/port"
    seeds+="${seeds:+,}127.0.0.1:$port"
    if ((n > 1)); then  # the cluster bus: its own free port, not the default port + 10000
      bus="$(free_port)"
      while [[ ",$seeds,$buses," == *":$bus,"* ]]; do bus="$(free_port)"; done
      echo "$bus" > "$top/$i/bus"
      buses+="${buses:+,}:$bus"
    fi
  done
  for i in $(seq 1 "$n"); do launch_redis "$i"; done
  if ((n == 1)); then
    echo "redis://$seeds/0" > "$top/url"
    return
  fi
  # Three masters, one replica each; redis-cli places replicas on other nodes than their masters.
  redis-cli --cluster create ${seeds//,/ } --cluster-replicas 1 --cluster-yes > "$top/create.log" 2>&1 \
    || { say "redis-cli --cluster create failed:"; cat "$top/create.log" >&2; exit 1; }
  await_redis_cluster
  echo "redis+cluster://$seeds" > "$top/url"
}

# Start redis node i on its folder (its AOF and, in a cluster, its nodes.conf are read) and wait until it answers.
launch_redis() {
  local dir="$STACK_DIR/redis/$1"
  local port; port="$(cat "$dir/port")"
  local cluster=()
  (($(redis_nodes) > 1)) && cluster=(--cluster-enabled yes --cluster-config-file nodes.conf
    --cluster-port "$(cat "$dir/bus")" --cluster-node-timeout 2000 --cluster-announce-ip 127.0.0.1)
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --appendfsync everysec \
    --save "" --daemonize yes --pidfile "$dir/pid" --logfile "$dir/redis.log" "${cluster[@]}"
  for _ in $(seq 1 100); do
    if [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]; then
      say "redis node $1 ready on 127.0.0.1:$port (pid $(cat "$dir/pid"))"; return
    fi
    sleep 0.1
  done
  say "redis node $1 did not answer"; cat "$dir/redis.log" >&2; exit 1
}

# The cluster is healthy: every live node says cluster_state:ok, and each of the three masters has a
# connected replica (so the next master kill is survived).
redis_cluster_healthy() {
  local i port masters=0
  for i in $(seq 1 "$(redis_nodes)"); do
    alive "$STACK_DIR/redis/$i/pid" || return 1
    port="$(cat "$STACK_DIR/redis/$i/port")"
    redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok" || return 1
    if redis-cli -h 127.0.0.1 -p "$port" info replication 2>/dev/null | grep -q "^role:master"; then
      redis-cli -h 127.0.0.1 -p "$port" info replication | grep -q "^connected_slaves:[1-9]" || return 1
      masters=$((masters + 1))
    else
      redis-cli -h 127.0.0.1 -p "$port" info replication | grep -q "^master_link_status:up" || return 1
    fi
  done
  ((masters == 3))
}

await_redis_cluster() {
  for _ in $(seq 1 600); do
    if redis_cluster_healthy; then say "redis cluster ok"; return; fi
    sleep 0.1
  done
  say "redis cluster not ok after 60 s:"; redis-cli -h 127.0.0.1 -p "$(cat "$STACK_DIR/redis/1/port")" cluster nodes >&2
  exit 1
}

stop_one() {
  local pidfile="$1" name="$2"
  if alive "$pidfile"; then
    local pid; pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    say "$name stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}

# stop_node kafka|redis i [--hard]
stop_node() {
  local pidfile="$STACK_DIR/$1/$2/pid"
  if [[ "${3:-}" == "--hard" ]] && alive "$pidfile"; then kill -9 "$(cat "$pidfile")"; fi
  if [[ "$1" == redis ]] && alive "$pidfile"; then
    redis-cli -p "$(cat "$STACK_DIR/redis/$2/port")" shutdown nosave >/dev/null 2>&1 || true
  fi
  stop_one "$pidfile" "$1 node $2"
}

stop_service() {
  local i n; n="$([[ "$1" == kafka ]] && kafka_nodes || redis_nodes)"
  if [[ "${2:-}" == "--hard" ]]; then  # all at once, as a power cut would
    for i in $(seq 1 "$n"); do alive "$STACK_DIR/$1/$i/pid" && kill -9 "$(cat "$STACK_DIR/$1/$i/pid")"; done
  fi
  for i in $(seq 1 "$n"); do stop_node "$1" "$i"; done
}

start_service() {
  local i
  if [[ "$1" == kafka ]]; then
    for i in $(seq 1 "$(kafka_nodes)"); do alive "$STACK_DIR/kafka/$i/pid" || launch_kafka "$i"; done
    for i in $(seq 1 "$(kafka_nodes)"); do await_kafka "$i"; done
  else
    for i in $(seq 1 "$(redis_nodes)"); do alive "$STACK_DIR/redis/$i/pid" || launch_redis "$i"; done
    (($(redis_nodes) == 1)) || await_redis_cluster
  fi
}

write_env() {
  mkdir -p "$STACK_DIR"
  {
    echo "export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-$(cat "$STACK_DIR/kafka/bootstrap")}"
    echo "export REDIS_URL=${REDIS_URL:-$(cat "$STACK_DIR/redis/url")}"
  } > "$STACK_DIR/env"
  echo "$STACK_DIR/env"
}

up() {
  mkdir -p "$STACK_DIR"
  [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]] || start_kafka
  [[ -n "${REDIS_URL:-}" ]] || start_redis
  write_env
}

down() {
  stop_service kafka
  stop_service redis
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  running) kafka_alive && redis_alive ;;
  redis-healthy) redis_cluster_healthy ;;
  # For fault tests: stop a service of this stack (--hard: kill -9) and start it again on the same data.
  stop-service|start-service)
    [[ "${2:-}" == kafka || "${2:-}" == redis ]] || { echo "usage: $0 $1 kafka|redis [--hard]" >&2; exit 2; }
    if [[ "$1" == stop-service ]]; then stop_service "$2" "${3:-}"; else start_service "$2"; fi
    ;;
  stop-node|start-node)
    [[ ("${2:-}" == kafka || "${2:-}" == redis) && "${3:-}" =~ ^[0-9]+$ ]] \
      || { echo "usage: $0 $1 kafka|redis N [--hard]" >&2; exit 2; }
    if [[ "$1" == stop-node ]]; then stop_node "$2" "$3" "${4:-}"
    elif [[ "$2" == kafka ]]; then alive "$STACK_DIR/kafka/$3/pid" || { launch_kafka "$3"; await_kafka "$3"; }
    else alive "$STACK_DIR/redis/$3/pid" || launch_redis "$3"; fi
    ;;
  run)
    shift; [[ "${1:-}" == "--" ]] && shift
    started_kafka=0; started_redis=0
    if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]] && ! kafka_alive; then started_kafka=1; fi
    if [[ -z "${REDIS_URL:-}" ]] && ! redis_alive; then started_redis=1; fi
    cleanup() {
      [[ $started_kafka == 1 ]] && stop_service kafka
      [[ $started_redis == 1 ]] && stop_service redis
      return 0
    }
    trap cleanup EXIT
    # shellcheck disable=SC1090
    source "$(up)"
    set +e; "$@"; status=$?; set -e
    exit $status
    ;;
  *) echo "usage: $0 up|down|running|run -- CMD|stop-service|start-service|stop-node|start-node|redis-healthy" >&2
     exit 2 ;;
esac
