"""TLS end to end (docs/tls.md): real bivio processes serving HTTPS, and real clients.

curl, httpx, the websockets client and raw :mod:`ssl` sockets talk to bivio
over a private CA made by tests/certs.py. What the app was given comes back
from tests/apps/tls.py. Every command in docs/tls.md is run here as written
(:func:`test_the_commands_in_the_docs`). Waits are generous upper bounds
against hangs, never assertions about speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import httpx
import pytest
from certs import PASSWORD, Certs, make_certs, reissue, serial_of
from conftest import (
    ROOT,
    env_without_bivio,
    read_one_response,
    read_until_close,
    start_bivio,
    wait_until,
)
from websockets.asyncio.client import connect

APP = "tests.apps.tls:app"
TIMEOUT = 10.0
LONG = 30.0  # only against hangs
LOOPS = ["uvloop", "asyncio"]
# IANA numbers of the suites these tests negotiate (RFC 8446 B.4, RFC 5289, RFC 7905).
IANA = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302,
        "TLS_CHACHA20_POLY1305_SHA256": 0x1303, "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
        "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C, "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9}
VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


def tls_args(certs: Certs, *extra: str) -> tuple[str, ...]:
    return ("--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key), *extra)


def base(server) -> str:
    return f"https://127.0.0.1:{server.port}"


def tls_connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        return ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    except BaseException:
        sock.close()
        raise


def request(tls: ssl.SSLSocket, path: str, close: bool = True) -> tuple[int, dict, bytes]:
    tls.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n{'connection: close' if close else ''}"
                f"\r\n\r\n".encode())
    return read_one_response(tls)


def scope_over(port: int, ctx: ssl.SSLContext) -> tuple[dict, str, str]:
    """GET /scope on a new connection: what the app saw; the client's version and cipher."""
    with tls_connect(port, ctx) as tls:
        status, _, body = request(tls, "/scope")
        assert status == 200
        return json.loads(body), tls.version() or "", tls.cipher()[0]


def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """The server refuses this client in the handshake (TLS 1.3: seen on the first read)."""
    try:
        with tls_connect(port, ctx) as tls:
            tls.sendall(b"GET /scope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            data, closed = read_until_close(tls)
    except (ssl.SSLError, ConnectionError):
        return True
    return closed and data == b""


def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    with tls_connect(port, ctx) as tls:
        return serial_of(tls.getpeercert(binary_form=True))



def ready_pids(server) -> list[int]:
    return [int(p) for p in re.findall(r"Worker \[(\d+)\] ready", server.output)]


# -- serving HTTPS ----------------------------------------------------------------------


def test_curl_with_the_ca(serve, certs: Certs) -> None:
    server = serve(APP, *tls_args(certs))
    assert server.url == base(server)  # "serving on https://..."
    done = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", str(certs.ca),
                           f"https://localhost:{server.port}/scope"],
                          capture_output=True, text=True, timeout=LONG)
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert (view["scheme"], view["http_version"], view["has_tls"]) == ("https", "1.1", True)
    # Without the CA, curl does not trust the certificate: it is the one from the files.
    done = subprocess.run(["curl", "-sS", f"https://localhost:{server.port}/scope"],
                          capture_output=True, text=True, timeout=LONG)
    assert done.returncode == 60, done.stderr  # CURLE_PEER_FAILED_VERIFICATION


@pytest.mark.parametrize("loop", LOOPS)
def test_the_asgi_tls_extension(serve, certs: Certs, loop: str) -> None:
    server = serve(APP, *tls_args(certs, "--loop", loop))
    with httpx.Client(verify=certs.client_context(), timeout=TIMEOUT) as client:
        view = client.get(base(server) + "/scope").json()
    assert view["scheme"] == "https"
    tls = view["tls"]
    assert set(tls) == {"server_cert", "client_cert_chain", "client_cert_name",
                        "client_cert_error", "tls_version", "cipher_suite"}
    assert tls["server_cert"] == certs.cert.read_text()
    assert (tls["client_cert_chain"], tls["client_cert_name"], tls["client_cert_error"]) == \
        ([], None, None)
    # The version and suite are the ones the client negotiated, as IANA numbers.
    view, version, cipher = scope_over(server.port, certs.client_context())
    assert view["tls"]["tls_version"] == VERSIONS[version] == 0x0304
    assert view["tls"]["cipher_suite"] == IANA[cipher]
    tls12 = certs.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    tls12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    view, _, _ = scope_over(server.port, tls12)
    assert (view["tls"]["tls_version"], view["tls"]["cipher_suite"]) == (0x0303, 0xC02B)


