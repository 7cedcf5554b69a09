# hwpoller: the commands a new user (and CI) needs. Each one sets up what it uses.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages whose real programs the integration tests talk to.
APT_PACKAGES := snmpd snmp openipmi ipmitool freeipmi-tools prometheus prometheus-alertmanager chromium etcd-server etcd-client
# The Go exporters the benchmarks compare against (make bench only).
BENCH_APT_PACKAGES := prometheus-snmp-exporter prometheus-ipmi-exporter

.PHONY: run test lint bench bench-alerts conformance fuzz venv deps system-deps clean

# pip's and the build backend's chatter goes to $(VENV)/install.log, shown whole if it fails.
$(BIN)/hwpoller: pyproject.toml
	@echo "installing hwpoller and its test tools into $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[dev]'; } \
	  > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

venv: $(BIN)/hwpoller

# Installs the peer programs with apt-get when they are missing and we are root on Debian.
system-deps:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    log=$$(mktemp); { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
	      >$$log 2>&1 || { cat $$log; rm -f $$log; exit 1; }; rm -f $$log; \
	  else \
	    echo "please install:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

## make run: start simulated devices and hwpoller on http://127.0.0.1:9730/metrics until Ctrl-C
run: venv
	$(BIN)/python -m poller.simulator.demo

## make test: unit and integration tests against real peers (snmpsim, snmpd, ipmi_sim, promtool)
# Tests run PYTEST_WORKERS at a time (they mostly wait on peers), longest first and a module
# that starts shared peers on one worker (tests/conftest.py); the 15 slowest are listed.
PYTEST_WORKERS ?= 5
test: venv system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) \
	  --dist loadgroup --no-loadscope-reorder --durations=15

lint: venv
	$(BIN)/ruff check poller tests
	$(BIN)/ruff format --check poller tests
	$(BIN)/mypy

## make bench: CPU and wall per poll beside snmp_exporter and ipmi_exporter (A/B rounds; in process, then whole processes at 10 and 100 polls/s), idle CPU ticks and wake-ups of hwpoller run, polls per second against N simulated agents (N=200), then the scale run
N ?= 200
BMCS ?= 20
# then one real `hwpoller run` against SCALE_SNMP replayed SNMP devices and SCALE_BMCS simulated
# BMCs at a 30 s interval for BENCH_SECONDS: freshness, CPU, RSS, fds, threads, scrape time
SCALE_SNMP ?= 5000
SCALE_BMCS ?= 1000
BENCH_SECONDS ?= 150
bench: venv
	$(MAKE) system-deps EXTRA_APT_PACKAGES="$(BENCH_APT_PACKAGES)"
	$(BIN)/python -m tests.bench.bench_vs_exporters
	$(BIN)/python -m tests.bench.bench_process
	$(BIN)/python -m tests.bench.bench_idle
	$(BIN)/python -m tests.bench.bench_vs_ipmi_exporter
	$(BIN)/python -m tests.bench.bench_exposition
	$(BIN)/python -m tests.bench.bench_snmp --agents $(N)
	@if [ -f tests/bench/bench_ipmi.py ]; then $(BIN)/python -m tests.bench.bench_ipmi --bmcs $(BMCS); fi
	BENCH_SECONDS=$(BENCH_SECONDS) $(BIN)/python -m tests.bench.bench_scale --snmp $(SCALE_SNMP) --bmcs $(SCALE_BMCS)

## make bench-alerts: seconds from each simulated incident to its metric and its alert (shipped Prometheus config and rules, speed 1, ~13 min)
bench-alerts: venv system-deps
	$(BIN)/python -m tests.bench.bench_alerts

## make conformance CORPUS=DIR: poll an external corpus of real recordings (NAME.snmprec with
## the sensors LibreNMS reads on it in NAME.librenms.json), print the score, fail below the bar
CORPUS ?= $(HWPOLLER_CORPUS)
conformance: venv system-deps
	@if [ -z "$(CORPUS)" ]; then \
	  echo "make conformance needs a corpus: make conformance CORPUS=DIR (or HWPOLLER_CORPUS=DIR)."; \
	  echo "DIR holds NAME.snmprec walks, each with NAME.librenms.json beside it: the sensors"; \
	  echo "LibreNMS discovers on that walk (see tests/conformance.py for the format)."; \
	  exit 2; fi
	HWPOLLER_CORPUS=$(CORPUS) $(BIN)/python -m pytest -q -p no:cacheprovider -m conformance -s \
	  tests/test_conformance.py tests/test_snmp_wire.py

## make fuzz: the fuzzing tests (SNMP, IPMI, Redfish answers; config files) with FUZZ_EXAMPLES
## examples each instead of make test's few dozen
FUZZ_EXAMPLES ?= 1000
fuzz: venv system-deps
	HWPOLLER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider \
	  $(wildcard tests/test_*fuzz*.py)

## make soak: the fault mix for SOAK_SECONDS (default 180); fds, threads, RSS, asyncio tasks at start and end
SOAK_SECONDS ?= 180
soak: venv system-deps
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m tests.bench.soak

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache

## make bench-cluster: one etcd, 3 cluster members x CLUSTER_TARGETS (2,000) replayed SNMP devices: failover after kill -9 (median, max over CLUSTER_TRIES), targets moved on join/leave vs 1/N, etcd requests/s per member
CLUSTER_TARGETS ?= 2000
CLUSTER_TRIES ?= 10
.PHONY: bench-cluster
bench-cluster: venv
	@command -v etcd >/dev/null || $(MAKE) system-deps EXTRA_APT_PACKAGES=etcd-server
	$(BIN)/python -m tests.bench.bench_cluster --targets $(CLUSTER_TARGETS) --tries $(CLUSTER_TRIES)
