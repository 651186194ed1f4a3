"""make fleet-test: the Ansible role on N real systemd hosts, watched by a real Prometheus.

FLEET_HOSTS hosts (default 50), each `sdlab up --no-net` (systemd as PID 1 in its own namespaces
on a throwaway overlay), plugged by veth into one IGMP-snooping bridge with a monitor namespace.
Ansible reaches each through tests/fleet/connection_plugins/sdlab_nsenter.py. The steps are
those of issue 14; each asserts, and the run ends with its timings. The teardown always runs
(also on failure and SIGTERM) and fails the run if any process, mount, cgroup or namespace is
left; a run killed outright is cleaned up by the next one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import ROOT, Fleet, down_leftovers, run
from meshcheck import MeshCheck, mesh_vars
from monitor import MESH_RULES, RULES, Monitor

ANSIBLE_DIR = ROOT / "packaging" / "ansible"
VENV = Path(os.environ.get("FLEET_VENV", ROOT / "build" / "fleet" / "venv"))
MCAST_ECHO = os.environ.get("FLEET_MCAST_ECHO", str(ROOT / ".venv" / "bin" / "mcast-echo"))
GROUP, SECOND_GROUP, BAD_GROUP = "224.3.29.71", "239.77.0.2", "10.1.2.3"
PORT = 9999
SPREAD_MS = 100  # ping --spread of the fleet ping: replies spread over 0..100 ms (#19.3)
MISSING_RESPONDER_ALERT = "McastEchoResponderGone"  # packaging/prometheus/mcast-echo.rules.yml
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.M)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def wait_for(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Run:
    def __init__(self, state: Path, count: int, deb: Path) -> None:
        self.state = state
        self.fleet = Fleet(state, count)
        self.count = count
        self.deb = deb
        self.monitor = Monitor(self.fleet, state / "monitor", MCAST_ECHO)
        self.timings: dict[str, float] = {}
        self.forks = int(os.environ.get("FLEET_FORKS", min(count, 25)))

    def timed(self, name: str, fn, *args):
        started = time.monotonic()
        result = fn(*args)
        self.timings[name] = time.monotonic() - started
        log(f"{name}: {self.timings[name]:.1f} s")
        return result

    # ------------------------------------------------------------------ ansible
    def write_ansible_files(self) -> None:
        hosts = {h.name: {"ansible_nsenter_pid": h.pid} for h in self.fleet.hosts}
        # the first host also runs the scheduled group check (mcast-echo-probe.timer); it
        # expects the others: its own responder is local and never counts
        hosts[self.fleet.hosts[0].name].update(mcast_echo_probe_timer=True,
                                               mcast_echo_probe_expect=self.count - 1,
                                               mcast_echo_probe_options="-I eth0")
        inventory = {"all": {"children": {"mcast_echo": {"hosts": hosts, "vars": {
            "ansible_connection": "sdlab_nsenter",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,  # root already: no sudo inside the hosts
            "mcast_echo_deb": str(self.deb),
            "mcast_echo_interface": "eth0",
            "mcast_echo_metrics_listen": "0.0.0.0:9101",
            "mcast_echo_mesh": mesh_vars(self.count),
        }}}}}
        (self.state / "inventory.yml").write_text(json.dumps(inventory, indent=1))
        (self.state / "ansible.cfg").write_text(f"""[defaults]
inventory = {self.state / 'inventory.yml'}
roles_path = {ANSIBLE_DIR / 'roles'}
connection_plugins = {Path(__file__).resolve().parent / 'connection_plugins'}
forks = {self.forks}
host_key_checking = False
retry_files_enabled = False
local_tmp = {self.state / 'ansible-tmp'}
timeout = 30

