"""`make bench`: the daemon and a C echo side by side; a Markdown report and a plot.

Runs in the private network namespace the make target made, everything on `lo` (the
namespace's net.ipv4.igmp_max_memberships raised so that a port's listeners share a socket).
Builds the C echo (cecho.c) and load generator (cload.c) with the system compiler into
build/bench/, then, one responder at a time (the daemon refuses to share its port), for
BENCH_RUNS runs in alternating order: echoes/s with 64 datagrams in flight at 64 B and
1,400 B, the responder's CPU per echo, RTT with one in flight, loss, and the RTT that
`mcast-echo ping` shows, idle and with the responder at half its capacity (the 64 B rate it
reached, halved). The generator runs on one CPU, the responder on another. Also exec ->
READY=1 and the daemon's RSS idle, under load and through a flood, and the generator's
one-way ceiling. Then issue 21's rows (scenarios.py), echoes/s and CPU per echo only: the
daemon over IPv6 beside the C echo over IPv6 (64 B and 1,400 B), `reply: group` and `both`
beside the one-group daemon's unicast replies (the generator joins the group and counts the
echoes that come back to it), the C echo's group and both modes, and 1,000 listeners with
traffic round-robin over 100 of them beside the one-group daemon, with the time from exec
until all 100 answer. Every echo is checked byte for byte. Every loop is bounded by a
count and a deadline; with the defaults the whole run takes about 6 minutes (5:57 on the
project's 2-CPU machine, shared).

Knobs (environment): BENCH_RUNS (3), BENCH_SECONDS (3, per measurement), BENCH_STARTS (7),
BENCH_NICE (-10: the generator and every responder alike, so that other jobs on a shared
machine disturb the runs less; 0 leaves the priority alone),
BENCH_RESPONDERS (comma list of scenarios.SPECS' keys: daemon, plain, fast, c, seed, c6,
daemon6, daemon1, group, both, cgroup, cboth, many; default all but fast),
BENCH_GROUPS (1000: the listeners of the `daemon` and `many` rows), CC (cc),
BENCH_OUT (build/bench).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(HERE))

from ratios import integrity_problems  # noqa: E402
from report import write_report  # noqa: E402
from scenarios import (  # noqa: E402
    DEFAULT_RESPONDERS,
    GROUP,
    IFNAME,
    LISTENERS,
    PORT,
    SPECS,
    Spec,
    configs,
)

from daemonproc import DaemonProcess  # noqa: E402
from loadlab import NotifySink, require_private_netns  # noqa: E402

WINDOW = 64
SIZES = (64, 1400)
WARMUP = 0.3
LOSS_TIMEOUT_MS = 200  # a datagram not back by then is lost; far above any round trip here
RTT_CAP = 200_000
RSS_POLL = 0.1
PROBE_SECONDS = 15  # the many-listeners daemon's start, bounded
# `mcast-echo ping` against each responder, one probe in flight (issue 19.2): the RTTs it
# reports, so that the daemon's residence time is seen to come off.
PING_PROBES = ("-c", "150", "-i", "0.01", "-W", "0.5", "-n")
_REPLY_TIME = re.compile(r"time=([0-9.]+) ms")
LOADED_PING_S = 3.0  # the half load's length: ping's 150 probes (1.5 s) and its last wait
SERVE_ARGS = ("--interface", IFNAME)  # overrides every listener's interface


def knob(name: str, default: float, low: float, high: float) -> float:
    value = float(os.environ.get(name) or default)
    if not low <= value <= high:
        raise SystemExit(f"{name}={value}: allowed {low:g}..{high:g}")
    return value


# ------------------------------------------------------------------ build and processes


def build(out: Path) -> dict[str, Path]:
    compiler = shlex.split(os.environ.get("CC") or "cc")
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in ("cecho", "cload"):
        binary = out / name
        cmd = [*compiler, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(HERE / f"{name}.c")]
        try:
            subprocess.run(cmd, check=True, timeout=120)
        except FileNotFoundError:
            raise SystemExit(f"no C compiler ({compiler[0]}): apt-get install build-essential, "
                             "or set CC") from None
        built[name] = binary
    return built


def cpu_plan() -> tuple[Optional[int], Optional[int]]:
    """(generator CPU, responder CPU), or (None, None) when there are not two to pin to."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def pinned(cmd: list[str], cpu: Optional[int]) -> list[str]:
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Responder:
    """One responder process, pinned; owns its process and the thread that reads its log."""

    def __init__(self, cmd: list[str], env: dict, cpu: Optional[int]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(pinned(cmd, cpu), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **env})
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_ready(self, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if "ready:" in line:
                        return line
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"no 'ready:' within {timeout} s (exit "
                                       f"{self.proc.poll()}): " + " | ".join(self.lines[-5:]))
                self._changed.wait(0.1)

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after 5 s; what it printed on stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        assert self.proc.stdout is not None
        return self.proc.stdout.read()


