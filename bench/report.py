"""Turn the measurements into the Markdown table (medians, ratios, load note)."""

from __future__ import annotations

import argparse
import os
import platform
from statistics import median
from typing import Any

NOISY = 0.10  # other load above a tenth of a core: say the figures are disturbed
CLIENT_SATURATED = 0.85  # load client CPU (cores): the client, not the server, may be the limit


def _med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return median(present) if present else None


def _ratio(mine: list, theirs: list, attr: str) -> float | None:
    """Median of the per-round ratios (bivio ÷ peer), each from the same round."""
    ratios = []
    for a, b in zip(mine, theirs, strict=False):
        if a is None or b is None:
            continue
        x, y = getattr(a, attr), getattr(b, attr)
        if x and y:
            ratios.append(x / y)
    return median(ratios) if ratios else None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else format(value, spec) + suffix


def render(outcomes: list, env: dict[str, Any], args: argparse.Namespace) -> str:
    """The timing table (unless ``--counts only``), then the counted table (if any)."""
    counted = render_counts(outcomes, args)
    if getattr(args, "counts", "off") == "only":
        return "\n".join([f"## bivio benchmark ({env['started']}, counts only)", "",
                          counted or "Nothing counted (no counted scenario selected)."])
    table = _render_timings(outcomes, env, args)
    return table + ("\n\n" + counted if counted else "")


def _count_cells(o: Any) -> str:
    """The instructions and syscalls cells of the timing table ('' when not counted)."""
    c = getattr(o, "counts", None)
    if c is None:
        return " | "
    return f"{c.instructions / 1000:,.1f} | {c.syscalls:.2f}"


