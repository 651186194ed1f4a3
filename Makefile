# mcast-echo — quick start: `make run` (daemon on lo) and `make test` (the suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG := etc/mcast-echo.yaml

# Tests open multicast sockets, so they run in a network namespace of their own
# (only `lo` inside; the tests add veth pairs and bridges there). As root that is
# plain `unshare --net`; otherwise a user namespace (`unshare -rn`) if allowed.
ifeq ($(shell id -u),0)
  NETNS := unshare --net --
else
  NETNS := $(shell unshare -rn true 2>/dev/null && echo 'unshare -rn --')
  # inside it we look like root: keep pytest off /tmp/pytest-of-root, which may be root's
  PYTEST_BASETEMP := --basetemp=$(CURDIR)/.pytest-tmp
endif

.PHONY: all venv run test lint demo bench soak clean help
all: test

help:
	@echo "make run         - run the daemon in the foreground on lo, with $(CONFIG)"
	@echo "make test        - the whole test suite, in a private network namespace"
	@echo "make lint        - ruff"
	@echo "make venv        - only make .venv and install the project into it"
	@echo "make demo        - daemon and client on two namespaced 'hosts' over a veth"
	@echo "make bench       - the daemon beside a C echo (IPv4, IPv6, group replies, many groups): build/bench/report.md (root)"
	@echo "make soak        - four full-speed senders for SOAK_SECONDS (default 60), RSS and exit checks"
	@echo "make deb-deps    - install Debian's build tools and the package's Depends (root, apt)"
	@echo "make deb         - the Debian package, checked by lintian"
	@echo "make system-test - install the .deb under a real systemd in throwaway namespaces (root)"
	@echo "make fleet-test  - the Ansible role on FLEET_HOSTS (50) systemd hosts, with Prometheus (root)"
	@echo "make fleet-deps  - install what fleet-test needs from apt (root)"
	@echo "make clean       - remove .venv, build/ and caches"
	@echo "make help        - this list"

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Bound to the loopback interface: nothing leaves this host.
run: $(STAMP)
	$(VENV)/bin/mcast-echo serve -c $(CONFIG) --interface lo

test: $(STAMP)
	@if [ -z "$(NETNS)" ]; then \
	  echo "make test needs a private network namespace: run it as root, or enable user"; \
	  echo "namespaces (sysctl -w kernel.unprivileged_userns_clone=1) so 'unshare -rn' works."; \
	  exit 2; fi
	@# both passes run whatever the first one finds; make fails at the end if either failed
	@status=0; \
	echo "MCAST_ECHO_ECHO_PATH=fast $(NETNS) $(PY) -m pytest $(PYTEST_BASETEMP) $(PYTEST_ARGS)"; \
	MCAST_ECHO_ECHO_PATH=fast $(NETNS) $(PY) -m pytest $(PYTEST_BASETEMP) $(PYTEST_ARGS) \
	  || status=1; \
	echo "--- the echo tests again, on the portable plain path (MCAST_ECHO_ECHO_PATH=plain)"; \
	MCAST_ECHO_ECHO_PATH=plain $(NETNS) $(PY) -m pytest $(PYTEST_BASETEMP) $(ECHO_TESTS) \
	  || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: a pass failed (see above)"; fi; \
	exit $$status

# What proves the echo itself: run on both echo paths (the fast one, then the plain one).
ECHO_TESTS := tests/test_echo.py tests/test_hostile.py tests/test_amplification.py \
              tests/test_injection.py tests/test_policy.py tests/test_signals.py \
              tests/test_port_sharing.py tests/test_faults.py tests/test_listeners.py \
              tests/test_starvation.py tests/test_fast_paths.py tests/test_shared_socket.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

demo: $(STAMP)
	$(NETNS) $(PY) tests/demo.py

# The daemon, a C echo and the seed's Python loop side by side (tests/bench/run.py), and issue
# 21's rows (IPv6, group and both replies, 1,000 listeners; tests/bench/scenarios.py): builds
# build/bench/cecho and cload with cc, writes build/bench/report.md and echoes.png. About 6
# minutes with the defaults; BENCH_RUNS=1 BENCH_SECONDS=1 for a quick look (about 1 minute).
BENCH_RUNS ?= 3
BENCH_SECONDS ?= 3
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(BENCH_STAMP)
	@if [ -z "$(NETNS)" ]; then \
	  echo "make bench needs a private network namespace: run it as root"; exit 2; fi
	BENCH_RUNS=$(BENCH_RUNS) BENCH_SECONDS=$(BENCH_SECONDS) $(NETNS) $(PY) tests/bench/run.py

SOAK_SECONDS ?= 60
soak: $(STAMP)
	$(NETNS) $(PY) tests/soak.py --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

-include packaging/deb.mk
-include tests/fleet/fleet.mk
