"""Run h2load (Debian's nghttp2-client) pinned to the load core and read its report.

h2load drives the HTTP/2 scenarios: cleartext prior knowledge (``http://``, h2c)
or ALPN over TLS (``https://``), several streams in flight per connection.
Latency percentiles come from its per-request ``--log-file``: its summary has
only min/max/mean.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import quantiles

# Every TLS scenario negotiates the same suite: the first of OpenSSL's default client
# list, which is what wrk (the TLS HTTP/1.1 scenario) gets. Left alone, h2load prefers
# AES-128 and the servers that honour their own order (Python's ssl) pick AES-256.
TLS13_SUITE = "TLS_AES_256_GCM_SHA384"
# No response completing in this long before the end of the window means the server
# closed the connections mid-run (h2load does not reconnect after a GOAWAY).
STALL_S = 0.5


@dataclass
class H2loadResult:
    requests: int  # responses completed in the measured window
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int  # failed (non-2xx/3xx or stream errors) + timed out
    cpu: float  # CPU seconds h2load itself used
    protocol: str  # ALPN (h2, h2c, http/1.1)
    tls: str | None  # "TLSv1.3 TLS_AES_256_GCM_SHA384", None in cleartext
    stalled_s: float | None  # seconds between the last response and the end of the window
    raw: str


def available() -> bool:
    return shutil.which("h2load") is not None


def ensure_installed() -> None:
    """apt-get nghttp2-client when h2load is missing and we are root."""
    if available() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.call(["apt-get", "install", "-y", "-q", "nghttp2-client"], **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], **quiet)
        subprocess.call(["apt-get", "install", "-y", "-q", "nghttp2-client"], **quiet)


def body_file(size: int, directory: Path) -> Path:
    """A ``size``-byte request body for ``h2load -d`` (written once per directory)."""
    path = directory / f"body-{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        path.write_bytes(b"x" * size)
    return path


def run(url: str, connections: int, streams: int, seconds: float, data: Path | None = None,
        pin: str | None = None, latencies: bool = True) -> H2loadResult:
    """``connections`` x ``streams`` in flight for ``seconds``; POST ``data`` if given."""
    with tempfile.TemporaryDirectory(prefix="bivio-h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        argv = ["h2load", "-t1", f"-c{connections}", f"-m{streams}",
                f"--duration={max(1, round(seconds * 1000))}ms"]
        if url.startswith("https:"):
            argv.append(f"--tls13-ciphers={TLS13_SUITE}")
        if data is not None:
            argv += ["-d", str(data)]
        if latencies:
            argv.append(f"--log-file={log}")
        argv.append(url)
        if pin is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", pin, *argv]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.stdout:
            proc.stdout.close()
        if proc.returncode != 0:
            raise RuntimeError(f"h2load failed ({proc.returncode}): {out.strip()[-500:]}")
        lines = log.read_text().splitlines() if latencies and log.exists() else []
    return parse(out, usage.ru_utime + usage.ru_stime, lines)


def _log_stats(lines: list[str], seconds: float | None) -> tuple[float | None, float | None,
                                                              float | None]:
    """(p50 ms, p99 ms, seconds between the last completed response and the window's end).

    The log holds the responses completed in the window: start (µs since the epoch),
    status, duration (µs)."""
    starts, ends, durations = [], [], []
    for line in lines:
        parts = line.split("\t")
        if len(parts) >= 3:
            starts.append(int(parts[0]))
            ends.append(int(parts[0]) + int(parts[2]))
            durations.append(int(parts[2]) / 1000)
    if not durations:
        return None, None, None
    if len(durations) == 1:
        p50 = p99 = durations[0]
    else:
        cuts = quantiles(durations, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    stalled = None
    if seconds is not None:
        stalled = max(0.0, seconds - (max(ends) - min(starts)) / 1e6)
    return p50, p99, stalled


def parse(out: str, cpu: float = 0.0, log_lines: list[str] | None = None) -> H2loadResult:
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not finished or not counts:
        raise RuntimeError(f"unreadable h2load output: {out.strip()[-500:]}")
    wall = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    done, failed, timeout = int(counts.group(3)), int(counts.group(5)), int(counts.group(7))
    protocol = re.search(r"^Application protocol: (\S+)", out, re.M)
    version = re.search(r"^TLS Protocol: (\S+)", out, re.M)
    cipher = re.search(r"^Cipher: (\S+)", out, re.M)
    tls = f"{version.group(1)} {cipher.group(1)}" if version and cipher else None
    p50, p99, stalled = _log_stats(log_lines or [], wall)
    return H2loadResult(done, float(finished.group(3)), p50, p99, failed + timeout, cpu,
                        protocol.group(1) if protocol else "?", tls, stalled, out)
