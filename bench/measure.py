"""Measure one scenario against one running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from . import h2load, idle, machine, probe, wrk
from .scenarios import Scenario
from .servers import ROOT, Running


class NotServed(Exception):
    """The server does not answer this scenario correctly (or at all)."""


@dataclass
class Measurement:
    rate: float | None  # requests/s or messages/s
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    rss: int  # server resident bytes (process tree) at the end
    other_load: float  # CPU of everything but server and client, in cores
    client_cpu: float | None = None  # load client CPU, in cores (WebSocket)
    requests: int = 0
    # Server CPU time per request (or message): the figure that stays meaningful
    # on a busy machine, where requests/s mostly measure the neighbours.
    cpu_us: float | None = None
    detail: str | None = None  # what was negotiated (ALPN, TLS version and suite)


def measure(server: Running, scenario: Scenario, seconds: float, warmup: float,
            load_pin: str | None) -> Measurement:
    try:
        problem = scenario.check(server.port)
    except (OSError, ValueError, IndexError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise NotServed(problem)
    pid = server.proc.pid
    if scenario.kind == "idle":
        return _idle(server, scenario)
    url = f"{'https' if scenario.tls else 'http'}://127.0.0.1:{server.port}{scenario.path}"
    detail = probe.tls_version(server.port) if scenario.tls and scenario.kind == "wrk" else None
    data = None
    if scenario.upload:
        data = h2load.body_file(scenario.upload, server.log.parent)  # the run's temp dir
    if scenario.kind == "wrk" and warmup > 0:
        wrk.run(url, scenario.connections, warmup, scenario.script, load_pin)
    if scenario.kind == "h2load" and warmup > 0:
        h2load.run(url, scenario.connections, scenario.streams, warmup, data, load_pin,
                   latencies=False)
    start_wall = time.monotonic()
    start_server = machine.tree_cpu(pid)
    start_mine = start_server + machine.own_cpu()
    window = machine.Window.start(start_mine, start_wall)
    if scenario.kind == "ws":
        result = _ws(server, scenario, seconds, load_pin)
        client_cpu = result["client_cpu"]
        extra = result["cpu"]
        rate, p50, p99, errors, count = result["rate"], None, None, result["errors"], \
            result["messages"]
    elif scenario.kind == "h2load":
        h2 = h2load.run(url, scenario.connections, scenario.streams, seconds, data, load_pin)
        _check_h2load(h2, scenario, seconds)
        client_cpu, extra = h2.cpu / max(seconds, 1e-9), h2.cpu
        rate, p50, p99, errors, count = h2.rps, h2.p50_ms, h2.p99_ms, h2.errors, h2.requests
        detail = h2.protocol if h2.tls is None else f"{h2.tls}, ALPN {h2.protocol}"
    else:
        res = wrk.run(url, scenario.connections, seconds, scenario.script, load_pin)
        client_cpu, extra = None, res.cpu
        rate, p50, p99, errors, count = res.rps, res.p50_ms, res.p99_ms, res.errors, res.requests
    end_wall = time.monotonic()
    server_cpu = machine.tree_cpu(pid)
    mine = server_cpu + machine.own_cpu() + extra
    other = window.other_load(mine, end_wall)
    if server.proc.poll() is not None:
        raise NotServed(f"the server exited during the run:\n{server.output()}")
    cpu_us = (server_cpu - start_server) / count * 1e6 if count else None
    return Measurement(rate, p50, p99, errors, machine.tree_rss(pid), other, client_cpu, count,
                       cpu_us, detail)


def _check_h2load(result: h2load.H2loadResult, scenario: Scenario, seconds: float) -> None:
    """An HTTP/2 figure is only kept if HTTP/2 was spoken the whole window."""
    want = ("h2",) if scenario.tls else ("h2c",)
    if result.protocol not in want:
        raise NotServed(f"h2load spoke {result.protocol}, not {want[0]}")
    if result.requests == 0:
        raise NotServed(f"no request completed: {result.raw.strip()[-300:]}")
    if result.stalled_s is not None and result.stalled_s > h2load.STALL_S:
        raise NotServed(f"the load stopped {result.stalled_s:.1f} s before the end of the "
                        f"{seconds:g} s window: the server closed the connections (GOAWAY?) "
                        "and h2load does not reconnect")


def _idle(server: Running, scenario: Scenario) -> Measurement:
    start_wall = time.monotonic()
    window = machine.Window.start(machine.tree_cpu(server.proc.pid) + machine.own_cpu(),
                                  start_wall)
    socks, failed = idle.hold(server.port, scenario.connections)
    try:
        rss = machine.tree_rss(server.proc.pid)
    finally:
        idle.release(socks)
    mine = machine.tree_cpu(server.proc.pid) + machine.own_cpu()
    return Measurement(None, None, None, failed, rss, window.other_load(mine, time.monotonic()))


def _ws(server: Running, scenario: Scenario, seconds: float, pin: str | None) -> dict:
    argv = [sys.executable, "-m", "bench.wsclient", "--port", str(server.port),
            "--connections", str(scenario.connections), "--seconds", str(seconds)]
    if pin is not None:
        argv = ["taskset", "-c", pin, *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stdout:
        proc.stdout.close()
    if proc.returncode != 0:
        raise NotServed(f"WebSocket load failed: {out.strip()[-500:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["cpu"] = usage.ru_utime + usage.ru_stime
    return result
