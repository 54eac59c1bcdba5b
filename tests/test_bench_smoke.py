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
