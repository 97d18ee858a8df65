#!/usr/bin/env bash
# `make demo`: start Kafka and Redis, create topics, run the daemon, simulate a NaN burst and a mean shift,
# print every alert as it arrives, then stop everything this script started.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
PY="${PY:-$repo/.venv/bin/python}"
EVENTS="${DEMO_EVENTS:-40000}"
export MM_STACK_DIR="${MM_STACK_DIR:-$repo/.stack/demo}"
demo_dir="$MM_STACK_DIR/run"
mkdir -p "$demo_dir"

started_stack=0
if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" || -z "${REDIS_URL:-}" ]] \
   && ! bash "$repo/deploy/local/stack.sh" running; then started_stack=1; fi
daemon_pid=""; alerts_pid=""
cleanup() {
  [[ -n "$alerts_pid" ]] && kill "$alerts_pid" 2>/dev/null || true
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true
  fi
  [[ $started_stack == 1 ]] && bash "$repo/deploy/local/stack.sh" down
  return 0
}
trap cleanup EXIT

echo "== 1/6 starting Apache Kafka (KRaft) and Redis on 127.0.0.1"
# shellcheck disable=SC1090
source "$(bash "$repo/deploy/local/stack.sh" up)"
run_id="demo$(date +%s)"
http_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# Every setting of the example config can be overridden from the environment like this.
export MONITOR_KAFKA__BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS" MONITOR_REDIS_URL="$REDIS_URL"
export MONITOR_GROUP_ID="$run_id" MONITOR_KEY_PREFIX="$run_id" MONITOR_HTTP_PORT="$http_port"
config="$repo/schemas/examples/monitor.yaml"

echo "== 2/6 creating topics; profiling 50,000 rows of training data as reference v1; inferring a contract"
"$PY" -m monitor topics --config "$config" 2>>"$demo_dir/cli.log"
"$PY" -m monitor simulate --config "$config" --model churn --events 50000 --seed 1 \
  --out "$demo_dir/train.parquet" 2>>"$demo_dir/cli.log"
"$PY" -m monitor reference build --config "$config" --model churn --input "$demo_dir/train.parquet" \
  2>>"$demo_dir/cli.log" >/dev/null
"$PY" -m monitor contract infer --config "$config" --model churn --out "$demo_dir/churn.contract.yaml" \
  2>>"$demo_dir/cli.log"
# The demo's config: the example one plus the inferred contract.
"$PY" - "$config" "$demo_dir" <<'PYCODE'
import sys, pathlib, yaml
config, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
cfg = yaml.safe_load(config.read_text())
for model in cfg["models"]:
    for kind in ("features", "predictions", "labels"):
        model[kind]["schema"] = str(config.parent / model[kind]["schema"])
    model["contract"] = str(out / "churn.contract.yaml")
(out / "monitor.yaml").write_text(yaml.safe_dump(cfg))
PYCODE
config="$demo_dir/monitor.yaml"

echo "== 3/6 starting the daemon (logs: $demo_dir/daemon.log, metrics: http://127.0.0.1:$http_port/metrics)"
"$PY" -m monitor run --config "$config" 2>"$demo_dir/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
  sleep 0.3
done
"$PY" -m monitor alerts --config "$config" 2>>"$demo_dir/cli.log" &
alerts_pid=$!
sleep 2  # let the alert printer join its group before alerts can arrive

echo "== 4/6 simulating $EVENTS events: NaN burst in credit_score at 10000, +1 std shift in monthly_charges at 20000,"
echo "       a new labelling rule (concept drift) at 30000; labels arrive 1000 events late, 10% never"
"$PY" -m monitor simulate --config "$config" --model churn --events "$EVENTS" --rate 2000 \
  --incident nan_burst:feature=credit_score,start=10000,length=2000,rate=0.3 \
  --incident shift:feature=monthly_charges,start=20000,size=1.0 \
  --incident concept:start=30000 --label-delay 1000 --label-missing 0.1 2>>"$demo_dir/cli.log"

echo "== 5/6 waiting for the daemon to catch up"
for _ in $(seq 1 60); do
  lag="$(curl -fs "http://127.0.0.1:$http_port/metrics" | awk '/^monitor_consumer_lag/ {s += $2} END {print s + 0}')"
  [[ "$lag" == "0" ]] && break
  sleep 1
done
sleep 2
echo
echo "== 6/6 status"
"$PY" -m monitor status --config "$config" 2>>"$demo_dir/cli.log"
echo "demo done; stopping what it started"