def _render_timings(outcomes: list, env: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"## bivio benchmark ({env['started']}{', smoke' if args.smoke else ''})",
        "",
        f"`python -m bench.run {' '.join(_cli(args))}` · {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
        f"servers on core {args.server_core or 'any'}, load on core {args.load_core or 'any'}; "
        f"{args.rounds} round(s) × {args.seconds:g} s (+{args.warmup:g} s warm-up), medians.",
        "",
        "| scenario | server | req/s | p50 ms | p99 ms | errors | RSS MiB | CPU µs/req "
        "| k instr/req | syscalls/req | bivio ÷ server | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    others: list[float] = []
    by_scenario: dict[str, list] = {}
    for o in outcomes:
        by_scenario.setdefault(o.scenario.name, []).append(o)
    for name, group in by_scenario.items():
        bivio = next((o for o in group if o.server == "bivio"), None)
        scenario = group[0].scenario
        first = True
        for o in group:
            label = f"**{name}**" if first else ""
            first = False
            if o.problem and not o.rounds:
                if o.skipped:
                    note = f"not run: {o.problem}"
                else:
                    note = ("bivio: not yet supported" if o.server == "bivio" else "failed") + \
                        f" ({o.problem})"
                lines.append(f"| {label} | {o.server} | — | — | — | — | — | — | "
                             f"{_count_cells(o)} | — | {note} |")
                continue
            rounds = [m for m in o.rounds if m is not None]
            others += [m.other_load for m in rounds]
            rate = _med([m.rate for m in rounds])
            rss = _med([m.rss / 2**20 for m in rounds])
            note = []
            ratio = None
            if bivio is not None and o is not bivio and bivio.rounds:
                attr = "rss" if scenario.kind == "idle" else "rate"
                ratio = _ratio(bivio.rounds, o.rounds, attr)
                if o.server == "ceiling" and ratio is not None:
                    note.append(f"bivio = {ratio:.0%} of the ceiling")
                cpu_ratio = _ratio(o.rounds, bivio.rounds, "cpu_us")
                if cpu_ratio is not None and scenario.kind != "idle":
                    note.append(f"CPU per request: {cpu_ratio:.2f}× bivio's")
            if scenario.kind == "ws":
                cpu = _med([m.client_cpu for m in rounds])
                note.append(f"msg/s; load client CPU {_fmt(cpu, '.0%')} of a core")
            if scenario.kind == "h2load":
                cpu = _med([m.client_cpu for m in rounds])
                note.append(f"h2load CPU {_fmt(cpu, '.0%')} of a core")
                if cpu is not None and cpu >= CLIENT_SATURATED:
                    note.append("**the load client was near saturation: this rate is a floor**")
            details = list(dict.fromkeys(m.detail for m in rounds if m.detail))
            if details:
                note.append(" / ".join(details))
            if scenario.kind == "idle":
                note.append(f"RSS with {scenario.connections} idle connections; ratio: lower is "
                            "leaner")
            if o.problem:
                note.append(f"some rounds failed: {o.problem}")
            errors = sum(m.errors for m in rounds)
            lines.append(
                f"| {label} | {o.server} | {_fmt(rate, ',.0f')} | "
                f"{_fmt(_med([m.p50_ms for m in rounds]), '.2f')} | "
                f"{_fmt(_med([m.p99_ms for m in rounds]), '.2f')} | {errors} | "
                f"{_fmt(rss, '.1f')} | {_fmt(_med([m.cpu_us for m in rounds]), '.1f')} | "
                f"{_count_cells(o)} | {_fmt(ratio, '.2f', '×')} | {'; '.join(note)} |")
    lines += ["", _load_note(env, others)]
    return "\n".join(lines)


def render_counts(outcomes: list, args: argparse.Namespace) -> str:
    """The counted table: instructions and system calls per request (bench/counts.py),
    with bivio's ratio to each server on both; '' when nothing was counted."""
    rows = [o for o in outcomes if getattr(o, "counts", None) or getattr(o, "count_problem", None)]
    if not rows:
        return ""
    first = next((o.counts for o in rows if o.counts), None)
    requests = first.requests if first else getattr(args, "count_requests", 0)
    lines = [
        f"Counted (machine-independent): {requests:,} HTTP/1.1 keep-alive requests "
        f"(`h2load --h1 -n {requests} -c {getattr(args, 'count_connections', 64)}`) per "
        "run, minus a run without them; user-space instructions from `valgrind "
        "--tool=callgrind --trace-children=yes` (every process of the server), system "
        "calls from `strace -f -c`.",
        "",
        "| scenario | server | k instr/req | syscalls/req | bivio ÷ server, instr "
        "| bivio ÷ server, syscalls | most frequent calls per request |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    seen: set[str] = set()
    for o in rows:
        name = o.scenario.name
        label = "" if name in seen else f"**{name}**"
        seen.add(name)
        c = o.counts
        if c is None:
            lines.append(f"| {label} | {o.server} | — | — | — | — | not counted: "
                         f"{o.count_problem} |")
            continue
        bivio = next((b.counts for b in rows if b.scenario.name == name
                      and b.server == "bivio" and b.counts), None)
        if bivio is not None and o.server != "bivio":
            ri = _fmt(bivio.instructions / c.instructions if c.instructions > 0 else None,
                      ".2f", "×")
            rs = _fmt(bivio.syscalls / c.syscalls if c.syscalls > 0 else None, ".2f", "×")
        else:
            ri = rs = "—"
        lines.append(f"| {label} | {o.server} | {c.instructions / 1000:,.1f} | "
                     f"{c.syscalls:.2f} | {ri} | {rs} | {c.top_syscalls()} |")
    return "\n".join(lines)


def _load_note(env: dict[str, Any], others: list[float]) -> str:
    idle = ", ".join(f"{cpu} {busy:.0%}" for cpu, busy in sorted(env["idle_before"].items()))
    worst = max(others) if others else 0.0
    typical = median(others) if others else 0.0
    verdict = ("**the machine was busy with other work: treat these figures as noisy**"
               if worst > NOISY else "the machine was otherwise quiet")
    return (f"Load: loadavg {env['loadavg_before']} before, {env['loadavg_after']} after; "
            f"cores busy before the run: {idle}; CPU used by other processes during the "
            f"measurements: median {typical:.0%}, max {worst:.0%} of a core — {verdict}. "
            f"Server logs: {env['log_dir']}.")


def _cli(args: argparse.Namespace) -> list[str]:
    if args.smoke:
        return ["--smoke"]
    out = [f"--rounds {args.rounds}", f"--seconds {args.seconds:g}"]
    return out
