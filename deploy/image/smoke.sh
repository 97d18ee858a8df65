#!/usr/bin/env bash
# Smoke test of the built image (deploy/image/build-local.sh) against the local Kafka and Redis: as the image's
# non-root user (uid 10001) and with the image's own files and environment, create the demo's topics, profile a
# reference, start `model-monitor run`, see /healthz and /readyz answer, simulate a NaN burst and read its alert.
#
#   bash deploy/image/smoke.sh                       # the stack from deploy/local/stack.sh (started if needed)
#   MM_IMAGE=localhost/model-monitor:dev bash deploy/image/smoke.sh
#
# Containers run through `buildah run --isolation chroot` (no OCI runtime): on this machine `podman run` is
# refused by both crun ("setrlimit RLIMIT_NOFILE: Operation not permitted") and runc ("error setting rlimit
# type 6: operation not permitted"). Where podman or docker run, the same image runs as
#   podman run --network host -v "$PWD/schemas/examples:/etc/model-monitor:ro" localhost/model-monitor:dev
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
IMAGE=${MM_IMAGE:-localhost/model-monitor:dev}
work="$(mktemp -d)"
chmod 0777 "$work"  # the image's user writes the reference data here

# shellcheck disable=SC1090
source "$(bash deploy/local/stack.sh up)"
ctr="$(buildah from --name "mm-smoke-$$" "$IMAGE")"
daemon=""
cleanup() {
  [[ -n "$daemon" ]] && pkill -TERM -u 10001 -f "model-monitor run" 2>/dev/null || true
  [[ -n "$daemon" ]] && wait "$daemon" 2>/dev/null || true
  buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

run_id="smoke$(date +%s)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# The example config with the schema paths inside the container; settings from the environment, as in a pod.
python3 - "$repo/schemas/examples/monitor.yaml" "$work/monitor.yaml" <<'PYCODE'
import sys, pathlib, yaml
cfg = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())
for model in cfg["models"]:
    for kind in ("features", "predictions", "labels"):
        model[kind]["schema"] = "/etc/model-monitor/" + model[kind]["schema"]
pathlib.Path(sys.argv[2]).write_text(yaml.safe_dump(cfg))
PYCODE
cp schemas/examples/*.avsc "$work/"
in_image() {
  buildah run --isolation chroot --user 10001 --volume "$work:/etc/model-monitor" \
    --env "MONITOR_KAFKA__BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS" --env "MONITOR_REDIS_URL=$REDIS_URL" \
    --env "MONITOR_GROUP_ID=$run_id" --env "MONITOR_KEY_PREFIX=$run_id" --env "MONITOR_HTTP_PORT=$port" \
    --env "MONITOR_ALERTS_TOPIC=$run_id.alerts" "$ctr" -- "$@"
}
config=/etc/model-monitor/monitor.yaml

echo "== whoami in the image: $(in_image id -u)"
[[ "$(in_image id -u)" == 10001 ]] || { echo "smoke: not the image's non-root user" >&2; exit 1; }
in_image model-monitor topics --config "$config" 2>"$work/cli.log"
in_image model-monitor simulate --config "$config" --model churn --events 20000 --seed 1 \
  --out /etc/model-monitor/train.parquet 2>>"$work/cli.log"
in_image model-monitor reference build --config "$config" --model churn --input /etc/model-monitor/train.parquet \
  2>>"$work/cli.log" >/dev/null
echo "== reference built; starting model-monitor run in the image (http on 127.0.0.1:$port)"
in_image model-monitor run --config "$config" 2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 1 200); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { echo "smoke: the daemon exited" >&2; tail -20 "$work/daemon.log" >&2; exit 1; }
  sleep 0.3
done
curl -fsS "http://127.0.0.1:$port/healthz"
curl -fsS "http://127.0.0.1:$port/readyz"
in_image model-monitor simulate --config "$config" --model churn --events 20000 --seed 2 \
  --incident nan_burst:feature=credit_score,start=5000,length=3000,rate=0.3 2>>"$work/cli.log"
echo "== the first alert, read in the image:"
in_image model-monitor alerts --config "$config" --from-beginning --max 1 --timeout 120 2>>"$work/cli.log" \
  | tee "$work/alert.txt"
grep -q credit_score "$work/alert.txt" || { echo "smoke: no credit_score alert" >&2; exit 1; }
echo "smoke: ok"
