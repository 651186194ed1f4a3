"""The fleet's mesh step (issue 23): every host runs the mesh (the role's mcast_echo_mesh), and
one host's switch port is made deaf to multicast.

The fault is an nftables rule in the switch netns' bridge family, forward hook: IPv4 multicast
forwarded *out of* the victim's port is dropped, so the victim hears no other host's probe,
while its own multicast still goes out and every unicast (the replies to it, the scrapes) still
flows: what a switch port whose IGMP snooping lost the host's join does. Then:

- every other host's view shows the victim's column dead: `mcast-echo mesh` from the monitor,
  reading all the daemons' endpoints, names the victim deaf, with forward and reverse 0 from
  every other prober, and nothing else dead, no partition;
- the victim says it hears nobody (its systemd STATUS, its mcast_echo_mesh_peers_heard 0);
- McastEchoMeshDeaf (packaging/prometheus/mcast-echo-mesh.rules.yml) fires for it in the
  fleet's Prometheus; after the rule goes, the victim hears everyone again and the alert
  resolves.
"""

from __future__ import annotations

import json
import time

from lab import NETNS_SWITCH, Host, run

MESH_GROUP, MESH_PORT = "239.255.77.77", 9998
# One probe a second per host: 50 hosts make 50 probes and 2,450 replies a second in all, on a
# machine of two cores that also runs the 50 systemds.
MESH_INTERVAL = 1.0
DEAF_ALERT = "McastEchoMeshDeaf"
NFT_TABLE = "fleetmesh"
WINDOW = 6  # seconds between the command's two scrapes: 6 probes a pair


def mesh_vars(count: int) -> dict:
    """The role's mcast_echo_mesh for every host."""
    return {"group": MESH_GROUP, "port": MESH_PORT, "interface": "eth0",
            "interval": MESH_INTERVAL, "expect": count}


def nft(*args: str) -> None:
    run("ip", "netns", "exec", NETNS_SWITCH, "nft", *args)


class MeshCheck:
    def __init__(self, fleet_run) -> None:
        self.run = fleet_run
        self.fleet = fleet_run.fleet
        self.monitor = fleet_run.monitor
        self.count = fleet_run.count

    def peers_heard(self) -> dict[str, float]:
        """address -> its mcast_echo_mesh_peers_heard, from Prometheus."""
        rows = self.monitor.query("mcast_echo_mesh_peers_heard * on (job, instance) "
                                  "group_left (address) mcast_echo_mesh_info")
        return {r["metric"]["address"]: float(r["value"][1]) for r in rows}

    def everyone_hears_everyone(self) -> bool:
        heard = self.peers_heard()
        return len(heard) == self.count and all(v == self.count - 1 for v in heard.values())

    def mesh_command(self) -> tuple[int, dict]:
        urls = [f"http://{h.address}:9101/metrics" for h in self.fleet.hosts]
        done = self.fleet.in_monitor(self.monitor.mcast_echo, "mesh", "--json", "--window",
                                     str(WINDOW), "--timeout", "10", *urls, check=False,
                                     timeout=120)
        try:
            return done.returncode, json.loads(done.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"mesh gave no JSON (exit {done.returncode}):\n"
                                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}") from None

    def deaf_alerts(self, victim: Host) -> list[dict]:
        return [a for a in self.monitor.alerts() if a["labels"]["alertname"] == DEAF_ALERT
                and a["labels"].get("address") == victim.address]

    def check(self, wait_for) -> None:
        wait_for(f"all {self.count} mesh hosts hearing the {self.count - 1} others",
                 self.everyone_hears_everyone, 60)
        pairs = self.count * (self.count - 1)
        wait_for(f"the rules recording all {pairs} ordered pairs", lambda: self.monitor.query(
            f"count(mcast_echo_mesh:reverse_ratio:rate1m > 0) == {pairs}"), 60, 2)
        victim = self.fleet.hosts[len(self.fleet.hosts) // 3]
        port = victim.name  # its veth on the switch's bridge
        nft("add", "table", "bridge", NFT_TABLE)
        try:
            nft("add", "chain", "bridge", NFT_TABLE, "forward",
                "{ type filter hook forward priority 0; }")
            nft("add", "rule", "bridge", NFT_TABLE, "forward", "oifname", port,
                "ip", "daddr", "224.0.0.0/4", "drop")
            faulted = time.monotonic()
            self.deafened(victim, faulted, wait_for)
            nft("flush", "chain", "bridge", NFT_TABLE, "forward")
            healed = time.monotonic()
            wait_for(f"{victim.name} hearing all {self.count - 1} again",
                     self.everyone_hears_everyone, 60)
            wait_for(f"{DEAF_ALERT} for {victim.name} resolved",
                     lambda: not self.deaf_alerts(victim), 60, 2)
            self.run.timings["mesh: deaf host recovered"] = time.monotonic() - healed
        finally:
            nft("delete", "table", "bridge", NFT_TABLE)

    def deafened(self, victim: Host, faulted: float, wait_for) -> None:
        wait_for(f"{victim.name}'s peers_heard 0",
                 lambda: self.peers_heard().get(victim.address) == 0, 30, 1)
        status, document = self.mesh_command()
        others = [h.address for h in self.fleet.hosts if h is not victim]
        column = {p["prober"]: (p["forward"], p["reverse"]) for p in document["pairs"]
                  if p["responder"] == victim.address}
        row = [min(p["forward"], p["reverse"]) for p in document["pairs"]
               if p["prober"] == victim.address]
        assert status == 1 and document["deaf"] == [victim.address], \
            (status, document["deaf"], document["unreachable"])
        assert sorted(column) == sorted(others) and set(column.values()) == {(0.0, 0.0)}, column
        assert not document["partitions"] and not document["dead_paths"], document["dead_paths"]
        assert min(row) > 0, row  # its own probes still go out, and the replies come back
        self.run.timings["mesh: deaf host named"] = time.monotonic() - faulted
        status_text = victim.inside("systemctl", "show", "-P", "StatusText",
                                    "mcast-echo.service").stdout
        if "hears nobody" not in status_text:  # STATUS is written every status_interval
            wait_for(f"{victim.name}'s STATUS saying it hears nobody", lambda: "hears nobody" in
                     victim.inside("systemctl", "show", "-P", "StatusText",
                                   "mcast-echo.service").stdout, 15, 1)
        alerts = wait_for(f"{DEAF_ALERT} firing for {victim.name}", lambda: [
            a for a in self.deaf_alerts(victim) if a["state"] == "firing"], 120, 2)
        self.run.timings["mesh: deaf alert firing"] = time.monotonic() - faulted
        print(f"  mesh: {victim.name} deaf: named by `mcast-echo mesh` (exit 1, its column "
              f"dead from all {len(others)}), STATUS '...hears nobody...', {DEAF_ALERT} "
              f"firing {self.run.timings['mesh: deaf alert firing']:.0f} s after the fault: "
              f"{alerts[0]['labels']}", flush=True)
