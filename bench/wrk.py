"""Run wrk (Debian's package) pinned to the load core and read its report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int  # socket errors + non-2xx/3xx answers
    cpu: float  # CPU seconds wrk itself used
    raw: str


def available() -> bool:
    return shutil.which("wrk") is not None


def ensure_installed() -> None:
    """apt-get wrk when missing and we are root (the bench needs it; CI's smoke too)."""
    if available() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.call(["apt-get", "install", "-y", "-q", "wrk"], **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], **quiet)
        subprocess.call(["apt-get", "install", "-y", "-q", "wrk"], **quiet)


def run(url: str, connections: int, seconds: float, script: str | None = None,
        pin: str | None = None, timeout_s: int = 10) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            f"--timeout={timeout_s}s"]
    if script:
        argv += ["-s", str(LUA / script)]
    argv.append(url)
    if pin is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", pin, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stdout:
        proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out.strip()[-500:]}")
    return parse(out, usage.ru_utime + usage.ru_stime)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(out: str, cpu: float = 0.0) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        # wrk counts a server's orderly close after an HTTP/1.0 answer as a read
        # error only when bytes were lost; connect/write/timeout always count.
        errors += sum(int(v) for v in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    if not rps or not total:
        raise RuntimeError(f"unreadable wrk output: {out.strip()[-500:]}")
    return WrkResult(int(total.group(1)), float(rps.group(1)),
                     _ms(p50.group(1)) if p50 else None, _ms(p99.group(1)) if p99 else None,
                     errors, cpu, out)
