"""The counted figures of the bench (bench/counts.py) work: instructions and system calls.

One tiny counted run against bivio only (ASGI hello, a few hundred requests under
valgrind's callgrind and under strace); what is asserted is that both counts
come back, positive, and reach the table. No figure is compared with a target:
the values belong to docs/performance.md, not to a test. The parsers of the
tools' outputs are checked on canned text, without the tools.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest

# bench/ lives beside src/ and tests/, not in the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
bench_run = importlib.import_module("bench.run")
counts = importlib.import_module("bench.counts")

MISSING = [tool for tool in ("valgrind", "strace", "h2load") if shutil.which(tool) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed "
                    "(scripts/system-deps.sh installs valgrind, strace, nghttp2-client)")
def test_bivio_is_counted() -> None:
    args = bench_run.parse_args(["--counts", "only", "--servers", "bivio",
                                 "--scenarios", "asgi-hello-c64", "--count-requests", "300",
                                 "--count-connections", "8"])
    outcomes, env = bench_run.run(args)
    [outcome] = outcomes
    assert outcome.count_problem is None, outcome.count_problem
    assert outcome.rounds == []  # --counts only: nothing timed
    result = outcome.counts
    assert result is not None and result.requests == 300
    # A request costs the server work in user space and at least one read or write.
    assert result.instructions > 0
    assert result.syscalls > 0
    assert result.files and all(Path(f).exists() for f in result.files)
    table = bench_run.render(outcomes, env, args)
    assert "| **asgi-hello-c64** | bivio |" in table
    assert "counts only" in table


def test_counts_default_on_and_off() -> None:
    assert bench_run.parse_args([]).counts == "on"
    assert bench_run.parse_args(["--smoke"]).counts == "off"  # minutes under valgrind
    args = bench_run.parse_args(["--servers", "bivio,uvicorn", "--count-servers",
                                 "bivio,granian"])
    assert args.count_servers == ["bivio"]  # counted: only servers --servers runs


def test_callgrind_total_is_parsed() -> None:
    text = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 1539636380\n" \
           "fn=main\n16 3\ntotals: 1539638631\n"
    assert counts.callgrind_total(text) == 1539638631
    assert counts.callgrind_total("events: Ir\nsummary: 12\n") == 12
    with pytest.raises(counts.CountFailed):
        counts.callgrind_total("events: Ir\n")


def test_strace_summary_is_parsed() -> None:
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.12    0.004000           0     10310           read
 35.00    0.003000           0     10001           write
 20.00    0.002000           0      1234        56 epoll_wait
  4.88    0.000100           0        12         3 openat
------ ----------- ----------- --------- --------- ----------------
100.00    0.009100           0     21557        59 total
"""
    calls = counts.strace_calls(text)
    assert calls == {"read": 10310, "write": 10001, "epoll_wait": 1234, "openat": 12,
                     "total": 21557}
    c = counts.Counts(100, 1000.0, 2.0, {"read": 1.03, "write": 1.0, "getpid": 1.0,
                                         "epoll_wait": 0.001})
    assert c.top_syscalls() == "read 1.03, write 1.00, getpid 1.00"
