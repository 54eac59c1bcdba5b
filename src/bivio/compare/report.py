"""The comparison's three outputs: the terminal table, ``--json`` and ``--html``.

The JSON holds every figure (for CI and for comparing two runs); its core,
``modes.<mode>.{ok, error, paths.<path>.runs[]}`` and ``verdict.{mode, command,
reasons}``, is a stable schema. The HTML page is self-contained (inline CSS and
SVG, no network) so it can be mailed or attached to a ticket, and explains
itself to someone who never ran the tool.
"""

from __future__ import annotations

import datetime
import html
import json
import os
import platform
import sys
from typing import Any

from .. import __version__
from .run import LABELS, Comparison
from .verdict import Verdict

COLORS = {"wsgi": "#2b6cb0", "asgi": "#c05621", "hybrid": "#2f855a"}


# -- terminal -------------------------------------------------------------------------------------


def table(result: Comparison) -> str:
    """Requests/s and p50/p99 per path and concurrency, one column group per mode."""
    names = list(result.modes)
    paths = result.paths or result.setup.paths
    width = max([len(p) for p in paths] + [4])
    head1 = " " * (width + 6) + "".join(f"  {LABELS[n]:<26}" for n in names)
    head2 = f"{'path':<{width}}  conc" + "".join(
        f"  {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} " for _ in names)
    lines = [head1.rstrip(), head2.rstrip()]
    limited = False
    for path in paths:
        for concurrency in result.setup.concurrency:
            row = f"{path:<{width}}  {concurrency:>4}"
            for name in names:
                mode = result.modes[name]
                run = next((r for r in mode.runs.get(path, []) if r.concurrency == concurrency),
                           None)
                if run is None:
                    cell = "failed" if not mode.ok else "-"
                    row += f"  {cell:>9} {'':>7} {'':>7} "
                    continue
                mark = "*" if run.client_limited else " "
                limited = limited or run.client_limited
                errors = f" {run.errors} err" if run.errors else ""
                row += (f"  {run.rps:>8,.0f}{mark} {run.percentile(50):>7.2f} "
                        f"{run.percentile(99):>7.2f}{errors}")
            lines.append(row.rstrip())
    cpu = f"{'CPU per request (µs)':<{width + 6}}"
    mem = f"{'RSS per worker (MiB)':<{width + 6}}"
    for name in names:
        mode = result.modes[name]
        per = mode.cpu_us_per_request()
        cpu += f"  {(f'{per:,.0f}' if per else '-'):>9} {'':>16}"
        mem += f"  {(f'{mode.rss / 2**20:,.1f}' if mode.rss else '-'):>9} {'':>16}"
    lines += [cpu.rstrip(), mem.rstrip()]
    if limited:
        lines.append("* the load generator used a whole core: the server may be faster "
                     "than this figure")
    return "\n".join(lines)


def summary(result: Comparison, verdict: Verdict | None) -> str:
    """The table, each mode's failure, left-out paths, and the verdict, for the terminal."""
    out = [table(result), ""]
    for mode in result.modes.values():
        if not mode.ok:
            out.append(f"{LABELS[mode.name]}: {mode.error}")
    for line in result.dropped:
        out.append(f"left out: {line}")
    if result.project is not None:
        out += ["", "The project:"] + [f"  {n}" for n in result.project.notes()]
    if verdict is not None:
        out += ["", f"Verdict: {LABELS.get(verdict.mode, verdict.mode)}"]
        out += [f"  - {reason}" for reason in verdict.reasons]
        out.append(f"  rule: {verdict.rule}")
        if verdict.command:
            out += ["", f"Run it:  {verdict.command}"]
    return "\n".join(out).rstrip() + "\n"


# -- JSON -----------------------------------------------------------------------------------------


def as_json(result: Comparison, verdict: Verdict | None) -> dict[str, Any]:
    setup = result.setup
    return {
        "bivio": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "settings": {"paths": result.paths, "requested_paths": setup.paths,
                     "concurrency": setup.concurrency, "duration_s": setup.duration,
                     "warmup_s": setup.warmup, "headers": [n for n, _ in setup.headers]},
        "interrupted": result.interrupted,
        "left_out": result.dropped,
        "project": result.project.as_dict() if result.project else None,
        "modes": {name: mode.as_dict() for name, mode in result.modes.items()},
        "verdict": verdict.as_dict() if verdict else {"mode": "none", "command": "",
                                                      "reasons": ["interrupted"]},
    }