def test_cleartext_has_no_tls_extension_and_no_https(serve) -> None:
    for app, expected in ((APP, {"scheme": "http", "has_tls": False}),
                          ("tests.apps.tls:wsgi_app", {"url_scheme": "http", "HTTPS": None})):
        server = serve(app)
        view = httpx.get(server.url + "/scope", timeout=TIMEOUT).json()
        assert {k: view[k] for k in expected} == expected


def test_wsgi_environ(serve, certs: Certs) -> None:
    server = serve("tests.apps.tls:wsgi_app", *tls_args(certs))
    response = httpx.get(base(server) + "/", verify=certs.client_context(), timeout=TIMEOUT)
    assert response.json() == {"url_scheme": "https", "HTTPS": "on"}


def test_wss(serve, certs: Certs) -> None:
    server = serve(APP, *tls_args(certs))

    async def talk() -> dict:
        async with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=certs.client_context(),
                           open_timeout=TIMEOUT) as ws:
            return json.loads(await ws.recv())

    view = asyncio.run(asyncio.wait_for(talk(), LONG))
    assert (view["type"], view["scheme"]) == ("websocket", "wss")
    assert view["tls"]["tls_version"] == 0x0304
    assert view["tls"]["server_cert"] == certs.cert.read_text()


def test_a_file_sent_with_pathsend_over_tls_http1(serve, certs: Certs) -> None:
    server = serve(APP, *tls_args(certs))
    with tls_connect(server.port, certs.client_context()) as tls:
        status, _, body = request(tls, "/file")
    assert status == 200
    assert body == (ROOT / "tests" / "apps" / "tls.py").read_bytes()


# -- client certificates ----------------------------------------------------------------


def test_optional_client_certificates(serve, certs: Certs, tmp_path: Path) -> None:
    server = serve(APP, *tls_args(certs, "--ssl-ca-certs", str(certs.ca),
                                  "--ssl-cert-reqs", "optional"))
    view, _, _ = scope_over(server.port, certs.client_context(client_cert=True))
    assert view["tls"]["client_cert_chain"] == [certs.client_cert.read_text()]
    assert view["tls"]["client_cert_name"] == "CN=client one,O=bivio tests"
    assert view["tls"]["client_cert_error"] is None
    view, _, _ = scope_over(server.port, certs.client_context())
    assert (view["tls"]["client_cert_chain"], view["tls"]["client_cert_name"]) == ([], None)
    # A certificate from another CA is not "no certificate": it is refused.
    stranger = make_certs(tmp_path / "other-ca")
    ctx = certs.client_context()
    ctx.load_cert_chain(str(stranger.client_cert), str(stranger.client_key))
    assert refused(server.port, ctx)
    view, _, _ = scope_over(server.port, certs.client_context(client_cert=True))
    assert view["tls"]["client_cert_name"] == "CN=client one,O=bivio tests"


def test_required_client_certificate_refuses_clients_without_one(serve, certs: Certs) -> None:
    server = serve(APP, *tls_args(certs, "--ssl-ca-certs", str(certs.ca),
                                  "--ssl-cert-reqs", "required"))
    with tls_connect(server.port, certs.client_context(client_cert=True)) as kept:
        status, _, body = request(kept, "/scope", close=False)
        assert status == 200
        assert json.loads(body)["tls"]["client_cert_chain"] == [certs.client_cert.read_text()]
        assert refused(server.port, certs.client_context())
        with pytest.raises(httpx.HTTPError):
            httpx.get(base(server) + "/scope", verify=certs.client_context(), timeout=TIMEOUT)
        # The connection already in progress, and new ones with a certificate, are served.
        status, _, _ = request(kept, "/scope")
        assert status == 200
    with httpx.Client(verify=certs.client_context(client_cert=True), timeout=TIMEOUT) as client:
        assert client.get(base(server) + "/scope").status_code == 200
    assert server.proc.poll() is None
    assert "Traceback" not in server.output


# -- versions, ALPN, handshake timeout -------------------------------------------------


