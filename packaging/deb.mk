# Debian package and system test; included by the top-level Makefile (`-include packaging/deb.mk`).
#   make deb-deps      apt-get install what `make deb` and `make system-test` need (root)
#   make deb           build build/deb/mcast-echo_<version>_all.deb with debhelper + pybuild, then lintian
#   make system-test   boot systemd in throwaway namespaces, install the .deb there, drive it (root)
# The package is built from a staged copy of the tree (build/deb/mcast-echo-<version>/ with
# packaging/debian as debian/), so the repository root never holds a debian/ directory or build debris.

DEB_VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' $(CURDIR)/pyproject.toml)
DEB_OUT := $(CURDIR)/build/deb
DEB_STAGE := $(DEB_OUT)/mcast-echo-$(DEB_VERSION)
DEB_FILE := $(DEB_OUT)/mcast-echo_$(DEB_VERSION)_all.deb
# what goes into the source package (README.md and LICENSE only if present)
DEB_SOURCES := pyproject.toml $(wildcard README.md LICENSE) src docs etc/mcast-echo.yaml \
	etc/default/mcast-echo-probe systemd/mcast-echo.service systemd/mcast-echo-probe.service \
	systemd/mcast-echo-probe.timer packaging/man packaging/prometheus/mcast-echo.rules.yml \
	packaging/prometheus/mcast-echo-mesh.rules.yml packaging/grafana/mcast-echo-mesh.json
DEB_INPUTS := $(shell cd $(CURDIR) && find $(DEB_SOURCES) packaging/debian -type f \
	-not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)

# Build and system-test dependencies, all from Debian 12; the .deb's own Depends are installed on the
# host too, because the system-test container is an overlay of the host's / with no network.
DEB_APT_PACKAGES := build-essential debhelper dh-python pybuild-plugin-pyproject python3-all \
	python3-setuptools lintian man-db python3-yaml python3-daemon python3-sdnotify \
	python3-prometheus-client \
	systemd iproute2 util-linux

# The system test needs only pytest on the host: the project's venv ($(STAMP)/$(PY) from the
# Makefile) when included there, else python3.
SYSTEM_TEST_PYTHON ?= $(or $(PY),python3)

.PHONY: deb deb-deps system-test

deb-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --no-upgrade $(DEB_APT_PACKAGES)

deb: $(DEB_FILE)

$(DEB_FILE): $(addprefix $(CURDIR)/,$(DEB_INPUTS))
	@changelog=$$(dpkg-parsechangelog -l $(CURDIR)/packaging/debian/changelog -S Version); \
	[ "$$changelog" = "$(DEB_VERSION)" ] || { echo "deb: packaging/debian/changelog is at" \
	  "$$changelog but pyproject.toml at $(DEB_VERSION): add a changelog entry (dch -v)" >&2; exit 1; }
	@for page in $(CURDIR)/packaging/man/*.[0-9]; do grep -q '^\.TH .*"mcast-echo $(DEB_VERSION)"' \
	  $$page || { echo "deb: $$page: .TH does not say mcast-echo $(DEB_VERSION)" >&2; exit 1; }; done
	rm -rf $(DEB_STAGE) $(DEB_OUT)/mcast-echo_$(DEB_VERSION)_*
	mkdir -p $(DEB_STAGE)
	cd $(CURDIR) && tar -cf - --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
	  $(DEB_SOURCES) | tar -C $(DEB_STAGE) -xf -
	cp -a $(CURDIR)/packaging/debian $(DEB_STAGE)/debian
	@# Debian's python3 must build it: no venv, pyenv shim or PYTHONPATH from the caller's shell
	cd $(DEB_STAGE) && env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME -u PYENV_VERSION \
	  PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -b --no-sign
	rm -rf $(DEB_STAGE)
	@# lintian fails the build on errors only (and then drops the .deb); the tags we keep are
	@# listed, with the reason, in README.md's "Debian package and system test"
	PATH=/usr/sbin:/usr/bin:/sbin:/bin lintian --fail-on error --display-info $(DEB_FILE) \
	  >$(DEB_OUT)/lintian.txt; status=$$?; cat $(DEB_OUT)/lintian.txt; \
	  [ $$status = 0 ] || rm -f $(DEB_FILE); exit $$status
	@echo "deb: $(DEB_FILE)"

system-test: $(DEB_FILE) $(STAMP)
	@[ "$$(id -u)" = 0 ] || { echo "system-test: run as root (it boots systemd as PID 1 in" \
	  "namespaces and installs the .deb there); prepare with 'make deb-deps'" >&2; exit 1; }
	@# outside `unshare --net` on purpose: every packet stays inside the container's own netns.
	@# --noconftest: tests/conftest.py insists on a private netns for the unit tests.
	cd $(CURDIR) && MCAST_ECHO_SYSTEM_TEST=1 MCAST_ECHO_DEB=$(DEB_FILE) $(SYSTEM_TEST_PYTHON) \
	  -m pytest --noconftest -p no:cacheprovider -m system -v -s --durations=0 tests/system