def write_json(path: str, result: Comparison, verdict: Verdict | None) -> None:
    with open(path, "w") as f:
        json.dump(as_json(result, verdict), f, indent=2)
        f.write("\n")


# -- HTML -----------------------------------------------------------------------------------------


def _bar_chart(title: str, groups: list[str], series: dict[str, list[float | None]],
               unit: str) -> str:
    """Grouped horizontal bars: one group per concurrency, one bar per mode."""
    bar, gap, label_w, chart_w = 16, 10, 90, 360
    values = [v for vs in series.values() for v in vs if v is not None]
    top = max(values) if values else 1.0
    top = top or 1.0
    rows = len(series)
    height = 28 + len(groups) * (rows * bar + gap)
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" '
             f'width="{label_w + chart_w + 90}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="0" y="16" class="title">{html.escape(title)}</text>']
    y = 28
    for gi, group in enumerate(groups):
        parts.append(f'<text x="0" y="{y + rows * bar / 2 + 4}" class="label">'
                     f'{html.escape(group)}</text>')
        for name, vs in series.items():
            value = vs[gi]
            if value is None:
                parts.append(f'<text x="{label_w}" y="{y + bar - 4}" class="value">'
                             f'{LABELS[name]}: not measured</text>')
            else:
                w = max(1.0, chart_w * value / top)
                parts.append(f'<rect class="bar {name}" x="{label_w}" y="{y}" width="{w:.1f}" '
                             f'height="{bar - 2}" fill="{COLORS[name]}"><title>{LABELS[name]}: '
                             f'{value:,.2f} {unit}</title></rect>')
                parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 4}" class="value">'
                             f'{value:,.1f} {unit}</text>')
            y += bar
        y += gap
    parts.append("</svg>")
    return "".join(parts)


def _charts(result: Comparison) -> str:
    out = []
    groups = [f"c={c}" for c in result.setup.concurrency]
    for path in result.paths:
        rps: dict[str, list[float | None]] = {}
        p99: dict[str, list[float | None]] = {}
        p50: dict[str, list[float | None]] = {}
        for name, mode in result.modes.items():
            runs = {r.concurrency: r for r in mode.runs.get(path, [])}
            rps[name] = [runs[c].rps if c in runs else None for c in result.setup.concurrency]
            p50[name] = [runs[c].percentile(50) if c in runs else None
                         for c in result.setup.concurrency]
            p99[name] = [runs[c].percentile(99) if c in runs else None
                         for c in result.setup.concurrency]
        out.append(f'<section class="path"><h3><code>{html.escape(path)}</code></h3>'
                   '<div class="charts">'
                   + _bar_chart("throughput (requests/s, longer is better)", groups, rps, "req/s")
                   + _bar_chart("latency p50 (ms, shorter is better)", groups, p50, "ms")
                   + _bar_chart("latency p99 (ms, shorter is better)", groups, p99, "ms")
                   + "</div></section>")
    return "".join(out)