def test_a_tls_1_1_client_is_refused(serve, certs: Certs) -> None:
    server = serve(APP, *tls_args(certs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = certs.client_context()
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 forbids 1.1 above level 0
        except (ValueError, ssl.SSLError) as exc:
            pytest.skip(f"this OpenSSL cannot even configure a TLS 1.1 client: {exc}")
    try:
        with tls_connect(server.port, ctx) as tls:
            version = tls.version()
    except ssl.SSLError as exc:
        if exc.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE",
                          "UNSUPPORTED_PROTOCOL"):
            pytest.skip(f"this OpenSSL does not let a client offer TLS 1.1 ({exc.reason})")
        version = None  # the server ended the handshake
    except ConnectionError:
        version = None
    assert version is None
    view, _, _ = scope_over(server.port, certs.client_context(
        maximum_version=ssl.TLSVersion.TLSv1_2))  # the floor is 1.2, and 1.2 is served
    assert view["tls"]["tls_version"] == 0x0303


def test_min_version_1_3_refuses_a_tls_1_2_client(serve, certs: Certs) -> None:
    server = serve(APP, *tls_args(certs, "--ssl-min-version", "1.3"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(server.port, certs.client_context(
            maximum_version=ssl.TLSVersion.TLSv1_2)).close()
    view, version, _ = scope_over(server.port, certs.client_context())
    assert (version, view["tls"]["tls_version"]) == ("TLSv1.3", 0x0304)


@pytest.mark.parametrize(("flags", "selected"), [((), "h2"), (("--http", "h1"), "http/1.1")])
def test_alpn_selection(serve, certs: Certs, flags: tuple[str, ...], selected: str) -> None:
    server = serve(APP, *tls_args(certs, *flags))
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(server.port, ctx) as tls:
        assert tls.selected_alpn_protocol() == selected


@pytest.mark.parametrize("loop", LOOPS)
def test_handshake_timeout(serve, certs: Certs, loop: str) -> None:
    server = serve(APP, *tls_args(certs, "--timeout-tls-handshake", "0.5", "--loop", loop))
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as silent:
        # Meanwhile other clients are served...
        response = httpx.get(base(server) + "/scope", verify=certs.client_context(),
                             timeout=TIMEOUT)
        assert response.status_code == 200
        # ...and the silent one is closed, well before the default 10 s would have.
        data, closed = read_until_close(silent, timeout=8.0)
    assert (data, closed) == (b"", True)
    assert "Traceback" not in server.output


# -- start-up failures ----------------------------------------------------------------------

STARTUP_FAILURES = {
    "missing-certfile": (["--ssl-certfile", "{d}/missing.pem", "--ssl-keyfile", "{d}/key.pem"],
                         "--ssl-certfile {d}/missing.pem: No such file or directory"),
    "wrong-password": (["--ssl-certfile", "{d}/cert.pem", "--ssl-keyfile",
                        "{d}/key-encrypted.pem", "--ssl-keyfile-password", "wrong"],
                       "--ssl-keyfile {d}/key-encrypted.pem: could not decrypt the key: "
                       "wrong --ssl-keyfile-password"),
    "no-password": (["--ssl-certfile", "{d}/cert.pem", "--ssl-keyfile", "{d}/key-encrypted.pem"],
                    "--ssl-keyfile {d}/key-encrypted.pem: the key is encrypted: give its "
                    "password with --ssl-keyfile-password (or BIVIO_SSL_KEYFILE_PASSWORD)"),
    "key-mismatch": (["--ssl-certfile", "{d}/cert.pem", "--ssl-keyfile", "{d}/other-key.pem"],
                     "--ssl-keyfile {d}/other-key.pem: the key does not match the certificate "
                     "in --ssl-certfile {d}/cert.pem"),
}


def run_bivio(*args: str, timeout: float = LONG) -> subprocess.CompletedProcess[str]:
    env = env_without_bivio()
    return subprocess.run([sys.executable, "-m", "bivio", *args, "--port", "0"], cwd=ROOT,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["single", "workers"])
@pytest.mark.parametrize("case", sorted(STARTUP_FAILURES))
def test_startup_failure_is_exit_1_and_one_line(certs: Certs, case: str,
                                                workers: tuple[str, ...]) -> None:
    args, expected = STARTUP_FAILURES[case]
    d = str(certs.directory)
    done = run_bivio(APP, *(a.format(d=d) for a in args), *workers)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "ERROR" in lines[0] and lines[0].endswith(expected.format(d=d))


def test_the_password_never_reaches_a_worker_command_line(serve, certs: Certs) -> None:
    server = serve(APP, "--workers", "1", "--ssl-certfile", str(certs.cert),
                   "--ssl-keyfile", str(certs.key_encrypted),
                   env={"BIVIO_SSL_KEYFILE_PASSWORD": PASSWORD})
    assert wait_until(lambda: len(ready_pids(server)) == 1), server.output
    (worker,) = ready_pids(server)
    # The worker decrypted the key (it serves), yet the password is not in its argv.
    assert served_serial(server.port, certs.client_context()) == \
        serial_of(certs.cert.read_bytes())
    cmdline = Path(f"/proc/{worker}/cmdline").read_bytes()
    assert b"bivio: worker 1 [" in cmdline  # its short title is there...
    assert PASSWORD.encode() not in cmdline  # ...but not the password


# -- certificate renewal: SIGHUP with --workers ---------------------------------------------


class Load:
    """Threads sending HTTPS requests on fresh connections until stopped; keeps every result."""

    def __init__(self, url: str, ctx: ssl.SSLContext, threads: int = 3) -> None:
        self.url = url
        self.ctx = ctx
        self.results: list[str] = []  # "" for a success, else the error
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx.get(self.url, verify=self.ctx, timeout=TIMEOUT,
                                     headers={"connection": "close"})
                self.results.append("" if response.status_code == 200
                                    else f"status {response.status_code}")
            except httpx.HTTPError as exc:
                self.results.append(repr(exc))

    def wait_for(self, count: int) -> None:
        start = len(self.results)
        assert wait_until(lambda: len(self.results) >= start + count), self.failures()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(LONG)

    def failures(self) -> list[str]:
        return [r for r in self.results if r]


def live_files(certs: Certs, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(certs.cert, cert)
    shutil.copy(certs.key, key)
    return cert, key


def renew(certs: Certs, cert: Path, key: Path) -> int:
    """Replace ``cert`` and ``key`` with a new certificate (each file atomically); its serial."""
    new_cert, new_key = cert.with_suffix(".new.pem"), key.with_suffix(".new.pem")
    serial = reissue(certs, new_cert, new_key).serial_number
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    return serial


@pytest.mark.parametrize("loop", LOOPS)
def test_sighup_serves_renewed_certificates_without_failing_a_request(
        serve, certs: Certs, tmp_path: Path, loop: str) -> None:
    cert, key = live_files(certs, tmp_path)
    server = serve(APP, "--workers", "2", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                   "--loop", loop)
    assert wait_until(lambda: len(ready_pids(server)) == 2), server.output
    old_pids = ready_pids(server)
    ctx = certs.client_context()
    old = serial_of(certs.cert.read_bytes())
    assert served_serial(server.port, ctx) == old
    load = Load(base(server) + "/pid", ctx)
    try:
        load.wait_for(20)
        new = renew(certs, cert, key)
        assert served_serial(server.port, ctx) == old  # files alone change nothing
        server.signal(signal.SIGHUP)
        assert wait_until(lambda: served_serial(server.port, ctx) == new), server.output
        for pid in old_pids:
            assert wait_until(lambda pid=pid: f"Worker [{pid}] stopped" in server.output), \
                server.output
        load.wait_for(20)
    finally:
        load.stop()
    assert load.failures() == [], server.output
    assert served_serial(server.port, ctx) == new
    view, _, _ = scope_over(server.port, ctx)
    assert view["tls"]["server_cert"] == cert.read_text()  # the scope follows the new files


def test_sighup_with_broken_files_keeps_the_old_workers(serve, certs: Certs,
                                                        tmp_path: Path) -> None:
    cert, key = live_files(certs, tmp_path)
    server = serve(APP, "--workers", "2", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    assert wait_until(lambda: len(ready_pids(server)) == 2), server.output
    ctx = certs.client_context()
    old = serial_of(certs.cert.read_bytes())
    shutil.copy(certs.other_key, key)  # a key that does not match the certificate
    server.signal(signal.SIGHUP)
    assert wait_until(lambda: "Reload aborted" in server.output), server.output
    assert (f"Reload aborted: --ssl-keyfile {key}: the key does not match the certificate "
            f"in --ssl-certfile {cert}. The running workers keep serving." in server.output)
    assert "(reload)" not in server.output  # no worker was started for it
    assert served_serial(server.port, ctx) == old
    # Fixed files: the next SIGHUP goes through.
    new = renew(certs, cert, key)
    server.signal(signal.SIGHUP)
    assert wait_until(lambda: served_serial(server.port, ctx) == new), server.output
    assert server.stop() == 0


def test_reload_with_broken_files_keeps_the_old_worker(serve, certs: Certs,
                                                       tmp_path: Path) -> None:
    """--reload (development) watching the certificate files: the same check as SIGHUP."""
    (tmp_path / "devtls.py").write_text(HELLO_APP)
    cert, key = live_files(certs, tmp_path)
    server = serve("devtls:app", "--reload", "--app-dir", str(tmp_path),
                   "--reload-include", "*.pem", "--ssl-certfile", str(cert),
                   "--ssl-keyfile", str(key))
    assert wait_until(lambda: len(ready_pids(server)) == 1), server.output
    ctx = certs.client_context()
    old = serial_of(certs.cert.read_bytes())
    shutil.copy(certs.other_key, key)
    assert wait_until(lambda: "Reload aborted" in server.output), server.output
    assert (f"Reload aborted: --ssl-keyfile {key}: the key does not match the certificate "
            f"in --ssl-certfile {cert}. The running workers keep serving." in server.output)
    assert served_serial(server.port, ctx) == old
    new = renew(certs, cert, key)
    assert wait_until(lambda: served_serial(server.port, ctx) == new), server.output


# -- docs/tls.md, as written ------------------------------------------------------------------

DOC = ROOT / "docs" / "tls.md"
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[\d+\] ")
HELLO_APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!\\n"})
'''


def doc_scenarios() -> list[tuple[str, list[str], list[tuple[str, list[str]]]]]:
    """Each ``$ bivio`` line of a console block, what it prints, and the commands after it."""
    scenarios: list[tuple[str, list[str], list[tuple[str, list[str]]]]] = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), re.DOTALL):
        current: list[str] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                command = line[2:]
                current = []
                if re.match(r"(\w+=\S+ )*bivio ", command):
                    scenarios.append((command, current, []))
                else:
                    assert scenarios, f"a client command before any bivio command: {line}"
                    scenarios[-1][2].append((command, current))
            else:
                assert current is not None, f"output before any command: {line}"
                current.append(line)
    return scenarios


def test_the_docs_have_commands_only_in_console_blocks() -> None:
    text = DOC.read_text()
    outside = re.sub(r"```console\n.*?```", "", text, flags=re.DOTALL)
    assert not re.search(r"^\s*(\$ |bivio \S+:\S+|curl -)", outside, re.MULTILINE)
    assert len(doc_scenarios()) >= 10


def _doc_port(args: list[str]) -> str:
    return args[args.index("--port") + 1]


@pytest.mark.parametrize("index", range(len(doc_scenarios())))
def test_the_commands_in_the_docs(certs: Certs, tmp_path: Path, index: int) -> None:
    command, printed, clients = doc_scenarios()[index]
    for name in ("ca.pem", "cert.pem", "key.pem", "key-encrypted.pem", "client.pem",
                 "client-key.pem", "other-key.pem"):
        shutil.copy(certs.directory / name, tmp_path / name)
    (tmp_path / "app.py").write_text(HELLO_APP)
    words = shlex.split(command)
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    args = words[1:]
    doc_port = _doc_port(args)
    args[args.index("--port") + 1] = "0"
    failing = any(" ERROR " in line for line in printed)
    server = start_bivio(*args, env=env, cwd=tmp_path, wait=not failing)
    try:
        if failing:  # a start-up failure: exit code 1 and exactly the line shown
            assert server.proc.wait(LONG) == 1
            server._reader.join(5)
            got = [LOG_PREFIX.sub("", line) for line in server.output.splitlines()]
            assert got == [LOG_PREFIX.sub("", line) for line in printed]
            assert not clients
            return
        port = str(server.port)
        for line in printed:
            shown = LOG_PREFIX.sub("", line).replace(f":{doc_port} ", f":{port} ")
            assert shown in [LOG_PREFIX.sub("", out) for out in server.output.splitlines()]
        for client, expected in clients:
            argv = [w.replace(f"localhost:{doc_port}/", f"localhost:{port}/")
                    for w in shlex.split(client)]
            done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=LONG)
            assert done.returncode == 0, (client, done.stderr)
            assert done.stdout.splitlines() == expected, client
    finally:
        server.stop()
