#!/usr/bin/env python3
"""Turns the figures `bench/run` collected into its section of
bench/RESULTS.md and the ratios bench/results.png is drawn from.

    bench/report.py FIGURES.tsv META.txt RESULTS.md RATIOS.tsv

FIGURES.tsv has one figure a line: part, case, peer, metric, value (the
benchmark scripts write it when BENCH_TSV is set). META.txt is the
preamble (machine, versions, commands), copied as it is. The section goes
between the BEGIN and END markers of RESULTS.md, replacing what a previous
run wrote there, or after the file's first paragraph the first time.
"""

import math
import sys
from collections import OrderedDict
from typing import NamedTuple

BEGIN = "<!-- bench/run: begin (generated, do not edit) -->"
END = "<!-- bench/run: end -->"


def read_figures(path):
    """{(part, case): {peer: {metric: value}}} in the order written."""
    figures = OrderedDict()
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            part, case, peer, metric, value = line.rstrip("\n").split("\t")
            figures.setdefault((part, case), OrderedDict()).setdefault(peer, OrderedDict())[metric] = value
    return figures


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def get(figures, part, case, peer, metric):
    return number(figures.get((part, case), {}).get(peer, {}).get(metric))


# The per-request issue's targets: (part, case metric, nodeway's peers, the
# ratio asked for). Higher ratios are better for nodeway.
THROUGHPUT_TARGETS = [
    ("l7", "req_s", ["nginx", "haproxy"], 1.1),
    ("l7-logs", "req_s", ["nginx"], 1.0),
]
L4_TARGETS = [
    ("l4", "short connections", "conn_s", "haproxy", 1.1, "L4 short connections/s vs HAProxy"),
    ("l4", "UDP DNS to NSD", "q_s", "nginx", 1.2, "UDP through L4 vs nginx"),
    ("l4", "bulk, one iperf3 stream", "gbit_s", "haproxy-splice", 1.3, "L4 bulk vs HAProxy+splice"),
    ("dns", None, "q_s", "nsd", 1.0, "DNS vs NSD"),
]


class Row(NamedTuple):
    """One target: nodeway's figure over the peer's, and whether it is drawn."""

    label: str
    ratio: float
    target: float
    peer: str
    in_chart: bool


def targets(figures):
    """The issue's targets, as far as the run measured them."""
    rows = []
    for part, metric, peers, target in THROUGHPUT_TARGETS:
        for (p, case), by_peer in figures.items():
            if p != part:
                continue
            nodeway = get(figures, p, case, "nodeway", metric)
            best_peer = max(peers, key=lambda peer: number(by_peer.get(peer, {}).get(metric)) if peer in by_peer else -1)
            peer_value = get(figures, p, case, best_peer, metric)
            logs = ", access logs on" if part == "l7-logs" else ""
            rows.append(Row(f"L7 {case}{logs}", nodeway / peer_value, target, best_peer, True))
            p99 = min(get(figures, p, case, peer, "p99_ms") for peer in peers if peer in by_peer)
            p99_ratio = p99 / get(figures, p, case, "nodeway", "p99_ms")
            rows.append(Row(f"L7 {case}{logs}: p99, the best peer's / nodeway's", p99_ratio, 1.0, "best", False))
    for part, case, metric, peer, target, label in L4_TARGETS:
        for (p, c) in figures:
            if p == part and (case is None or c == case):
                ratio = get(figures, p, c, "nodeway", metric) / get(figures, p, c, peer, metric)
                rows.append(Row(label, ratio, target, peer, True))
    return rows


def table(by_peer):
    metrics = list(OrderedDict.fromkeys(m for values in by_peer.values() for m in values))
    lines = ["| peer | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for peer, values in by_peer.items():
        lines.append(f"| {peer} | " + " | ".join(values.get(m, "") for m in metrics) + " |")
    return lines


def section(figures, meta, rows):
    out = [BEGIN, "## Latest `bench/run`", "", meta.rstrip(), "", "### Targets of the per-request issue", ""]
    out += ["| work | nodeway / peer | peer | target | |", "|---|---|---|---|---|"]
    for row in rows:
        verdict = "met" if row.ratio >= row.target else "**not met**"
        out.append(f"| {row.label} | {row.ratio:.2f}× | {row.peer} | ≥ {row.target}× | {verdict} |")
    out += ["", "![ratios](results.png)", ""]
    for (part, case), by_peer in figures.items():
        out += [f"### {part}: {case}", ""] + table(by_peer) + [""]
    out.append(END)
    return "\n".join(out) + "\n"


def splice(results, new_section):
    if BEGIN in results and END in results:
        head, rest = results.split(BEGIN, 1)
        return head + new_section + rest.split(END, 1)[1].lstrip("\n")
    # First run: after the heading and the paragraph under it.
    first_section = results.index("\n## ")
    return results[: first_section + 1] + new_section + "\n" + results[first_section + 1 :]


def main():
    figures_path, meta_path, results_path, ratios_path = sys.argv[1:]
    figures = read_figures(figures_path)
    rows = targets(figures)
    with open(meta_path) as f:
        meta = f.read()
    with open(results_path) as f:
        results = f.read()
    with open(results_path, "w") as f:
        f.write(splice(results, section(figures, meta, rows)))
    with open(ratios_path, "w") as f:
        for row in rows:
            if row.in_chart and not math.isnan(row.ratio):
                f.write(f"{row.label}\t{row.ratio:.3f}\t{row.target}\n")
    for row in rows:
        print(f"{row.label}: {row.ratio:.2f}x {row.peer} (target >= {row.target}x)")


if __name__ == "__main__":
    main()