_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;
color:#1a202c}
h1{font-size:1.6em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #cbd5e0;padding:3px 8px;text-align:right}th{background:#edf2f7}
td:first-child,th:first-child{text-align:left}.verdict{background:#f0fff4;border:1px solid #9ae6b4;
padding:1em;border-radius:6px}.fail{color:#c53030}code{background:#edf2f7;padding:0 3px}
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart .title{font-weight:600;font-size:13px}
.chart .label,.chart .value{font-size:12px}.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
"""

_SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var drawn = 0;
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var box = svg.getBBox();
    if (box.width > 0 && box.height > 0 && svg.querySelector('rect.bar')) drawn++;
  });
  document.body.setAttribute('data-charts-drawn', String(drawn));
});
"""


def html_page(result: Comparison, verdict: Verdict | None) -> str:
    e = html.escape
    names = list(result.modes)
    rows = []
    for path in result.paths:
        for c in result.setup.concurrency:
            cells = [f"<td><code>{e(path)}</code></td><td>{c}</td>"]
            for name in names:
                mode = result.modes[name]
                run = next((r for r in mode.runs.get(path, []) if r.concurrency == c), None)
                if run is None:
                    cells.append('<td colspan="4" class="fail">'
                                 f'{"failed" if not mode.ok else "not measured"}</td>')
                else:
                    cells.append(f"<td>{run.rps:,.0f}{'*' if run.client_limited else ''}</td>"
                                 f"<td>{run.percentile(50):.2f}</td>"
                                 f"<td>{run.percentile(99):.2f}</td><td>{run.errors}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
    cost = "<tr><td colspan=2>server CPU per request (µs)</td>" + "".join(
        f"<td colspan=4>{(f'{m.cpu_us_per_request():,.0f}' if m.cpu_us_per_request() else '-')}"
        "</td>" for m in result.modes.values()) + "</tr>"
    cost += "<tr><td colspan=2>memory per worker (RSS, MiB)</td>" + "".join(
        f"<td colspan=4>{(f'{m.rss / 2**20:,.1f}' if m.rss else '-')}</td>"
        for m in result.modes.values()) + "</tr>"
    head = ("<tr><th rowspan=2>path</th><th rowspan=2>concurrency</th>"
            + "".join(f"<th colspan=4>{LABELS[n]}</th>" for n in names) + "</tr><tr>"
            + "<th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>errors</th>" * len(names)
            + "</tr>")
    failures = "".join(f'<li class="fail">{LABELS[m.name]}: {e(m.error or "")}</li>'
                       for m in result.modes.values() if not m.ok)
    dropped = "".join(f"<li>left out: {e(line)}</li>" for line in result.dropped)
    legend = "".join(f'<span><i class="swatch" style="background:{COLORS[n]}"></i>'
                     f'{LABELS[n]}</span>' for n in names)
    modes_explained = "".join(
        f"<li><b>{LABELS[n]}</b>: <code>bivio {e(' '.join(m.args))}</code></li>"
        for n, m in result.modes.items())
    project = ""
    if result.project is not None:
        project = ("<h2>What the project is made of</h2><ul>"
                   + "".join(f"<li>{e(n)}</li>" for n in result.project.notes()) + "</ul>")
    verdict_html = ""
    if verdict is not None:
        chosen = e(LABELS.get(verdict.mode, verdict.mode))
        verdict_html = (f'<div class="verdict"><h2>Verdict: {chosen}'
                        "</h2><ul>" + "".join(f"<li>{e(r)}</li>" for r in verdict.reasons)
                        + f"</ul><p>Rule applied: {e(verdict.rule)}.</p>"
                        + (f"<p>Run it: <code>{e(verdict.command)}</code></p>"
                           if verdict.command else "") + "</div>")
    interrupted = ('<p class="fail">Interrupted: these are the measurements made before '
                   "Ctrl-C.</p>" if result.interrupted else "")
    setup = result.setup
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bivio compare: WSGI, ASGI or hybrid?</title><style>{_STYLE}</style></head>
<body>
<h1>WSGI, ASGI or hybrid? Measured on this project</h1>
<p>The same application was served three ways by bivio {e(__version__)}, one after the other
on this machine ({os.cpu_count()} CPU cores, Python {e(platform.python_version())}, {when}),
each on a fresh server after a warm-up. A built-in load generator sent GET requests over
keep-alive connections for {setup.duration:.2g} s per measurement, with 1 connection and with
more at once (<i>concurrency</i>). Before measuring, every mode's answer to every path was checked
against the others: a mode that answers differently is reported as failing, not measured.</p>
<ul>{modes_explained}</ul>
{interrupted}{verdict_html}
<h2>Figures</h2>
<table>{head}{''.join(rows)}{cost}</table>
<p>req/s: requests answered per second (more is better). p50/p99: half of the requests,
and 99 in 100, were answered within this many milliseconds (less is better).
* the load generator itself used a whole CPU core, so the server may be faster than shown.</p>
<ul>{failures}{dropped}</ul>
<h2>Charts</h2><p class="legend">{legend}</p>
{_charts(result)}
{project}
<p><small>bivio compare; {e(sys.platform)}; the JSON report (--json) holds every figure.</small></p>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_html(path: str, result: Comparison, verdict: Verdict | None) -> None:
    with open(path, "w") as f:
        f.write(html_page(result, verdict))
