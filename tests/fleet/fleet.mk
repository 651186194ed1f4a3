# make fleet-test: the Ansible role on FLEET_HOSTS real systemd hosts (default 50) on one IGMP-snooping
# bridge, watched by a real Prometheus (tests/fleet/run.py). Root; not part of `make test`.
# Included by the top-level Makefile; uses DEB_FILE (packaging/deb.mk) and STAMP (the project's
# .venv, whose mcast-echo pings from the monitor namespace).
FLEET_HOSTS ?= 50
FLEET_TIMEOUT ?= 2400
FLEET_VENV := $(CURDIR)/build/fleet/venv
FLEET_STAMP := $(FLEET_VENV)/.installed
# Debian's prometheus and node_exporter run in the monitor namespace; curl reads their API there.
FLEET_APT_PACKAGES := prometheus prometheus-node-exporter curl python3-venv iproute2 util-linux

.PHONY: fleet-test fleet-deps

fleet-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade \
	  $(FLEET_APT_PACKAGES) >/dev/null

# ansible-core and ansible-lint in a venv of Debian's python3 (the hosts' python, too)
$(FLEET_STAMP): $(CURDIR)/tests/fleet/requirements.txt
	/usr/bin/python3 -m venv $(FLEET_VENV)
	$(FLEET_VENV)/bin/pip install --quiet -r $<
	touch $@

fleet-test: $(DEB_FILE) $(STAMP) $(FLEET_STAMP)
	@[ "$$(id -u)" = 0 ] || { echo "fleet-test: run as root (it boots systemd as PID 1 in" \
	  "namespaces); prepare with 'make fleet-deps'" >&2; exit 1; }
	@for tool in prometheus prometheus-node-exporter promtool curl; do command -v $$tool >/dev/null || \
	  { echo "fleet-test: $$tool missing: run 'make fleet-deps'" >&2; exit 1; }; done
	@# SIGTERM at the deadline: the run still tears everything down
	cd $(CURDIR) && FLEET_HOSTS=$(FLEET_HOSTS) FLEET_VENV=$(FLEET_VENV) MCAST_ECHO_DEB=$(DEB_FILE) \
	  FLEET_MCAST_ECHO=$(CURDIR)/$(VENV)/bin/mcast-echo \
	  timeout --signal=TERM --kill-after=120 $(FLEET_TIMEOUT) /usr/bin/python3 tests/fleet/run.py