class Bench:
    def __init__(self, out: Path, binaries: dict[str, Path], seconds: float) -> None:
        self.out, self.binaries, self.seconds = out, binaries, seconds
        self.load_cpu, self.responder_cpu = cpu_plan()
        self.groups = int(knob("BENCH_GROUPS", LISTENERS, 1, 4096))
        self.configs: dict[str, Path] = {}
        for name, text in configs(self.groups).items():
            self.configs[name] = out / f"mcast-echo-{name}.yaml"
            self.configs[name].write_text(text)

    def command(self, spec: Spec) -> list[str]:
        group = spec.targets(self.groups)[0]
        if spec.kind == "daemon":
            return [sys.executable, "-m", "mcast_echo", "serve", "-c",
                    str(self.configs[spec.config]), *SERVE_ARGS]
        if spec.key == "seed":
            return [sys.executable, str(HERE / "seed_echo.py"), group, str(PORT), IFNAME]
        return [str(self.binaries["cecho"]), group, str(PORT), IFNAME, "--reply", spec.reply]

    def cload(self, mode: str, size: int, spec: Spec, pid: int = 0,
              watch: Optional[int] = None, extra: tuple[str, ...] = ()) -> tuple[dict, int]:
        """One cload run against *spec*: its JSON, and the peak RSS (KiB) of *watch* while
        it ran."""
        cmd = [str(self.binaries["cload"]), "--mode", mode,
               "--group", ",".join(spec.targets(self.groups)), "--port", str(PORT),
               "--interface", IFNAME, "--size", str(size), "--window", str(WINDOW),
               "--seconds", str(self.seconds), "--warmup", str(WARMUP),
               "--timeout-ms", str(LOSS_TIMEOUT_MS), "--pid", str(pid), *extra]
        if mode == "closed":
            cmd += ["--expect", spec.reply]
        if mode == "rtt":
            cmd += ["--count", str(RTT_CAP)]
        proc = subprocess.Popen(pinned(cmd, self.load_cpu), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + WARMUP + max(self.seconds, PROBE_SECONDS) + 15
        peak = 0
        while proc.poll() is None and time.monotonic() < deadline:
            if watch:
                peak = max(peak, rss_kib(watch))
            time.sleep(RSS_POLL)
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
        if not stdout.strip() or (proc.returncode != 0 and mode != "probe"):
            raise RuntimeError(f"cload --mode {mode} failed ({proc.returncode}): "
                               f"{stderr.strip()}")
        return json.loads(stdout.strip().splitlines()[-1]), peak

    def ping(self) -> dict:
        """`mcast-echo ping -c 150 -i 0.01` from the generator's CPU: the median of the
        RTTs its reply lines show (µs), and how many it showed."""
        cmd = [sys.executable, "-m", "mcast_echo", "ping", GROUP, "-p", str(PORT),
               "-I", IFNAME, *PING_PROBES]
        try:
            done = subprocess.run(pinned(cmd, self.load_cpu), capture_output=True, text=True,
                                  timeout=30)
        except subprocess.TimeoutExpired:
            raise RuntimeError("mcast-echo ping did not end within 30 s") from None
        rtts = sorted(float(ms) * 1000 for ms in _REPLY_TIME.findall(done.stdout))
        if not rtts:
            raise RuntimeError(f"mcast-echo ping showed no RTT ({done.returncode}): "
                               f"{done.stderr.strip()[-200:]}")
        return {"p50_us": rtts[len(rtts) // 2], "replies": len(rtts)}

    def ping_loaded(self, rate: float) -> dict:
        """ping() while the generator sends *rate* 64 B datagrams/s to the responder (their
        echoes are never read): the RTT ping shows with the responder half busy, and the
        load the generator kept up meanwhile."""
        cmd = [str(self.binaries["cload"]), "--mode", "oneway", "--group", GROUP,
               "--port", str(PORT), "--interface", IFNAME, "--size", "64", "--rate",
               f"{rate:.0f}", "--seconds", str(LOADED_PING_S), "--warmup", str(WARMUP)]
        load = subprocess.Popen(pinned(cmd, self.load_cpu), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(WARMUP)  # the load is steady before the first probe
            figures = self.ping()
        finally:
            try:
                stdout, stderr = load.communicate(timeout=WARMUP + LOADED_PING_S + 15)
            except subprocess.TimeoutExpired:
                load.kill()
                stdout, stderr = load.communicate()
        if load.returncode != 0 or not stdout.strip():
            raise RuntimeError(f"cload --rate failed ({load.returncode}): {stderr.strip()}")
        figures["load_per_s"] = json.loads(stdout.strip().splitlines()[-1])["sent_per_s"]
        return figures

    def probe(self, spec: Spec, responder: Responder) -> dict:
        """Started at once after the responder's exec: the time from that exec until every
        group the generator uses has answered (ms; -1 if not all did within PROBE_SECONDS)."""
        started = time.monotonic()
        figures, _ = self.cload("probe", 64, spec, extra=("--seconds", str(PROBE_SECONDS)))
        offset_ms = (started - responder.started) * 1000
        for key in ("first_ms", "all_ms"):
            if figures[key] >= 0:
                figures[key] += offset_ms
        return figures

    def one_run(self, spec: Spec, flood: bool) -> dict:
        """Start *spec*, measure it, stop it; one run's figures."""
        responder = Responder(self.command(spec), spec.env, self.responder_cpu)
        result: dict = {}
        try:
            if spec.probe:
                result["probe"] = self.probe(spec, responder)
            result["ready"] = responder.wait_ready()
            time.sleep(0.3)  # let start-up settle before the idle RSS
            idle = rss_kib(responder.pid)
            peak = idle
            for size in spec.sizes:
                result[f"closed{size}"], seen = self.cload("closed", size, spec,
                                                           responder.pid, responder.pid)
                peak = max(peak, seen)
            if spec.full:
                result["rtt64"], _ = self.cload("rtt", 64, spec, responder.pid)
                result["ping"] = self.ping()
                result["ping_half_load"] = self.ping_loaded(
                    result["closed64"]["echoes_per_s"] / 2)
            if flood and spec.full:  # as fast as the generator can send, echoes never read
                result["flood64"], seen = self.cload("oneway", 64, spec, responder.pid,
                                                     responder.pid)
                peak = max(peak, seen)
            result["rss"] = {"idle_kib": idle, "peak_kib": peak,
                             "after_kib": rss_kib(responder.pid)}
            result["alive"] = responder.proc.poll() is None
        finally:
            result["stdout"] = responder.stop().strip()
            result["log"] = [line for line in responder.lines
                             if "path" in line.lower() or "ready:" in line
                             or "error" in line.lower() or "warning" in line.lower()][-10:]
        return result

    def ceiling(self) -> dict:
        """The generator's one-way rate into a sink that only reads."""
        sink = Responder([str(self.binaries["cecho"]), GROUP, str(PORT), IFNAME, "--sink"],
                         {}, self.responder_cpu)
        figures: dict = {}
        try:
            sink.wait_ready()
            for size in SIZES:
                figures[str(size)], _ = self.cload("oneway", size, SPECS["c"])
        finally:
            figures["sink"] = sink.stop().strip()
        return figures


def startup_times(config: Path, starts: int) -> dict:
    """exec -> READY=1 (ms) of *starts* daemon starts with the bench config, the idle RSS
    of the last one."""
    times, rss = [], 0
    with tempfile.TemporaryDirectory(prefix="mcast-echo-bench-") as tmp:
        for index in range(starts):
            sink = NotifySink(Path(tmp) / f"notify{index}.sock")
            t0 = time.monotonic()
            daemon = DaemonProcess(config, args=SERVE_ARGS, env=sink.env)
            try:
                sink.wait(lambda f: "READY" in f, 10, "READY=1")
                times.append((time.monotonic() - t0) * 1000)
                time.sleep(0.3)
                rss = daemon.rss_kib()
            finally:
                daemon.stop()
                sink.close()
    return {"ms": times, "rss_idle_kib": rss}


def main() -> int:
    require_private_netns()
    # IPv6 multicast on lo: the kernel makes any other route via lo a reject route; with a
    # local one, what is sent to a group comes back up to the sockets that joined it
    subprocess.run(["ip", "-6", "route", "add", "local", "ff00::/8", "dev", IFNAME, "table",
                    "local"], check=True)
    # One socket holds every IPv4 group of a port (daemon/sharedsocket.py): room for the
    # biggest config's memberships, as the daemon's log line says to make (this namespace's)
    with open("/proc/sys/net/ipv4/igmp_max_memberships", "w") as f:
        f.write(str(max(LISTENERS, int(knob("BENCH_GROUPS", LISTENERS, 1, 4096)))))
    runs = int(knob("BENCH_RUNS", 3, 1, 20))
    seconds = knob("BENCH_SECONDS", 3, 0.5, 60)
    starts = int(knob("BENCH_STARTS", 7, 0, 50))
    keys = [k.strip() for k in (os.environ.get("BENCH_RESPONDERS") or DEFAULT_RESPONDERS)
            .split(",") if k.strip()]
    unknown = [k for k in keys if k not in SPECS]
    if unknown or not keys:
        raise SystemExit(f"BENCH_RESPONDERS: unknown {unknown}; choose from {list(SPECS)}")
    out = Path(os.environ.get("BENCH_OUT") or ROOT / "build" / "bench")
    t0 = time.monotonic()
    binaries = build(out)
    bench = Bench(out, binaries, seconds)
    if bench.load_cpu is not None:
        os.sched_setaffinity(0, {bench.load_cpu})  # this script stays off the responder's CPU
    nice = int(knob("BENCH_NICE", -10, -20, 19))
    try:  # inherited by every process started from here on: generator and responders alike
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    results: dict = {
        "meta": {"runs": runs, "seconds": seconds, "window": WINDOW, "warmup": WARMUP,
                 "cpus": os.cpu_count(), "load_cpu": bench.load_cpu, "nice": nice,
                 "responder_cpu": bench.responder_cpu, "kernel": platform.release(),
                 "python": platform.python_version(), "machine": platform.machine(),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                 "config": bench.configs["bench"].read_text().split("listeners:")[0]
                 + f"listeners: {GROUP} and {bench.groups - 1} more groups, idle\n"
                 f"(serve {' '.join(SERVE_ARGS)})", "groups": bench.groups},
        "responders": {k: {"label": SPECS[k].label, "kind": SPECS[k].kind, "runs": [],
                           "errors": []} for k in keys},
    }
    print(f"make bench: {runs} run(s) x {len(keys)} responders, {seconds:g} s per "
          f"measurement; generator on CPU {bench.load_cpu}, responder on CPU "
          f"{bench.responder_cpu}", flush=True)
    try:
        results["ceiling"] = bench.ceiling()
    except RuntimeError as e:
        results["ceiling"] = {"error": str(e)}
    for run in range(runs):
        order = keys[run % len(keys):] + keys[:run % len(keys)]  # each run starts elsewhere
        for key in order:
            spec = SPECS[key]
            print(f"  run {run + 1}/{runs}: {key}", flush=True)
            try:
                figures = bench.one_run(spec, flood=run == 0 and spec.kind == "daemon")
                results["responders"][key]["runs"].append(figures)
            except RuntimeError as e:
                print(f"    {key}: {e}", flush=True)
                results["responders"][key]["errors"].append(str(e))
    if starts and "daemon" in keys:
        results["startup"] = startup_times(bench.configs["one"], starts)
        if bench.groups > 1:
            results["startup_all_groups"] = startup_times(bench.configs["bench"],
                                                          min(starts, 3))
    results["meta"]["elapsed_s"] = round(time.monotonic() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = write_report(results, out)
    print()
    print(table)
    print(f"\nreport: {out / 'report.md'}, plot: {out / 'echoes.png'}, raw: "
          f"{out / 'results.json'} ({results['meta']['elapsed_s']:.0f} s)")
    died = [k for k, r in results["responders"].items()
            if any(not run.get("alive", True) for run in r["runs"])]
    if died:
        print(f"died during the bench: {', '.join(died)}")
    wrong = integrity_problems(results)
    for problem in wrong:
        print(f"echoes not as sent: {problem}")
    return 1 if died or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
