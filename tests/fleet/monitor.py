"""The monitor namespace's Prometheus side: Debian's prometheus and node_exporter, the probe loop.

Prometheus scrapes every host's /metrics (job mcast-echo, label `host`) and node_exporter's
textfile collector (job mcast-echo-probe), where the monitor's `mcast-echo ping
--prometheus-textfile` leaves its results, with the project's rules file loaded. Both listen on
the monitor netns' loopback only; the API is read from inside that netns.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Optional

from lab import MONITOR_ADDR, ROOT, Fleet

RULES = ROOT / "packaging" / "prometheus" / "mcast-echo.rules.yml"
MESH_RULES = ROOT / "packaging" / "prometheus" / "mcast-echo-mesh.rules.yml"
PROMETHEUS_LISTEN = "127.0.0.1:9090"
NODE_EXPORTER_LISTEN = "127.0.0.1:9100"
SCRAPE_INTERVAL = 2  # seconds; also the rules' evaluation interval
METRICS_PORT = 9101


def prometheus_config(fleet: Fleet, rules: list[Path]) -> str:
    """Prometheus' YAML (written as JSON, which is YAML): one static target per host."""
    config = {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL}s", "scrape_timeout": "1s",
                   "evaluation_interval": f"{SCRAPE_INTERVAL}s"},
        "rule_files": [str(r) for r in rules],
        "scrape_configs": [
            {"job_name": "mcast-echo",
             "static_configs": [{"targets": [f"{h.address}:{METRICS_PORT}"],
                                 "labels": {"host": h.name}} for h in fleet.hosts]},
            {"job_name": "mcast-echo-probe",
             "static_configs": [{"targets": [NODE_EXPORTER_LISTEN],
                                 "labels": {"host": "monitor"}}]},
        ],
    }
    return json.dumps(config, indent=1)


class Monitor:
    def __init__(self, fleet: Fleet, workdir: Path, mcast_echo: str) -> None:
        self.fleet = fleet
        self.workdir = workdir
        self.mcast_echo = mcast_echo
        self.textfiles = workdir / "textfile"
        self.probe_thread: Optional[threading.Thread] = None
        self.probe_stop = threading.Event()
        self.probe_runs = 0
        workdir.mkdir(parents=True, exist_ok=True)
        self.ping_config = workdir / "ping.yaml"  # ping's defaults: not this machine's /etc
        self.ping_config.write_text("group: 224.3.29.71\nport: 9999\n")

    # ------------------------------------------------------------------ processes
    def start(self, rules: list[Path]) -> None:
        self.textfiles.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(prometheus_config(self.fleet, rules))
        self.fleet.in_monitor("promtool", "check", "config", str(config))
        self.fleet.spawn("node_exporter", "prometheus-node-exporter",
                         f"--web.listen-address={NODE_EXPORTER_LISTEN}",
                         "--collector.disable-defaults", "--collector.textfile",
                         f"--collector.textfile.directory={self.textfiles}",
                         log=self.workdir / "node_exporter.log")
        self.fleet.spawn("prometheus", "prometheus", f"--config.file={config}",
                         f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                         f"--web.listen-address={PROMETHEUS_LISTEN}",
                         "--storage.tsdb.retention.time=1h", "--log.level=warn",
                         log=self.workdir / "prometheus.log")
        deadline = time.monotonic() + 30
        while not self._ready():
            if time.monotonic() > deadline:
                raise AssertionError("prometheus not ready in 30 s:\n" +
                                     (self.workdir / "prometheus.log").read_text()[-2000:])
            time.sleep(0.3)

    def _ready(self) -> bool:
        done = self.fleet.in_monitor("curl", "-sf", f"http://{PROMETHEUS_LISTEN}/-/ready",
                                     check=False, timeout=10)
        return done.returncode == 0

    # ------------------------------------------------------------------ API
    def api(self, path: str, **params: str) -> dict:
        url = f"http://{PROMETHEUS_LISTEN}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        out = self.fleet.in_monitor("curl", "-sf", "--max-time", "5", url, timeout=10).stdout
        reply = json.loads(out)
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def rule_names(self) -> list[str]:
        groups = self.api("rules")["groups"]
        return [rule["name"] for group in groups for rule in group["rules"]]

    # ------------------------------------------------------------------ the probe loop
    def ping(self, group: str, expect: int, *extra: str, count: int = 3,
             timeout: float = 60) -> tuple[int, dict]:
        argv = [self.mcast_echo, "ping", "--config", str(self.ping_config), "-I", "eth0", "-t", "1",
                "-c", str(count), "-i", "0.2", "-W", "1", "--expect", str(expect), "--json",
                *extra, group]
        done = self.fleet.in_monitor(*argv, check=False, timeout=timeout)
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"ping gave no JSON (exit {done.returncode}):\n"
                                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}") from None
        return done.returncode, report

    def start_probe_loop(self, group: str, expect: int, every: float, limit: float) -> None:
        """`ping --prometheus-textfile` every *every* seconds, for at most *limit* seconds."""
        target = self.textfiles / "mcast-echo.prom"

        def loop() -> None:
            deadline = time.monotonic() + limit
            while not self.probe_stop.is_set() and time.monotonic() < deadline:
                self.ping(group, expect, "--prometheus-textfile", str(target))
                self.probe_runs += 1
                self.probe_stop.wait(every)

        self.probe_thread = threading.Thread(target=loop, name="probe", daemon=True)
        self.probe_thread.start()

    def stop_probe_loop(self) -> None:
        self.probe_stop.set()
        if self.probe_thread is not None:
            self.probe_thread.join(timeout=70)


__all__ = ["Monitor", "MONITOR_ADDR", "RULES", "MESH_RULES"]