[connection]
pipelining = True
""")

    def playbook(self, *extra: str, timeout: float = 0) -> dict[str, dict[str, int]]:
        timeout = timeout or 900 * max(1.0, self.count / 50)  # 50 hosts: ~200 s a rollout
        env = {**os.environ, "ANSIBLE_CONFIG": str(self.state / "ansible.cfg"),
               "ANSIBLE_NOCOLOR": "1", "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"}
        argv = [str(VENV / "bin" / "ansible-playbook"), str(ANSIBLE_DIR / "site.yml"), *extra]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        self.last_output = done.stdout + done.stderr
        recap = {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]),
                        "failed": int(m[5])} for m in RECAP.finditer(done.stdout)}
        assert len(recap) == self.count, \
            f"recap has {len(recap)} hosts:\n{self.last_output[-4000:]}"
        recap["_rc"] = {"rc": done.returncode}
        return recap

    @staticmethod
    def total(recap: dict, key: str) -> int:
        return sum(v[key] for name, v in recap.items() if not name.startswith("_"))

    # ------------------------------------------------------------------ the steps
    def lint(self) -> None:
        env = {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}", "NO_COLOR": "1"}
        done = subprocess.run([str(VENV / "bin" / "ansible-lint"), "--profile", "production"],
                              cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"ansible-lint:\n{done.stdout}{done.stderr}"
        log("ansible-lint --profile production: passed")

    def rollout(self) -> None:
        recap = self.timed("first rollout", self.playbook)
        assert recap["_rc"]["rc"] == 0 and self.total(recap, "failed") == 0, \
            self.last_output[-4000:]
        assert self.total(recap, "unreachable") == 0, self.last_output[-4000:]
        assert all(v["changed"] > 0 for k, v in recap.items() if not k.startswith("_"))
        recap = self.timed("idempotent rerun", self.playbook)
        assert recap["_rc"]["rc"] == 0, self.last_output[-4000:]
        changed = {k: v["changed"] for k, v in recap.items()
                   if not k.startswith("_") and v["changed"]}
        assert not changed, f"second run changed something: {changed}\n{self.last_output[-4000:]}"
        log(f"rerun: changed=0 on all {self.count} hosts")
        states = self.fleet.each(lambda h: h.inside("systemctl", "is-active", "mcast-echo",
                                                    check=False).stdout.strip())
        assert states == ["active"] * self.count, states
        first = self.fleet.hosts[0]
        timer = first.inside("systemctl", "is-active", "mcast-echo-probe.timer", check=False)
        assert timer.stdout.strip() == "active", f"{first.name}: probe timer {timer.stdout}"

    def ping_all(self) -> None:
        ports = wait_for("the bridge to snoop every host's join",
                         lambda: (n := self.fleet.snooped_ports(GROUP)) >= self.count and n, 30)
        log(f"IGMP snooping: {GROUP} on {ports} bridge ports")
        # --spread (#19.3): each responder delays each echo by 0..SPREAD_MS, so the fleet does
        # not answer in one millisecond; the RTTs stay true (the delay is in the residence time)
        rc, report = self.timed(f"ping of {self.count} with --spread {SPREAD_MS}",
                                self.monitor.ping, GROUP, self.count, "--spread", str(SPREAD_MS))
        names = sorted(r["name"] for r in report["responders"])
        assert rc == 0 and report["responder_count"] == self.count, (rc, report.get("responders"))
        assert names == sorted(h.name for h in self.fleet.hosts), names
        slowest = max(r["rtt_ms"]["max"] for r in report["responders"])
        log(f"ping --expect {self.count} --spread {SPREAD_MS}: all {self.count} responders, each "
            f"with its host name; slowest RTT {slowest:.3f} ms (the spread taken out)")

    def prometheus(self) -> bool:
        rules = [r for r in (RULES, MESH_RULES) if r.exists()]
        self.monitor.start(rules)
        probing = "--prometheus-textfile" in run(MCAST_ECHO, "ping", "--help").stdout
        if probing:
            self.monitor.start_probe_loop(GROUP, self.count, every=3, limit=1200)
        wait_for(f"{self.count} mcast-echo targets up",
                 lambda: len(self.monitor.query('up{job="mcast-echo"} == 1')) == self.count, 60)
        log(f"prometheus: {self.count} metrics endpoints up; rules: "
            f"{', '.join(self.monitor.rule_names()) or 'none'}")
        if probing:
            wait_for("the probe textfile scraped", lambda: self.monitor.query(
                '{job="mcast-echo-probe",__name__=~"mcast_echo_probe_.*"}'), 60)
        return bool(rules) and probing

    def alert(self) -> None:
        victim = self.fleet.hosts[len(self.fleet.hosts) // 2]
        victim.inside("systemctl", "stop", "mcast-echo")
        stopped = time.monotonic()
        rc, report = self.monitor.ping(GROUP, self.count)
        assert rc == 1 and report["responder_count"] == self.count - 1, \
            (rc, report["responder_count"])
        log(f"{victim.name} stopped: ping --expect {self.count} exits 1 "
            f"({report['responder_count']} responders)")

        def naming_victim() -> list[dict]:
            names = {victim.name, victim.address, f"{victim.address}:9101"}
            return [a for a in self.monitor.alerts() if names & set(a["labels"].values())]

        first_firing: dict[str, float] = {}

        def gone_alert() -> list[dict]:
            alerts = [a for a in naming_victim() if a["state"] == "firing"]
            for a in alerts:
                first_firing.setdefault(a["labels"]["alertname"], time.monotonic() - stopped)
            return [a for a in alerts if a["labels"]["alertname"] == MISSING_RESPONDER_ALERT]
        alerts = wait_for(f"{MISSING_RESPONDER_ALERT} naming {victim.name}", gone_alert, 420,
                          every=2)
        self.timings["alert latency"] = time.monotonic() - stopped
        log(f"{MISSING_RESPONDER_ALERT} fired after {self.timings['alert latency']:.0f} s: "
            f"{alerts[0]['labels']}; firing by then: "
            + ", ".join(f"{name} after {t:.0f} s" for name, t in first_firing.items()))
        victim.inside("systemctl", "start", "mcast-echo")
        started = time.monotonic()
        wait_for(f"every alert naming {victim.name} to resolve", lambda: not naming_victim(),
                 300, 2)
        self.timings["alert resolve"] = time.monotonic() - started
        log(f"{victim.name} started: its alerts resolved in {self.timings['alert resolve']:.1f} s")

    def reload(self) -> None:
        before = dict(zip((h.name for h in self.fleet.hosts),
                          self.fleet.each(lambda h: h.main_pid())))
        listeners = [{"group": GROUP, "port": PORT}, {"group": SECOND_GROUP, "port": PORT}]
        extra = self.state / "two-groups.json"
        extra.write_text(json.dumps({"mcast_echo_listeners": listeners}))
        recap = self.timed("rollout of a second group", self.playbook, "-e", f"@{extra}")
        assert recap["_rc"]["rc"] == 0, self.last_output[-4000:]
        assert all(v["changed"] >= 1 for k, v in recap.items() if not k.startswith("_"))
        after = dict(zip(before, self.fleet.each(lambda h: h.main_pid())))
        assert after == before, f"main PIDs changed (a restart, not a reload): {before} -> {after}"
        for group in (SECOND_GROUP, GROUP):
            rc, report = wait_for(f"all {self.count} on {group}", lambda group=group: (
                r := self.monitor.ping(group, self.count))[0] == 0 and r, 30)
            assert report["responder_count"] == self.count
        log(f"reload: {SECOND_GROUP} answers from all {self.count}, main PIDs unchanged")

    def bad_variable(self) -> None:
        def config_sums() -> list[str]:
            return self.fleet.each(lambda h: h.inside("sha256sum", "/etc/mcast-echo.yaml").stdout)
        sums, pids = config_sums(), self.fleet.each(lambda h: h.main_pid())
        bad = self.state / "bad-group.json"
        bad.write_text(json.dumps({"mcast_echo_listeners": [{"group": GROUP, "port": PORT},
                                                             {"group": BAD_GROUP, "port": PORT}]}))
        recap = self.timed("refused rollout", self.playbook, "-e", f"@{bad}")
        assert recap["_rc"]["rc"] != 0 and self.total(recap, "failed") == self.count, \
            self.last_output[-4000:]
        assert "failed to validate" in self.last_output and BAD_GROUP in self.last_output, \
            self.last_output[-4000:]
        assert config_sums() == sums, "a refused config reached a host"
        assert self.fleet.each(lambda h: h.main_pid()) == pids
        rc, report = self.monitor.ping(SECOND_GROUP, self.count)
        assert rc == 0, report
        log(f"group {BAD_GROUP}: refused by check-config on all {self.count} hosts, "
            "nothing changed")


def main() -> int:
    count = int(os.environ.get("FLEET_HOSTS", "50"))
    debs = sorted((ROOT / "build" / "deb").glob("mcast-echo_*_all.deb"))
    deb = Path(os.environ.get("MCAST_ECHO_DEB") or (debs[-1] if debs else ""))
    assert deb.is_file(), "no package: build it with `make deb`"
    assert os.geteuid() == 0, "fleet-test runs as root (namespaces, systemd as PID 1)"
    parent = ROOT / "build" / "fleet"
    parent.mkdir(parents=True, exist_ok=True)
    down_leftovers(parent)
    state = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    (state / "owner").write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"fleet-test: signal {signum}"))
    fleet_run = Run(state, count, deb.resolve())
    complete = False
    try:
        fleet_run.fleet.make_network()
        fleet_run.fleet.raise_limits()
        fleet_run.timed(f"boot of {count} hosts", fleet_run.fleet.boot,
                        int(os.environ.get("FLEET_BOOT_PARALLEL", "4")))
        fleet_run.write_ansible_files()
        fleet_run.lint()
        fleet_run.rollout()
        fleet_run.ping_all()
        alerting = fleet_run.prometheus()
        if alerting:
            fleet_run.alert()
            fleet_run.timed("mesh: a deaf host", MeshCheck(fleet_run).check, wait_for)
        else:
            log("SKIPPED the alert step: the rules file or ping --prometheus-textfile is missing")
        fleet_run.reload()
        fleet_run.bad_variable()
        complete = alerting
    finally:
        fleet_run.monitor.stop_probe_loop()
        started = time.monotonic()
        left = fleet_run.fleet.close()
        fleet_run.timings["teardown"] = time.monotonic() - started
        if left:
            print("fleet-test: LEFT BEHIND:\n  " + "\n  ".join(left))
        else:
            log("teardown: no process, mount, cgroup, bridge or namespace left")
            shutil.rmtree(state)
        print(f"\nfleet-test timings, {count} hosts ({fleet_run.forks} forks):")
        for name, seconds in fleet_run.timings.items():
            print(f"  {name:28s} {seconds:7.1f} s")
    if left:
        return 1
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
