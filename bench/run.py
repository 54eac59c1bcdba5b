"""Run the benchmark suite: every scenario, every server, several alternating rounds.

    python -m bench.run                      # all scenarios, all servers (make bench)
    python -m bench.run --scenarios asgi-hello-c64 --servers bivio,uvicorn,granian
    python -m bench.run --scenarios h2-tls   # a group: the HTTP/2 and TLS scenarios
    python -m bench.run --smoke              # bivio only, ~1 s a scenario (CI)
    python -m bench.run --counts only        # only instructions and syscalls per request

Servers run on core 0, the load generator on core 1. In each round every
server is started fresh and measured in turn; the order alternates between
rounds so drift in the machine's state does not favour one server. The table
reports medians over rounds, and bivio's ratio to each peer is the median of
the per-round ratios, each taken from measurements seconds apart.

The scenarios marked ``counted`` (ASGI hello, WSGI hello, the Django sync view)
are also counted (bench/counts.py, ``--counts on``, the default): user-space
instructions and system calls per request, figures that do not depend on the
machine or its load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import counts as counting
from . import h2load, machine, tls, wrk
from .measure import Measurement, NotServed, measure
from .report import render
from .scenarios import BY_NAME, GROUPS, SCENARIOS, Scenario
from .servers import INTERFACE, SERVERS, Listen, Running, ServerSpec


@dataclass
class Outcome:
    """Everything measured for one (scenario, server) pair."""

    scenario: Scenario
    server: str
    rounds: list[Measurement | None] = field(default_factory=list)
    problem: str | None = None  # why it was not measured (not served, failed to start)
    skipped: bool = False  # not tried: the server cannot be set up for it (problem says why)
    counts: counting.Counts | None = None  # instructions and syscalls per request (--counts)
    count_problem: str | None = None  # why counting failed or was not possible


def participants(scenario: Scenario, names: list[str]) -> list[ServerSpec]:
    interface = INTERFACE[scenario.app]
    chosen = []
    for name in names:
        spec = SERVERS[name]
        if name == "ceiling":
            if scenario.ceiling and scenario.kind == "wrk":
                chosen.append(spec)
        elif interface in spec.interfaces and (scenario.kind != "ws" or spec.websocket):
            chosen.append(spec)
    return chosen


def session(spec: ServerSpec, scenarios: list[Scenario], outcomes: dict, args: argparse.Namespace,
            log_dir: Path, listen: Listen = Listen()) -> None:  # noqa: B008 - frozen
    """Start ``spec`` once on the scenarios' app and measure each scenario on it."""
    todo = [s for s in scenarios if outcomes[s.name, spec.name].problem is None]
    if not todo:
        return
    app = "ceiling" if spec.name == "ceiling" else todo[0].app
    suffix = ("-h2" if listen.http2 else "") + ("-tls" if listen.tls else "")
    log = log_dir / f"{spec.name}-{app}{suffix}.log"
    running = Running(spec, app, args.server_core, log, listen)
    try:
        if not running.wait_ready():
            reason = "did not start: " + (running.output().strip().splitlines() or ["?"])[-1]
            for s in todo:
                outcomes[s.name, spec.name].problem = reason
            return
        for scenario in todo:
            outcome = outcomes[scenario.name, spec.name]
            try:
                result = measure(running, scenario, args.seconds, args.warmup, args.load_core)
            except (NotServed, RuntimeError, OSError) as exc:
                outcome.problem = str(exc).strip().splitlines()[0][:200] if str(exc) else repr(exc)
                continue
            outcome.rounds.append(result)
            if args.verbose:
                rate = f"{result.rate:,.0f}/s" if result.rate is not None else "-"
                print(f"  {scenario.name:20} {spec.name:16} {rate:>12} "
                      f"cpu {result.cpu_us or 0:6.1f} us/req rss {result.rss / 2**20:6.1f} MiB "
                      f"other load {result.other_load:.0%}",
                      file=sys.stderr, flush=True)
    finally:
        running.stop()


