# model-monitor: the commands a newcomer runs. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh

.PHONY: venv test unit lint demo stack-up stack-down clean bench bench-reference test-cluster chaos image image-smoke

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check monitor tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## The whole suite: the unit tests and doctests on every core (pytest-xdist; they need no broker), then the
## integration tests one at a time on a real Kafka broker and Redis (started here unless already reachable).
test: lint
	$(PY) -m pytest -m "not integration" -n auto $(PYTEST_ARGS)
	bash $(STACK) run -- $(PY) -m pytest -m integration $(PYTEST_ARGS)

## Unit tests only: no broker, no Redis.
unit: venv
	$(PY) -m pytest -m "not integration" -n auto $(PYTEST_ARGS)

## Start Kafka + Redis, create topics, run the daemon and the simulator with two incidents, print alerts.
demo: venv
	bash deploy/local/demo.sh

## Issue 16: build deploy/Dockerfile with podman on a Debian base made by debootstrap (no registry pull), then
## run it against the local Kafka and Redis. Needs root and Debian's podman, buildah, debootstrap.
image:
	bash deploy/image/build-local.sh

image-smoke: image
	bash deploy/image/smoke.sh

stack-up:
	bash $(STACK) up

stack-down:
	bash $(STACK) down

clean: stack-down
	rm -rf $(VENV) .stack .pytest_cache .mypy_cache .ruff_cache

## Reference build on 1M rows x 20 columns: time and profile size (issue 3).
bench-reference: venv
	$(PY) bench/reference_build.py

## The performance benchmark (issue 6): in-process and end-to-end on a local Kafka and Redis.
bench: venv
	bash $(STACK) run -- $(PY) bench/run.py $(BENCH_ARGS)

## Issue 13: the integration suite on three Kafka brokers (RF 3, min ISR 2) and a six-node Redis Cluster, with
## the rolling-restart and small chaos tests that only run there. Its own stack in .stack/cluster.
test-cluster: venv
	env -u KAFKA_BOOTSTRAP_SERVERS -u REDIS_URL MM_KAFKA_NODES=3 MM_REDIS_CLUSTER=1 \
	  MM_STACK_DIR=$(CURDIR)/.stack/cluster bash $(STACK) run -- $(PY) -m pytest -m integration $(PYTEST_ARGS)

## Issue 13: >= 100 faults (CHAOS_ARGS="--faults N --seed S") on three replicas, three brokers and a Redis
## Cluster under a steady producer; prints the figures.
chaos: venv
	env -u KAFKA_BOOTSTRAP_SERVERS -u REDIS_URL MM_KAFKA_NODES=3 MM_REDIS_CLUSTER=1 \
	  MM_STACK_DIR=$(CURDIR)/.stack/chaos bash $(STACK) run -- $(PY) -m tests.chaos $(CHAOS_ARGS)
