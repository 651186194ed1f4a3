"""`make bench`'s report: medians and spreads from the raw runs, the Markdown, the plot.

Pure functions over the results dict that run.py writes to results.json, so a report can
be remade from a saved file: `python3 tests/bench/report.py build/bench/results.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from figures import Spread, cpu_us_per_echo, kilo, other_cpu, ratio, verdict
from ratios import issue21_rows

SHORT = {"c": "C echo", "daemon": "mcast-echo", "plain": "mcast-echo\nplain path",
         "fast": "mcast-echo\nfast path", "seed": "Python seed"}
ISSUE8_ROWS = tuple(SHORT)  # the responders of the main table; the others are issue 21's
# Issue 8's targets, for `mcast-echo serve` with the policy on, against the C echo.
MAX_CPU_RATIO = 1.2
MAX_RTT_EXCESS_US = 5.0
MAX_READY_MS = 250
MAX_PING_EXCESS_US = 2  # issue 19.2: ping's p50 against the daemon vs the C echo, idle
MAX_LOADED_PING_EXCESS_US = 10  # the same at half of each responder's capacity
MAX_RSS_KIB = 30 * 1024
MAX_RSS_GROWTH_KIB = 1024  # "flat through a flood": at most 1 MiB above idle


def summarize(runs: list[dict]) -> dict[str, Spread]:
    def each(measure: str, key: str) -> Spread:
        return Spread([r[measure][key] for r in runs if measure in r])

    def busy(key: str) -> Spread:
        """Share of one core that *key* took in the 64 B closed loop."""
        return Spread([r["closed64"][key] / r["closed64"]["seconds"] for r in runs
                       if "closed64" in r and r["closed64"].get(key, -1) >= 0])

    loss_sent = sum(r[m]["sent"] for r in runs for m in ("closed64", "closed1400", "rtt64")
                    if m in r)
    loss_lost = sum(r[m]["lost"] for r in runs for m in ("closed64", "closed1400", "rtt64")
                    if m in r)
    return {
        "eps64": each("closed64", "echoes_per_s"),
        "eps1400": each("closed1400", "echoes_per_s"),
        "cpu64": Spread([cpu_us_per_echo(r["closed64"]) for r in runs if "closed64" in r]),
        "cpu1400": Spread([cpu_us_per_echo(r["closed1400"]) for r in runs
                           if "closed1400" in r]),
        "p50": each("rtt64", "p50_us"),
        "p99": each("rtt64", "p99_us"),
        "ping_p50": each("ping", "p50_us"),
        "loaded_ping_p50": each("ping_half_load", "p50_us"),
        "half_load": each("ping_half_load", "load_per_s"),
        "loaded_replies": each("ping_half_load", "replies"),
        "load_cpu": busy("self_cpu_s"),
        "responder_busy": busy("responder_cpu_s"),
        "other_cpu": Spread([other_cpu(r["closed64"]) for r in runs if "closed64" in r]),
        "loss": Spread([loss_lost / loss_sent] if loss_sent else []),
        "lost": Spread([loss_lost] if loss_sent else []),
    }


def table(results: dict, summaries: dict[str, dict[str, Spread]]) -> str:
    c = summaries.get("c", {})
    lines = ["| responder | 64 B echoes/s (ratio to C) | min–max | CPU µs/echo | "
             "1,400 B echoes/s | RTT p50/p99 | loss |",
             "|---|---|---|---|---|---|---|"]
    for key, s in summaries.items():
        label = results["responders"][key]["label"]
        if not s["eps64"]:
            lines.append(f"| {label} | not measured | | | | | |")
            continue
        lines.append(
            f"| {label} | {kilo(s['eps64'].median)}{ratio(s['eps64'], c.get('eps64'))} "
            f"| {kilo(s['eps64'].low)}–{kilo(s['eps64'].high)} "
            f"| {s['cpu64'].median:.1f}{ratio(s['cpu64'], c.get('cpu64'))} "
            f"({s['cpu64'].low:.1f}–{s['cpu64'].high:.1f}) "
            f"| {kilo(s['eps1400'].median)}{ratio(s['eps1400'], c.get('eps1400'))} "
            f"({kilo(s['eps1400'].low)}–{kilo(s['eps1400'].high)}) "
            f"| {s['p50'].median:.0f} / {s['p99'].median:.0f} µs "
            f"| {s['loss'].median * 100:.3g} % ({s['lost'].median:.0f}) |"
            if s["cpu64"] and s["eps1400"] and s["p50"] else f"| {label} | incomplete | | | | | |")
    return "\n".join(lines)


def targets(results: dict, summaries: dict[str, dict[str, Spread]]) -> list[str]:
    d, c = summaries.get("daemon"), summaries.get("c")
    if not d or not c or not d["eps64"] or not c["eps64"]:
        return ["- not evaluated: needs both the `daemon` and the `c` responders measured"]
    lines = []
    for size in (64, 1400):
        mine, theirs = d[f"eps{size}"].median, c[f"eps{size}"].median
        lines.append(f"- Throughput at {size:,} B, {results['meta']['window']} in flight, "
                     f"at least 1.0× the C echo: {mine / theirs:.2f}× "
                     f"({kilo(mine)}/s against {kilo(theirs)}/s; runs "
                     f"{kilo(d[f'eps{size}'].low)}–{kilo(d[f'eps{size}'].high)}): "
                     f"{verdict(mine >= theirs)}")
    cpu = d["cpu64"].median / c["cpu64"].median
    lines.append(f"- CPU per echo at most {MAX_CPU_RATIO}× the C echo: {cpu:.2f}× "
                 f"({d['cpu64'].median:.1f} µs against {c['cpu64'].median:.1f} µs): "
                 f"{verdict(cpu <= MAX_CPU_RATIO)}")
    excess = d["p50"].median - c["p50"].median
    lines.append(f"- p50 RTT with one in flight within {MAX_RTT_EXCESS_US:g} µs of the C echo: "
                 f"{d['p50'].median:.1f} µs against {c['p50'].median:.1f} µs "
                 f"({excess:+.1f} µs): {verdict(excess <= MAX_RTT_EXCESS_US)}")
    if d["ping_p50"] and c["ping_p50"]:
        excess = d["ping_p50"].median - c["ping_p50"].median
        lines.append(f"- `mcast-echo ping -c 150 -i 0.01` p50 (the residence time taken off, "
                     f"issue 19.2) at most {MAX_PING_EXCESS_US:g} µs above the C echo's: "
                     f"{d['ping_p50'].median:.1f} µs against {c['ping_p50'].median:.1f} µs "
                     f"({excess:+.1f} µs; runs {d['ping_p50'].low:.1f}–"
                     f"{d['ping_p50'].high:.1f} against {c['ping_p50'].low:.1f}–"
                     f"{c['ping_p50'].high:.1f}): {verdict(excess <= MAX_PING_EXCESS_US)}")
    if d["loaded_ping_p50"] and c["loaded_ping_p50"]:
        mine, theirs = d["loaded_ping_p50"], c["loaded_ping_p50"]
        excess = mine.median - theirs.median
        lines.append(f"- the same with each responder at half its 64 B capacity ("
                     f"{kilo(d['half_load'].median)} and {kilo(c['half_load'].median)} "
                     f"datagrams/s), at most {MAX_LOADED_PING_EXCESS_US:g} µs above the C "
                     f"echo's: {mine.median:.1f} µs against {theirs.median:.1f} µs "
                     f"({excess:+.1f} µs; runs {mine.low:.1f}–{mine.high:.1f} against "
                     f"{theirs.low:.1f}–{theirs.high:.1f}; replies {d['loaded_replies'].median:.0f}"
                     f" and {c['loaded_replies'].median:.0f} of 150): "
                     f"{verdict(excess <= MAX_LOADED_PING_EXCESS_US)}")
    startup = results.get("startup")
    if startup and startup["ms"]:
        ms = Spread(startup["ms"])
        lines.append(f"- exec → READY=1 under {MAX_READY_MS} ms: median {ms.median:.0f} ms "
                     f"({ms.low:.0f}–{ms.high:.0f}, {len(ms.values)} starts): "
                     f"{verdict(ms.median < MAX_READY_MS)}")
    rss = [r["rss"] for r in results["responders"]["daemon"]["runs"] if "flood64" in r]
    if rss:
        idle, peak = rss[0]["idle_kib"], max(rss[0]["peak_kib"], rss[0]["after_kib"])
        lines.append(f"- RSS under {MAX_RSS_KIB // 1024} MiB idle and flat through a flood "
                     f"(at most {MAX_RSS_GROWTH_KIB // 1024} MiB above idle): idle "
                     f"{idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB: "
                     f"{verdict(idle < MAX_RSS_KIB and peak - idle <= MAX_RSS_GROWTH_KIB)}")
    lines.append("- Probe echoes with the identity trailer, drops, the debug log and the rest of "
                 "the suite on every path: not measured here; `make test` proves them")
    return lines


def memory_and_startup(results: dict) -> list[str]:
    lines = []
    startup = results.get("startup")
    if startup and startup["ms"]:
        ms = Spread(startup["ms"])
        lines.append(f"- exec → READY=1 (one group, on lo, {len(ms.values)} starts): "
                     f"median {ms.median:.0f} ms, {ms.low:.0f}–{ms.high:.0f}; RSS idle "
                     f"{startup['rss_idle_kib'] / 1024:.1f} MiB")
    every = results.get("startup_all_groups")
    if every and every["ms"]:
        ms = Spread(every["ms"])
        groups = results["meta"].get("groups", "?")
        lines.append(f"- exec → READY=1 with the bench's {groups} groups joined "
                     f"({len(ms.values)} starts): median {ms.median:.0f} ms, "
                     f"{ms.low:.0f}–{ms.high:.0f}; RSS idle {every['rss_idle_kib'] / 1024:.1f} MiB")
    for r in results["responders"].values():
        for run in r["runs"]:
            if "flood64" in run:
                rss, flood = run["rss"], run["flood64"]
                lines.append(f"- {r['label']}: RSS idle {rss['idle_kib'] / 1024:.1f} MiB, "
                             f"peak under the closed loops and a {flood['seconds']:.0f} s flood "
                             f"of {kilo(flood['sent_per_s'])} datagrams/s "
                             f"{rss['peak_kib'] / 1024:.1f} MiB, after "
                             f"{rss['after_kib'] / 1024:.1f} MiB")
    return lines


def generator(results: dict, summaries: dict[str, dict[str, Spread]]) -> list[str]:
    ceiling = results.get("ceiling", {})
    if "error" in ceiling or "64" not in ceiling:
        return [f"- one-way ceiling not measured: {ceiling.get('error', 'skipped')}"]
    how = "UDP GSO batches" if ceiling["64"].get("gso") else "sendmmsg batches"
    lines = [f"- one-way ceiling of the generator ({how}) into a sink that only reads: "
             f"{kilo(ceiling['64']['sent_per_s'])}/s at 64 B, "
             f"{kilo(ceiling['1400']['sent_per_s'])}/s at 1,400 B "
             f"(sink: {ceiling.get('sink', '?')})"]
    fastest = max((s["eps64"].median for s in summaries.values() if s["eps64"]), default=0)
    if fastest:
        lines.append(f"- the fastest closed loop at 64 B ({kilo(fastest)}/s) is "
                     f"{fastest / ceiling['64']['sent_per_s']:.2f} of that ceiling")
    lines += ["- in the 64 B closed loop (medians; a responder near 100 % of its core is the "
              "limit; CPU taken by other processes on this machine shows how noisy a run was):",
              "",
              "| responder | responder busy | generator busy | other processes |",
              "|---|---|---|---|"]
    for key, s in summaries.items():
        if s["load_cpu"] and s["responder_busy"]:
            other = (f"{s['other_cpu'].median * 100:.0f} % of a core "
                     f"({s['other_cpu'].low * 100:.0f}–{s['other_cpu'].high * 100:.0f})"
                     if s["other_cpu"] else "?")
            lines.append(f"| {SHORT[key].replace(chr(10), ', ')} "
                         f"| {s['responder_busy'].median * 100:.0f} % "
                         f"| {s['load_cpu'].median * 100:.0f} % | {other} |")
    return lines


def plot(summaries: dict[str, dict[str, Spread]], path: Path) -> Optional[str]:
    """echoes.png; None, or why there is no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    keys = [k for k, s in summaries.items() if s["eps64"] and s["cpu64"] and s["p50"]]
    if not keys:
        return "no plot: nothing measured"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    xs = range(len(keys))
    width = 0.38

    def bars(ax, offset: float, name: str, scale: float, label: str) -> None:
        spreads = [summaries[k][name] for k in keys]
        medians = [s.median * scale for s in spreads]
        errors = [[(s.median - s.low) * scale for s in spreads],
                  [(s.high - s.median) * scale for s in spreads]]
        ax.bar([x + offset for x in xs], medians, width, yerr=errors, capsize=3, label=label)

    bars(axes[0], -width / 2, "eps64", 1e-3, "64 B")
    bars(axes[0], width / 2, "eps1400", 1e-3, "1,400 B")
    axes[0].set_title("echoes/s, 64 in flight (median, min–max)")
    axes[0].set_ylabel("thousand echoes/s")
    bars(axes[1], -width / 2, "cpu64", 1, "64 B")
    bars(axes[1], width / 2, "cpu1400", 1, "1,400 B")
    axes[1].set_title("responder CPU per echo")
    axes[1].set_ylabel("µs")
    bars(axes[2], -width / 2, "p50", 1, "p50")
    bars(axes[2], width / 2, "p99", 1, "p99")
    axes[2].set_title("RTT, 64 B, one in flight")
    axes[2].set_ylabel("µs")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xticks(list(xs))
        ax.set_xticklabels([SHORT.get(k, k) for k in keys], fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def write_report(results: dict, out: Path) -> str:
    """Write report.md and echoes.png into *out*; the tables, for stdout."""
    summaries = {k: summarize(r["runs"]) for k, r in results["responders"].items()
                 if k in ISSUE8_ROWS}
    rows = table(results, summaries)
    more = issue21_rows(results)
    meta = results["meta"]
    no_plot = plot(summaries, out / "echoes.png")
    text = [
        "# mcast-echo bench",
        "",
        f"{meta['date']}; Linux {meta['kernel']} {meta['machine']}, {meta['cpus']} CPUs, "
        f"Python {meta['python']}. A private network namespace, everything on `lo`. The "
        f"load generator (cload.c) on CPU {meta['load_cpu']}, the responder on CPU "
        f"{meta['responder_cpu']}, both at nice {meta.get('nice', 0)}; {meta['runs']} run(s) "
        f"of {meta['seconds']:g} s per "
        f"measurement (after {meta['warmup']:g} s of warm-up), responders one at a time in "
        "alternating order. Medians over the runs; min–max in brackets. CPU per echo is the "
        "responder's utime+stime (/proc/PID/stat, 10 ms ticks) over the 64 B closed loop, "
        "divided by its echoes. Loss: datagrams not back within 200 ms, over every "
        "measurement (count in brackets).",
        "",
        rows,
        "",
        *more,
        "",
        "## Targets (issue 8), `mcast-echo serve` with the policy on, against the C echo",
        "",
        *targets(results, summaries),
        "",
        "## Start-up and memory",
        "",
        *memory_and_startup(results),
        "",
        "## The load generator is not the bottleneck",
        "",
        *generator(results, summaries),
        "",
        "## What the responders said",
        "",
    ]
    for r in results["responders"].values():
        said = r["runs"][0]["log"] if r["runs"] else []
        text.append(f"- {r['label']}: " + ("; ".join(f"`{line}`" for line in said[:4])
                                           or "nothing logged"))
        text += [f"  - error: {e}" for e in r["errors"]]
    text += ["", "![echoes/s, CPU per echo and RTT](echoes.png)" if no_plot is None
             else no_plot, "", "The daemon's bench config:", "", "```yaml",
             meta["config"].rstrip(), "```", ""]
    (out / "report.md").write_text("\n".join(text))
    return "\n".join([rows, "", *more])


if __name__ == "__main__":
    results_path = Path(sys.argv[1] if len(sys.argv) > 1 else "build/bench/results.json")
    print(write_report(json.loads(results_path.read_text()), results_path.parent))
