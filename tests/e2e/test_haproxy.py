"""docs/proxy.md's HAProxy configuration, run by a real HAProxy in front of bivio.

One source: the test takes the ```haproxy block of docs/proxy.md's "HAProxy in
front of bivio" section as written and changes only its placeholders (the
frontend's ``bind``, bivio's address, and ``send-proxy-v2`` into ``send-proxy``
for v1), puts a ``global`` section of its own in front (no daemon, no chroot or
user switch, no stats), checks it with ``haproxy -c`` and starts Debian's
HAProxy in the foreground on free ports.

A client bound to 127.0.0.2 connects through HAProxy (``mode tcp``, the PROXY
header from 127.0.0.1, which bivio trusts): the app sees 127.0.0.2 and its
port as the client (ASGI scope, WSGI ``REMOTE_ADDR``; HTTP/1.1 and HTTP/2 with
prior knowledge), HAProxy's frontend as the server, and the access log names
the client. A direct connection without a header is closed, and so is HAProxy
itself when it is not in ``--forwarded-allow-ips``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Running, fill_placeholders, free_port, read_until_close, start_bivio

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (Debian: apt-get install haproxy; "
                            "scripts/system-deps.sh installs it when run as root)")

DOC = ROOT / "docs" / "proxy.md"
TIMEOUT = 20.0
CLIENT = "127.0.0.2"
GLOBAL = """\
global
    maxconn 256

"""


def documented_block() -> str:
    section = DOC.read_text().split("\n### HAProxy in front of bivio\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```haproxy\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "docs/proxy.md's HAProxy section should have one haproxy block"
    return blocks[0]


def fill(block: str, values: dict[str, str]) -> str:
    return fill_placeholders(block, values, "docs/proxy.md's haproxy block")


@dataclass
class HAProxy:
    proc: subprocess.Popen
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_haproxy(tmp: Path, bivio_port: int, send: str) -> HAProxy:
    assert HAPROXY is not None
    port = free_port()
    config = GLOBAL + fill(documented_block(), {
        "bind :80": f"bind 127.0.0.1:{port}",
        "127.0.0.1:8000": f"127.0.0.1:{bivio_port}",
        "send-proxy-v2": send,
    })
    path = tmp / f"haproxy-{send}.cfg"
    path.write_text(config)
    check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    log = tmp / f"haproxy-{send}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=out,
                                stderr=subprocess.STDOUT)
    haproxy = HAProxy(proc, port, log)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return haproxy
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                haproxy.stop()
                raise RuntimeError("haproxy did not start:\n" + log.read_text()) from None
            time.sleep(0.05)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator:
    started: list[Running | HAProxy] = []

    def _stack(app: str, mode: str, send: str, *args: str) -> tuple[Running, HAProxy]:
        bivio = start_bivio(app, "--proxy-protocol", mode, "--timeout-request-header", "5",
                            *args)
        started.append(bivio)
        haproxy = start_haproxy(tmp_path, bivio.port, send)
        started.append(haproxy)
        return bivio, haproxy

    yield _stack
    for item in reversed(started):
        item.stop()


def through(port: int, target: str) -> tuple[bytes, int]:
    """One HTTP/1.1 request from 127.0.0.2 to HAProxy; the raw answer and our port."""
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    sock.bind((CLIENT, 0))
    sock.connect(("127.0.0.1", port))
    with sock:
        ours = sock.getsockname()[1]
        sock.sendall(f"GET {target} HTTP/1.1\r\nhost: example.com\r\n"
                     "connection: close\r\n\r\n".encode())
        data, closed = read_until_close(sock, TIMEOUT)
    assert closed
    return data, ours


def body_json(data: bytes) -> dict:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    return json.loads(body)


@pytest.mark.parametrize("mode, send", [("v1", "send-proxy"), ("v2", "send-proxy-v2"),
                                        ("auto", "send-proxy"), ("auto", "send-proxy-v2")])
def test_client_address_through_haproxy(stack, mode, send):
    bivio, haproxy = stack("tests.apps.basic:app", mode, send)
    data, ours = through(haproxy.port, "/scope")
    scope = body_json(data)
    assert scope["client"] == [CLIENT, ours]
    assert scope["server"] == ["127.0.0.1", haproxy.port]
    assert bivio.wait_for_output(f"{CLIENT}:{ours}"), bivio.output  # the access log line
    line = next(x for x in bivio.output.splitlines() if f"{CLIENT}:{ours}" in x)
    assert "GET /scope" in line and "200" in line


def test_wsgi_environ_through_haproxy(stack):
    bivio, haproxy = stack("tests.apps.wsgi_apps:app", "v2", "send-proxy-v2")
    data, ours = through(haproxy.port, "/environ")
    environ = body_json(data)
    assert environ["REMOTE_ADDR"] == CLIENT
    assert str(environ["REMOTE_PORT"]) == str(ours)
    assert str(environ["SERVER_PORT"]) == str(haproxy.port)


def test_http2_prior_knowledge_through_haproxy(stack):
    """HTTP/1.1 hands the connection to HTTP/2 with the header's addresses."""
    _, haproxy = stack("tests.apps.basic:app", "auto", "send-proxy-v2")
    transport = httpx.HTTPTransport(http1=False, http2=True, local_address=CLIENT)
    with httpx.Client(transport=transport, timeout=TIMEOUT) as client:
        response = client.get(f"http://127.0.0.1:{haproxy.port}/scope")
    assert response.http_version == "HTTP/2"
    scope = response.json()
    assert scope["client"][0] == CLIENT and scope["http_version"] == "2"
    assert scope["server"] == ["127.0.0.1", haproxy.port]


def test_direct_connection_without_header_is_closed(serve):
    bivio = serve("tests.apps.basic:app", "--proxy-protocol", "v1")
    with bivio.connect() as sock:
        sock.sendall(b"GET /scope HTTP/1.1\r\nhost: x\r\n\r\n")
        data, closed = read_until_close(sock, TIMEOUT)
    assert closed and data == b""
    assert bivio.wait_for_output("expected a v1 header"), bivio.output


def test_untrusted_haproxy_is_closed(stack):
    bivio, haproxy = stack("tests.apps.basic:app", "v2", "send-proxy-v2",
                           "--forwarded-allow-ips", "10.1.2.3")
    data, _ = through(haproxy.port, "/scope")
    assert data == b""
    assert bivio.wait_for_output("not in --forwarded-allow-ips"), bivio.output
