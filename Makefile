# Two commands set everything up on a fresh clone: `make demo` and `make test`.
# Each target installs the project into .venv first when needed (see `setup`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RANKER := $(VENV)/bin/ranker
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: setup demo test lint serve clean bench-tools cluster-demo

setup: $(STAMP)

# Reinstall when the declared dependencies change. pip's "location ignored" warnings come from
# machine-wide index settings and are harmless.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: setup
	$(RANKER) demo --out $(DEMO_DIR)

# The demo's models in the foreground (Ctrl-C stops it); runs the demo first if needed.
# Events and user histories need RANKER_CLIENT_TOKEN; without one set, this local server runs
# --insecure-open (and says so).
serve: setup
	@test -f $(DEMO_DIR)/registry/transformer/v1/model.onnx || $(RANKER) demo --out $(DEMO_DIR)
	$(RANKER) serve --registry $(DEMO_DIR)/registry --state $(DEMO_DIR)/lists/state \
		--log-dir $(DEMO_DIR)/serve --example-from $(DEMO_DIR)/world --port $${PORT:-8000} \
		$$(test -n "$$RANKER_CLIENT_TOKEN" || echo --insecure-open)

# The demo's online A/B again through HAProxy, two replicas and Redis on this machine (each
# started on a free port and stopped by PID), beside the single server's verdict. Installs
# Debian's redis-server and haproxy when missing; runs the demo first if needed.
cluster-demo: setup
	@deploy/install-debian-packages.sh redis-server haproxy
	@$(PY) -c 'import redis' 2>/dev/null || $(PY) -m pip install --quiet -c constraints.txt -e '.[cluster]'
	@test -f $(DEMO_DIR)/registry/transformer/v1/model.onnx || $(RANKER) demo --out $(DEMO_DIR)
	$(RANKER) cluster-demo --out $(DEMO_DIR)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# wrk, the load generator benchmarks/serve_load.py uses for concurrency 16 (Debian's package;
# without it the benchmark stops and says so).
bench-tools:
	@deploy/install-debian-packages.sh wrk

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
