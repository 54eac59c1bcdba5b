"""Several listeners over real sockets: ``--bind`` repeated (IPv4, IPv6, a UNIX socket),
with one process and with workers, through a SIGHUP rolling restart and SIGTTOU, with
TLS and ``--proxy-protocol`` on every listener, the errors, and systemd passing two
sockets (``systemd-socket-activate -l ... -l ...``).

The command lines of docs/workers.md's "Several listeners" section are the ones run
here (with this suite's app, free ports and a temporary socket path put in).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from certs import make_certs
from conftest import ROOT, Running, env_without_bivio, fill_placeholders, free_port, wait_until

from bivio.core.config import Config
from bivio.process.errors import StartupError
from bivio.process.listeners import bind_listeners, close_listeners

DOC = ROOT / "docs" / "workers.md"
PID_APP = "tests.apps.systemd_app:app"  # answers its pid
SCOPE_APP = "tests.apps.basic:app"  # /scope answers the ASGI scope
TIMEOUT = 20.0
SERVING = re.compile(r"serving on (\S+)")
ACTIVATE = shutil.which("systemd-socket-activate")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6_loopback()
NO_IPV6 = "this machine has no IPv6 loopback: ::1 cannot be bound"
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason=NO_IPV6)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for UNIX sockets (sun_path holds 108 bytes; pytest's are long)."""
    path = Path(tempfile.mkdtemp(prefix="bivio-l-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def documented(prefix: str) -> list[list[str]]:
    """The lines starting with ``prefix`` in the ```bash blocks of the section."""
    section = DOC.read_text().split("\n## Several listeners: `--bind`\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S)
             for line in block.splitlines() if line.startswith(prefix)]
    assert lines, f"docs/workers.md has no {prefix!r} line under 'Several listeners'"
    return [shlex.split(line) for line in lines]


def urls(running: Running, count: int) -> list[str]:
    """The ``serving on URL`` of every listener (one banner line each), in order."""
    assert wait_until(lambda: len(SERVING.findall(running.output)) >= count, TIMEOUT), \
        running.output
    return SERVING.findall(running.output)[:count]


def client_for(url: str, verify: object = True) -> tuple[httpx.Client, str]:
    """A client and base URL for a listener's URL (``unix:PATH`` included)."""
    if url.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=url[5:], verify=verify)
        scheme = "https" if verify is not True else "http"
        return httpx.Client(transport=transport, timeout=TIMEOUT), f"{scheme}://localhost"
    return httpx.Client(verify=verify, timeout=TIMEOUT), url


def get(url: str, path: str = "/", verify: object = True) -> httpx.Response:
    client, base = client_for(url, verify)
    with client:
        response = client.get(base + path, headers={"connection": "close"})
    assert response.status_code == 200, response.text
    return response


def pid_of(url: str) -> int:
    return get(url).json()["pid"]


# -- the documented lines ---------------------------------------------------------------------


@needs_ipv6
def test_ipv4_and_ipv6_on_one_port(serve) -> None:
    """``--bind 0.0.0.0:P --bind [::]:P``: two sockets, one per family (the IPv6 one
    IPv6-only), each answering its own family's connections."""
    (argv,) = [a for a in documented("bivio ") if "--workers" not in a]
    port = str(free_port())
    line = fill_placeholders(shlex.join(argv[1:]), {
        "mysite.asgi:application": SCOPE_APP, "0.0.0.0:8000": f"0.0.0.0:{port}",
        "[::]:8000": f"[::]:{port}"}, "docs/workers.md")
    server = serve(*shlex.split(line))
    assert urls(server, 2) == [f"http://0.0.0.0:{port}", f"http://[::]:{port}"]
    v4 = get(f"http://127.0.0.1:{port}", "/scope").json()
    v6 = get(f"http://[::1]:{port}", "/scope").json()
    assert (v4["server"], v4["client"][0]) == (["127.0.0.1", int(port)], "127.0.0.1")
    assert (v6["server"], v6["client"][0]) == (["::1", int(port)], "::1")


@needs_ipv6
def test_workers_serve_every_listener_through_reload_and_fewer_workers(serve, sock_dir) -> None:
    """``--workers 2 -b 127.0.0.1:P1 -b [::1]:P2 -b unix:PATH``: the supervisor binds all
    three, every worker serves all three (shown with the one worker left after
    SIGTTOU), a SIGHUP rolling restart hands all three to the new workers, and
    the UNIX socket's file is gone after the shutdown."""
    (argv,) = [a for a in documented("bivio ") if "--workers" in a]
    path = sock_dir / "bivio.sock"
    line = fill_placeholders(shlex.join(argv[1:]), {
        "mysite.asgi:application": PID_APP, "127.0.0.1:8000": "127.0.0.1:0",
        "[::1]:8001": "[::1]:0", "/run/mysite/bivio.sock": str(path)}, "docs/workers.md")
    server = serve(*shlex.split(line))
    found = urls(server, 3)
    assert found[0].startswith("http://127.0.0.1:") and found[1].startswith("http://[::1]:")
    assert found[2] == f"unix:{path}"
    listening = re.search(r"Supervisor \[\d+\] listening on (.*), starting", server.output)
    assert listening is not None and listening[1].split(", ") == found
    for url in found:
        assert pid_of(url) != server.proc.pid

    started = re.compile(r"Started worker \[(\d+)\] \(reload\)")
    server.signal(signal.SIGHUP)
    assert wait_until(lambda: len(started.findall(server.output)) == 2, TIMEOUT), server.output
    assert wait_until(lambda: len(re.findall(r"Worker \[\d+\] stopped", server.output)) == 2,
                      TIMEOUT), server.output
    new = {int(pid) for pid in started.findall(server.output)}
    for url in found:  # only the new workers are left: each listener is theirs
        assert {pid_of(url) for _ in range(3)} <= new

    server.signal(signal.SIGTTOU)  # the newest drains: one worker, serving all three
    assert wait_until(lambda: len(re.findall(r"Worker \[\d+\] stopped", server.output)) == 3,
                      TIMEOUT), server.output
    gone = int(re.findall(r"Worker \[(\d+)\] stopped", server.output)[-1])
    (left,) = new - {gone}
    assert [pid_of(url) for url in found] == [left, left, left]

    assert server.stop() == 0
    assert not path.exists(), "the UNIX socket's file is removed at exit"


@needs_ipv6
@pytest.mark.parametrize("workers", [None, "2"], ids=["single", "workers"])
def test_three_listeners_answer(serve, sock_dir, workers: str | None) -> None:
    path = sock_dir / "app.sock"
    extra = ["--workers", workers] if workers else []
    server = serve(SCOPE_APP, "-b", "127.0.0.1:0", "--bind", "[::1]:0", "-b", f"unix:{path}",
                   *extra)
    found = urls(server, 3)
    scopes = [get(url, "/scope").json() for url in found]
    assert scopes[0]["server"][0] == "127.0.0.1" and scopes[1]["server"][0] == "::1"
    assert scopes[2]["server"] in ([str(path), None], None)  # a UNIX socket has no host:port
    assert server.stop() == 0
    assert not path.exists()


# -- TLS and the PROXY protocol on every listener -----------------------------------------------


@needs_ipv6
def test_tls_on_every_listener(serve, sock_dir, tmp_path) -> None:
    certs = make_certs(tmp_path / "tls")
    path = sock_dir / "tls.sock"
    server = serve(SCOPE_APP, "-b", "127.0.0.1:0", "-b", "[::1]:0", "-b", f"unix:{path}",
                   "--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key))
    found = urls(server, 3)
    assert found[0].startswith("https://127.0.0.1:") and found[1].startswith("https://[::1]:")
    context = certs.client_context()
    for url in found:
        assert get(url, "/scope", verify=context).json()["scheme"] == "https"
    # and no listener speaks cleartext
    with pytest.raises(httpx.HTTPError):
        httpx.get(found[1].replace("https://", "http://"), timeout=TIMEOUT)


@needs_ipv6
def test_proxy_protocol_on_every_listener(serve) -> None:
    server = serve(SCOPE_APP, "-b", "127.0.0.1:0", "-b", "[::1]:0", "--proxy-protocol", "v1",
                   "--forwarded-allow-ips", "127.0.0.1,::1")
    for url in urls(server, 2):
        host, port = url[len("http://"):].rsplit(":", 1)
        with socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n"
                         b"GET /scope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert b'"client": ["203.0.113.7", 5555]' in data, data


# -- errors ---------------------------------------------------------------------------------


def run_bivio(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = env_without_bivio()
    full_env.update(PYTHONUNBUFFERED="1", COLUMNS="200", **(env or {}))
    return subprocess.run([sys.executable, "-m", "bivio", *args], cwd=str(ROOT), env=full_env,
                          capture_output=True, text=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "serving on" not in result.stderr
    return errors[0]


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["-b", "127.0.0.1:8001", "-b", "127.0.0.1:8001"], {},
     "bivio: error: --bind: '127.0.0.1:8001' given twice"),
    (["-b", "[::]:8001", "--bind", "[0::0]:8001"], {},
     "bivio: error: --bind: '[::]:8001' and '[0::0]:8001' are the same address"),
    (["-b", "unix:/tmp/bivio-x.sock", "-b", "unix:///tmp/bivio-x.sock"], {},
     "are the same address"),
    ([], {"BIVIO_BIND": "127.0.0.1:8001;127.0.0.1:8001"}, "given twice"),
    (["-b", "127.0.0.1:8001", "-b", "[::1]:8001", "--port", "8002"], {},
     "bivio: error: --bind and --port: choose one (--bind lists every address"),
    (["-b", "::1:8001"], {}, "--bind: an IPv6 address goes in brackets: [::1]:8001"),
    (["-b", "[example]:80"], {}, "--bind: [example] is not an IPv6 address"),
    (["-b", "127.0.0.1:1", "-b", "unix:"], {}, "--bind: expected unix:PATH"),
    (["-b", "fd://x"], {}, "--bind fd://: expected an integer, got 'x'"),
    (["-b", "127.0.0.1:70000"], {}, "--bind port: must be at most 65535"),
])
def test_bad_binds_are_one_line_and_exit_2(args: list[str], env: dict[str, str],
                                           expected: str) -> None:
    line = one_error_line(run_bivio(SCOPE_APP, *args, env=env), 2)
    assert expected in line, line


@pytest.mark.parametrize("workers", [None, "2"], ids=["single", "workers"])
def test_a_later_address_failing_leaves_nothing_bound(sock_dir, workers: str | None) -> None:
    """The UNIX socket bound first is removed again; one line names the address that
    failed; no worker starts; exit 1."""
    path = sock_dir / "first.sock"
    extra = ["--workers", workers] if workers else []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_bivio(SCOPE_APP, "-b", f"unix:{path}", "-b", f"127.0.0.1:{port}", *extra)
    line = one_error_line(result, 1)
    assert f"could not bind 127.0.0.1:{port}: " in line and "in use" in line.lower(), line
    assert "Started worker" not in result.stderr + result.stdout
    assert not path.exists()


def test_bind_listeners_is_all_or_none(sock_dir) -> None:
    """In process: the sockets bound before the failing address are closed (the port
    can be bound again, without SO_REUSEADDR) and the socket file is removed."""
    first = free_port()
    path = sock_dir / "x.sock"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Config.from_options({"bind": [f"127.0.0.1:{first}", f"unix:{path}",
                                               f"127.0.0.1:{port}"]}, env={})
        with pytest.raises(StartupError, match=f"could not bind 127.0.0.1:{port}: "):
            bind_listeners(config)
    assert not path.exists()
    with socket.socket() as again:
        again.bind(("127.0.0.1", first))  # EADDRINUSE if bivio's socket were still open


@needs_ipv6
def test_ipv6_is_ipv6_only_when_ipv4_is_listed_too() -> None:
    port = free_port()
    config = Config.from_options({"bind": [f"127.0.0.1:{port}", f"[::]:{port}"]}, env={})
    socks = bind_listeners(config)
    try:
        assert socks[1].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        close_listeners(socks, config.addresses)
    alone = Config.from_options({"bind": ["[::]:0", "unix:/tmp/bivio-v6only-test.sock"]},
                                env={})
    socks = bind_listeners(alone)
    try:  # the system's default (net.ipv6.bindv6only), as --host :: always had
        default = int(Path("/proc/sys/net/ipv6/bindv6only").read_text())
        assert socks[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == default
    finally:
        close_listeners(socks, alone.addresses)
    assert not Path("/tmp/bivio-v6only-test.sock").exists()


# -- systemd passes two sockets ---------------------------------------------------------------


def start_activated(argv: list[str]) -> Running:
    """``systemd-socket-activate -l ... -l ... bivio ...`` as written; it execs bivio at
    the first connection (which waits in the socket's backlog meanwhile)."""
    proc = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    running = Running(proc, argv)
    listens = sum(1 for a in argv if a == "-l")
    assert wait_until(lambda: running.output.count("Listening on ") >= listens, TIMEOUT), \
        running.output
    return running


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed "
                    "(Debian: apt-get install systemd)")
@needs_ipv6
@pytest.mark.parametrize("workers", [None, "2"], ids=["single", "workers"])
def test_systemd_passes_two_sockets(workers: str | None) -> None:
    (argv,) = documented("systemd-socket-activate ")
    p1, p2 = free_port(), free_port()
    bivio = f"{shlex.quote(sys.executable)} -m bivio"
    line = fill_placeholders(shlex.join(argv), {
        "127.0.0.1:8000": f"127.0.0.1:{p1}", "'[::1]:8000'": f"'[::1]:{p2}'",
        " bivio ": f" {bivio} ", "mysite.asgi:application": PID_APP}, "docs/workers.md")
    argv = shlex.split(line) + (["--workers", workers] if workers else [])
    assert ACTIVATE is not None
    argv[0] = ACTIVATE
    server = start_activated(argv)
    try:
        first = pid_of(f"http://127.0.0.1:{p1}")  # the first connection starts bivio
        second = pid_of(f"http://[::1]:{p2}")
        if workers is None:  # systemd-socket-activate execs bivio: the same process
            assert first == second == server.proc.pid
        else:
            assert server.proc.pid not in (first, second)
        assert "systemd socket activation: serving fds 3, 4" in server.output
        assert urls(server, 2) == [f"http://127.0.0.1:{p1}", f"http://[::1]:{p2}"]
    finally:
        assert server.stop() == 0
