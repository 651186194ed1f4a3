"""Issue 21's table in `make bench`'s report: each ratio (IPv6 beside the C echo over IPv6,
group and both replies and 1,000 listeners beside the one-group daemon, IPv4 beside the C echo)
next to the issue's target, and the check that every echo was the request byte for byte."""

from __future__ import annotations

from typing import Optional

from figures import Spread, cpu_us_per_echo, kilo, verdict

# (what, responder, measure, its reference, the reference's measure, at least, CPU at most)
ISSUE21_TARGETS = (
    ("IPv4 unicast, 64 B: echoes/s vs the C echo", "daemon", ("closed64", "echoes_per_s"),
     "c", ("closed64", "echoes_per_s"), 1.0, 1.1),
    ("IPv4 unicast, 1,400 B: echoes/s vs the C echo", "daemon",
     ("closed1400", "echoes_per_s"), "c", ("closed1400", "echoes_per_s"), 1.0, None),
    ("IPv6, 64 B: echoes/s vs the C echo over IPv6", "daemon6", ("closed64", "echoes_per_s"),
     "c6", ("closed64", "echoes_per_s"), 0.95, 1.3),
    ("IPv6, 1,400 B: echoes/s vs the C echo over IPv6", "daemon6",
     ("closed1400", "echoes_per_s"), "c6", ("closed1400", "echoes_per_s"), 0.95, 1.3),
    ("`reply: group`: requests answered/s vs the daemon's unicast mode", "group",
     ("closed64", "answered_per_s"), "daemon1", ("closed64", "echoes_per_s"), 0.9, None),
    ("`reply: both`: echoes/s (both copies) vs unicast", "both",
     ("closed64", "echoes_per_s"), "daemon1", ("closed64", "echoes_per_s"), 0.9, None),
    ("1,000 listeners, traffic over 100: echoes/s vs the one-group daemon", "many",
     ("closed64", "echoes_per_s"), "daemon1", ("closed64", "echoes_per_s"), 0.9, None),
    ("(reference) C echo, group replies: answered/s vs its unicast", "cgroup",
     ("closed64", "answered_per_s"), "c", ("closed64", "echoes_per_s"), None, None),
    ("(reference) C echo, both: echoes/s vs its unicast", "cboth",
     ("closed64", "echoes_per_s"), "c", ("closed64", "echoes_per_s"), None, None),
    ("(reference) one-group daemon vs the C echo, 64 B", "daemon1",
     ("closed64", "echoes_per_s"), "c", ("closed64", "echoes_per_s"), None, None),
)
MAX_ALL_ANSWER_MS = 3000  # "all 100 answer within a few seconds of start"


def figure(results: dict, key: str, where: tuple[str, str]) -> list[Optional[float]]:
    """*where* (measure, field) of every run of responder *key* (None where not measured)."""
    runs = results["responders"].get(key, {}).get("runs", [])
    return [run[where[0]].get(where[1]) if where[0] in run else None for run in runs]


def cpu_per_echo(results: dict, key: str, measure: str) -> list[Optional[float]]:
    runs = results["responders"].get(key, {}).get("runs", [])
    return [cpu_us_per_echo(run[measure]) if measure in run else None for run in runs]


def run_ratios(mine: list[Optional[float]], theirs: list[Optional[float]]) -> Spread:
    """The ratio within each run (run i against run i of the reference)."""
    return Spread([a / b for a, b in zip(mine, theirs) if a and b])


def issue21_rows(results: dict) -> list[str]:
    """The table of issue 21's ratios, each beside its target."""
    lines = ["## Issue 21: IPv6, group and both replies, many groups (ratios beside targets)",
             "",
             "Ratio of the medians; in brackets the min–max of the ratio within each run. CPU "
             "is the responder's per echo sent (µs; `both` sends two per request).",
             "",
             "| what | measured | reference | ratio | target | CPU µs/echo (ratio) | "
             "CPU target | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for what, key, where, ref, ref_where, least, cpu_most in ISSUE21_TARGETS:
        mine, theirs = figure(results, key, where), figure(results, ref, ref_where)
        a, b = Spread(mine), Spread(theirs)
        if not a or not b:
            lines.append(f"| {what} | not measured ({key}, {ref}) | | | | | | |")
            continue
        value = a.median / b.median
        within = run_ratios(mine, theirs)
        spread = f" ({within.low:.2f}–{within.high:.2f})" if within else ""
        cpu_a = Spread(cpu_per_echo(results, key, where[0]))
        cpu_b = Spread(cpu_per_echo(results, ref, ref_where[0]))
        cpu = cpu_a.median / cpu_b.median if cpu_a and cpu_b else None
        cpu_text = f"{cpu_a.median:.2f} vs {cpu_b.median:.2f} ({cpu:.2f}×)" if cpu else "?"
        ok = (least is None or value >= least) and (cpu_most is None or (cpu or 99) <= cpu_most)
        lines.append(
            f"| {what} | {kilo(a.median)}/s | {kilo(b.median)}/s | {value:.2f}×{spread} "
            f"| {'≥ ' + format(least, 'g') + '×' if least else '—'} | {cpu_text} "
            f"| {'≤ ' + format(cpu_most, 'g') + '×' if cpu_most else '—'} "
            f"| {verdict(ok) if least or cpu_most else ''} |")
    probes = [run["probe"] for run in results["responders"].get("many", {}).get("runs", [])
              if "probe" in run]
    if probes:
        every = Spread([p["all_ms"] for p in probes])
        answered = min(p["answered"] for p in probes)
        one = Spread([run["probe"]["all_ms"] for run in
                      results["responders"].get("daemon1", {}).get("runs", []) if "probe" in run])
        if every and len(every.values) == len(probes):
            lines.append(f"| 1,000 listeners: exec → all {probes[0]['groups']} answer | "
                         f"{every.median:.0f} ms ({every.low:.0f}–{every.high:.0f}) | "
                         + (f"one group: {one.median:.0f} ms" if one else "")
                         + f" | | ≤ {MAX_ALL_ANSWER_MS:,} ms | | | "
                         f"{verdict(every.high <= MAX_ALL_ANSWER_MS)} |")
        else:
            lines.append(f"| 1,000 listeners: exec → all answer | only {answered} of "
                         f"{probes[0]['groups']} answered | | | | | | **not met** |")
    wrong = integrity_problems(results)
    lines += ["", "Every echo checked against its request byte for byte (and, for group and "
              "both replies, by the way it came: IP_PKTINFO): "
              + ("all as sent." if not wrong else f"{len(wrong)} measurement(s) not:")]
    lines += [f"- {problem}" for problem in wrong]
    return lines


def integrity_problems(results: dict) -> list[str]:
    """Every measurement whose echoes were not the requests byte for byte, came the wrong
    way or twice, or were of the wrong length: "responder: measure: counts"."""
    problems = []
    for key, r in results["responders"].items():
        for index, run in enumerate(r["runs"]):
            for measure, figures in run.items():
                if not isinstance(figures, dict):
                    continue
                wrong = {name: figures[name] for name in
                         ("bad", "mismatched", "unexpected", "duplicate")
                         if figures.get(name)}
                if wrong:
                    problems.append(f"{key}: run {index + 1}: {measure}: {wrong}")
    return problems
