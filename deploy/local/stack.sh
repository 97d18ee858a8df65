#!/usr/bin/env bash
# Local stack for development, the demo and the tests: Apache Kafka (KRaft, one node) and redis-server,
# both on 127.0.0.1 on free ports, each with its own data folder under $MM_STACK_DIR (default .stack/).
#
#   stack.sh up            start what is not running; print the env file to source
#   stack.sh down          stop exactly the processes this stack started
#   stack.sh run -- CMD    up (if needed), run CMD with KAFKA_BOOTSTRAP_SERVERS and REDIS_URL set,
#                          then stop only what this call started; exits with CMD's status
#   stack.sh stop-service kafka|redis [--hard]   stop one service (kill -9 with --hard), keep its data
#   stack.sh start-service kafka|redis           start it again on the same port and data
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

start_kafka() {
  local dir="$STACK_DIR/kafka"
  if alive "$dir/pid"; then return; fi
  fetch_kafka
  rm -rf "$dir" && mkdir -p "$dir/data"
  local port cport cluster
  port="$(free_port)"; cport="$(free_port)"
  while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
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
  cluster="$(python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
  "$JAVA" "${KAFKA_JOPTS[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$CACHE_DIR/libs/*" kafka.tools.StorageTool format --cluster-id="$cluster" -c "$dir/server.properties" \
    > "$dir/format.log" 2>&1 || { say "storage format failed:"; cat "$dir/format.log" >&2; exit 1; }
  echo "127.0.0.1:$port" > "$dir/bootstrap"
  launch_kafka
}

KAFKA_JOPTS=(-Xms256m -Xmx768m)

# Start the broker of an existing (formatted) stack folder and wait until it serves.
launch_kafka() {
  local dir="$STACK_DIR/kafka"
  local port; port="$(cut -d: -f2 "$dir/bootstrap")"
  : > "$dir/kafka.log"
  nohup "$JAVA" "${KAFKA_JOPTS[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$CACHE_DIR/libs/*" kafka.Kafka "$dir/server.properties" > "$dir/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  say "kafka starting on 127.0.0.1:$port (pid $(cat "$dir/pid"), logs $dir/kafka.log)"
  for _ in $(seq 1 240); do
    if ! alive "$dir/pid"; then say "kafka exited:"; tail -n 30 "$dir/stdout.log" "$dir/kafka.log" >&2; exit 1; fi
    if grep -q "Kafka Server started" "$dir/kafka.log" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      say "kafka ready"; return
    fi
    sleep 0.5
  done
  say "kafka did not become ready in 120 s"; tail -n 30 "$dir/kafka.log" >&2; exit 1
}

start_redis() {
  local dir="$STACK_DIR/redis"
  if alive "$dir/pid"; then return; fi
  command -v redis-server >/dev/null || { say "redis-server not found: apt-get install redis-server"; exit 1; }
  rm -rf "$dir" && mkdir -p "$dir"
  local port; port="$(free_port)"
  echo "redis://127.0.0.1:$port/0" > "$dir/url"
  launch_redis
}

# Start redis-server on an existing stack folder (its AOF is replayed) and wait until it answers.
launch_redis() {
  local dir="$STACK_DIR/redis"
  local port; port="$(sed -E 's#.*:([0-9]+)/.*#\1#' "$dir/url")"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --appendfsync everysec \
    --save "" --daemonize yes --pidfile "$dir/pid" --logfile "$dir/redis.log"
  for _ in $(seq 1 100); do
    if [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]; then
      say "redis ready on 127.0.0.1:$port (pid $(cat "$dir/pid"))"; return
    fi
    sleep 0.1
  done
  say "redis did not answer"; cat "$dir/redis.log" >&2; exit 1
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
  stop_one "$STACK_DIR/kafka/pid" kafka
  if alive "$STACK_DIR/redis/pid"; then
    redis-cli -u "$(cat "$STACK_DIR/redis/url")" shutdown nosave >/dev/null 2>&1 || true
  fi
  stop_one "$STACK_DIR/redis/pid" redis
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  # For fault tests: stop a service of this stack (--hard: kill -9) and start it again on the same data.
  stop-service)
    case "${2:-}" in
      kafka|redis) pidfile="$STACK_DIR/$2/pid" ;;
      *) echo "usage: $0 stop-service kafka|redis [--hard]" >&2; exit 2 ;;
    esac
    if [[ "${3:-}" == "--hard" ]] && alive "$pidfile"; then kill -9 "$(cat "$pidfile")"; fi
    stop_one "$pidfile" "$2"
    ;;
  start-service)
    case "${2:-}" in
      kafka) alive "$STACK_DIR/kafka/pid" || launch_kafka ;;
      redis) alive "$STACK_DIR/redis/pid" || launch_redis ;;
      *) echo "usage: $0 start-service kafka|redis" >&2; exit 2 ;;
    esac
    ;;
  run)
    shift; [[ "${1:-}" == "--" ]] && shift
    started_kafka=0; started_redis=0
    if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]] && ! alive "$STACK_DIR/kafka/pid"; then started_kafka=1; fi
    if [[ -z "${REDIS_URL:-}" ]] && ! alive "$STACK_DIR/redis/pid"; then started_redis=1; fi
    cleanup() {
      [[ $started_kafka == 1 ]] && stop_one "$STACK_DIR/kafka/pid" kafka
      [[ $started_redis == 1 ]] && stop_one "$STACK_DIR/redis/pid" redis
      return 0
    }
    trap cleanup EXIT
    # shellcheck disable=SC1090
    source "$(up)"
    set +e; "$@"; status=$?; set -e
    exit $status
    ;;
  *) echo "usage: $0 up|down|run -- CMD" >&2; exit 2 ;;
esac
