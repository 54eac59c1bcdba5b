"""The benchmark suite itself works: each scenario runs briefly against bivio.

No timing is asserted (CI machines are noisy and shared); what is checked is
that every scenario bivio supports answers correctly under wrk with no errors,
and that scenarios it does not support yet are reported as such, not crashed.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path

import pytest

# bench/ lives beside src/ and tests/, not in the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
bench_run = importlib.import_module("bench.run")
Measurement = importlib.import_module("bench.measure").Measurement

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None,
                                reason="wrk is not installed (Debian package wrk)")


def test_every_scenario_runs_against_bivio() -> None:
    args = bench_run.parse_args(["--smoke"])
    outcomes, env = bench_run.run(args)
    assert {o.scenario.name for o in outcomes} == set(args.scenarios)
    assert all(o.server == "bivio" for o in outcomes)
    measured = 0
    for outcome in outcomes:
        if not outcome.rounds:
            # Only "not yet supported" is acceptable, never a crash of the suite.
            assert outcome.problem, outcome.scenario.name
            continue
        measured += 1
        result = outcome.rounds[0]
        assert isinstance(result, Measurement)
        assert outcome.problem is None, (outcome.scenario.name, outcome.problem)
        assert result.errors == 0, outcome.scenario.name
        if outcome.scenario.kind == "idle":
            assert result.rss > 0
        else:
            assert result.requests > 0, outcome.scenario.name
    # bivio serves ASGI today: at least the ASGI HTTP scenarios must have run.
    assert measured >= 9
    table = bench_run.render(outcomes, env, args)
    assert "| **asgi-hello-c64** | bivio |" in table


def test_wrk_output_is_parsed() -> None:
    parse = importlib.import_module("bench.wrk").parse
    out = """Running 1s test @ http://127.0.0.1:1/
  1 threads and 8 connections
  Latency Distribution
     50%  120.00us
     75%  200.00us
     90%    1.50ms
     99%    2.00s
  1000 requests in 1.00s, 100.00KB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:   1000.50
"""
    result = parse(out)
    assert result.requests == 1000
    assert result.rps == 1000.5
    assert result.p50_ms == pytest.approx(0.12)
    assert result.p99_ms == 2000.0
    assert result.errors == 6


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--scenarios", "nope"])
    assert isinstance(bench_run.parse_args([]), argparse.Namespace)


def test_h2load_output_is_parsed() -> None:
    parse = importlib.import_module("bench.h2load").parse
    out = """starting benchmark...
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2

finished in 2.00s, 4000.50 req/s, 150.19KB/s
requests: 8001 total, 9001 started, 8001 done, 7990 succeeded, 11 failed, 1 errored, 2 timeout
status codes: 8200 2xx, 0 3xx, 0 4xx, 10 5xx
"""
    # start (µs since the epoch), status, duration (µs): the last response ends 1.2 s
    # into the 2 s window, so the load stalled 0.8 s before the end.
    log = [f"{1_000_000 + i * 1000}\t200\t{d}" for i, d in enumerate([1000, 2000, 3000])]
    log.append("1100000\t200\t1100000")
    result = parse(out, 0.5, log)
    assert (result.requests, result.rps, result.errors) == (8001, 4000.5, 13)
    assert result.protocol == "h2"
    assert result.tls == "TLSv1.3 TLS_AES_256_GCM_SHA384"
    assert result.p50_ms == pytest.approx(2.5)
    assert result.stalled_s == pytest.approx(0.8)
    cleartext = parse(out.replace("Application protocol: h2", "Application protocol: h2c")
                      .replace("TLS Protocol: TLSv1.3\n", ""))
    assert cleartext.protocol == "h2c" and cleartext.tls is None
    assert cleartext.p50_ms is None and cleartext.stalled_s is None


def test_http2_and_tls_listeners() -> None:
    """Who can serve HTTP/2 or TLS, with which flags; why not when not (no processes)."""
    servers = importlib.import_module("bench.servers")
    tls = importlib.import_module("bench.tls").TLSFiles("c.pem", "k.pem")
    SERVERS, Listen = servers.SERVERS, servers.Listen
    assert "HTTP/2" in SERVERS["uvicorn"].cannot_serve(http2=True, tls=False)
    assert SERVERS["uvicorn"].cannot_serve(http2=False, tls=True) is None
    assert "TLS" in SERVERS["daphne"].cannot_serve(http2=True, tls=False)
    assert SERVERS["daphne"].cannot_serve(http2=True, tls=True) is None
    assert SERVERS["bivio"].cannot_serve(http2=True, tls=True) is None
    bivio = SERVERS["bivio"].argv("m:app", 1, "asgi", Listen(http2=True, tls=tls))
    assert bivio[bivio.index("--ssl-certfile") + 1] == "c.pem"
    assert "--http" not in bivio  # --http auto (the default) serves HTTP/2 on the same port
    plain = SERVERS["bivio"].argv("m:app", 1, "asgi", Listen())
    assert "--ssl-certfile" not in plain and "--h2-max-requests" not in plain
    granian = SERVERS["granian"].argv("m:app", 1, "asgi", Listen(http2=True, tls=tls))
    assert granian[granian.index("--ssl-certificate") + 1] == "c.pem"
    assert granian[granian.index("--http") + 1] == "2" and granian[-1] == "m:app"


def test_scenario_groups() -> None:
    args = bench_run.parse_args(["--scenarios", "h2-tls,h2c-hello"])
    assert args.scenarios == ["h2c-hello", "h2c-post-1m", "h2-tls-hello", "tls-hello-c64"]