def run(args: argparse.Namespace) -> tuple[list[Outcome], dict]:
    scenarios = [BY_NAME[n] for n in args.scenarios]
    names = [n for n in args.servers if SERVERS[n].available()]
    missing = [n for n in args.servers if n not in names]
    outcomes = {(s.name, spec.name): Outcome(s, spec.name)
                for s in scenarios for spec in participants(s, args.servers)}
    for (_, server), outcome in outcomes.items():
        if server in missing:
            outcome.problem = "not installed (run make bench-peers)"
    log_dir = Path(tempfile.mkdtemp(prefix="bivio-bench-"))
    listens = _listens(scenarios, outcomes, log_dir)
    env = {"loadavg_before": machine.loadavg(), "idle_before": _idle_sample(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.smoke:
        # One process per app (and per TLS or not), every scenario of that app in it:
        # fast, bivio only. bivio serves HTTP/1.1 and HTTP/2 on one port.
        by_app: dict[tuple[str, bool], list[Scenario]] = {}
        for s in scenarios:
            by_app.setdefault((s.app, s.tls), []).append(s)
        for group in by_app.values():
            first = listens[group[0].name]
            listen = Listen(any(s.http2 for s in group), first.tls)
            session(SERVERS["bivio"], group, outcomes, args, log_dir, listen)
    elif args.counts != "only":
        for scenario in scenarios:
            specs = [s for s in participants(scenario, names)
                     if not outcomes[scenario.name, s.name].skipped]
            line = f"{scenario.name}: {', '.join(s.name for s in specs)}"
            skipped = [f"{o.server} ({o.problem})" for (name, _), o in outcomes.items()
                       if name == scenario.name and o.skipped]
            if skipped:
                line += "; not run: " + "; ".join(skipped)
            print(line, file=sys.stderr)
            for r in range(args.rounds):
                order = specs if r % 2 == 0 else specs[::-1]
                for spec in order:
                    session(spec, [scenario], outcomes, args, log_dir, listens[scenario.name])
    if args.counts != "off":
        count_all(scenarios, outcomes, args, log_dir)
    env["loadavg_after"] = machine.loadavg()
    env["log_dir"] = str(log_dir)
    return list(outcomes.values()), env


def count_all(scenarios: list[Scenario], outcomes: dict, args: argparse.Namespace,
              log_dir: Path) -> None:
    """Count instructions and system calls per request (bench/counts.py) for the counted
    scenarios, on the servers both --servers and --count-servers name."""
    why = counting.available()
    for scenario in scenarios:
        if not scenario.counted:
            continue
        for spec in participants(scenario, args.count_servers):
            outcome = outcomes.get((scenario.name, spec.name))
            if outcome is None or (outcome.problem and not outcome.rounds):
                continue  # not asked for, not installed, or not served
            if why:
                outcome.count_problem = why
                continue
            print(f"counting {scenario.name} on {spec.name} ({args.count_requests:,} requests "
                  "under callgrind, then strace)", file=sys.stderr, flush=True)
            try:
                outcome.counts = counting.count(spec, scenario, log_dir, args.count_requests,
                                              args.count_connections)
            except (counting.CountFailed, OSError, RuntimeError,
                    subprocess.TimeoutExpired) as exc:
                outcome.count_problem = str(exc).strip().splitlines()[0][:200]


def _listens(scenarios: list[Scenario], outcomes: dict, log_dir: Path) -> dict[str, Listen]:
    """Each scenario's listener (the TLS certificate made here when one is needed); mark
    the outcomes that cannot run: a server that cannot be set up so, a missing tool."""
    files, no_cert = None, None
    if any(s.tls for s in scenarios):
        try:
            files = tls.make_cert(log_dir / "tls")
        except RuntimeError as exc:
            no_cert = str(exc)
    no_h2load = None if h2load.available() else \
        "h2load is not installed (apt-get install nghttp2-client)"
    for (name, server), outcome in outcomes.items():
        if outcome.problem:  # not installed
            continue
        scenario = BY_NAME[name]
        reason = SERVERS[server].cannot_serve(scenario.http2, scenario.tls)
        if reason is not None:
            outcome.problem, outcome.skipped = reason, True
        elif scenario.tls and no_cert:
            outcome.problem = no_cert
        elif scenario.kind == "h2load" and no_h2load:
            outcome.problem = no_h2load
    return {s.name: Listen(s.http2, files if s.tls else None) for s in scenarios}


def _idle_sample(seconds: float = 1.0) -> dict[str, float]:
    """Busy share of each core over a short quiet moment before the run."""
    before = machine.core_idle()
    time.sleep(seconds)
    after = machine.core_idle()
    return {cpu: max(0.0, 1.0 - (after[cpu] - before[cpu]) / seconds) for cpu in after}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="bivio's side-by-side benchmark suite")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                        help="comma-separated scenario names, or groups: "
                             f"{', '.join(GROUPS)}")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated servers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run")
    parser.add_argument("--server-core", default="0", help="taskset CPU list for servers")
    parser.add_argument("--load-core", default="1", help="taskset CPU list for wrk / clients")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument("--smoke", action="store_true",
                        help="bivio only, one short round per scenario, no pinning (CI)")
    parser.add_argument("--counts", choices=("on", "off", "only"), default="on",
                        help="count instructions (valgrind callgrind) and system calls "
                             "(strace) per request for the counted scenarios: beside the "
                             "timings (on), not at all (off), or instead of them (only)")
    parser.add_argument("--count-servers", default=",".join(counting.SERVERS),
                        help="servers counted (of those --servers names)")
    parser.add_argument("--count-requests", type=int, default=counting.REQUESTS,
                        help="requests per counted run")
    parser.add_argument("--count-connections", type=int, default=counting.CONNECTIONS)
    parser.add_argument("--output", help="also write the Markdown table to this file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.scenarios = list(dict.fromkeys(
        n for s in args.scenarios.split(",") if s for n in GROUPS.get(s, (s,))))
    args.servers = [s for s in args.servers.split(",") if s]
    args.count_servers = [s for s in args.count_servers.split(",") if s in args.servers]
    unknown = [s for s in args.scenarios if s not in BY_NAME] + \
              [s for s in args.servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown scenario or server: {', '.join(unknown)}")
    if args.smoke:
        args.servers, args.rounds, args.seconds, args.warmup = ["bivio"], 1, 1.0, 0.0
        args.no_pin = True
        args.counts = "off"  # minutes under valgrind: tests/test_bench_counts.py does it
    if args.no_pin:
        args.server_core = args.load_core = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = {BY_NAME[n].kind for n in args.scenarios} if args.counts != "only" else set()
    if args.counts != "off" and any(BY_NAME[n].counted for n in args.scenarios):
        h2load.ensure_installed()  # the counted runs' load
    if "h2load" in kinds:
        h2load.ensure_installed()  # without it those rows say so; the rest still runs
    if "wrk" in kinds:
        wrk.ensure_installed()
        if not wrk.available():
            print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
            return 2
    outcomes, env = run(args)
    table = render(outcomes, env, args)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    if args.smoke:
        broken = [o for o in outcomes if o.rounds and o.rounds[0] and o.rounds[0].errors]
        return 1 if broken else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
