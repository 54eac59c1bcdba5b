"""docs/django.md's nginx configuration, run by a real nginx in front of bivio.

One source: the test takes the ```nginx block of docs/django.md's "Behind nginx"
section as written and changes only its placeholders (``PLACEHOLDERS``: the
listen ports, bivio's address, the certificate files and STATIC_ROOT), wraps it
in an nginx.conf of its own (pid, logs and temp files in a temp prefix, no
daemon, one process) and checks it with ``nginx -t`` before starting Debian's
nginx on free ports, with a certificate made by tests/certs.py, in front of
bivio serving the bundled Django example (ASGI, and hybrid mode).

Through nginx, over HTTP and HTTPS: pages, static files (nginx's ``alias``, as
the docs say), Django's CSRF-protected form with the Origin a browser sends,
the chat's WebSocket (``ws:`` and ``wss:``; and the chat page's own script run
under Node), and the client address in bivio's access log (the real client,
from the ``X-Forwarded-For`` of the trusted proxy at 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import functools
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
from certs import Certs, make_certs
from conftest import ROOT, Running, fill_placeholders, free_port, read_until_close, start_bivio

from e2e.example_site import example_args, prepare_example, run_chat_page

pytest.importorskip("channels")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx; "
                          "scripts/system-deps.sh installs it when run as root)")

DOC = ROOT / "docs" / "django.md"
TIMEOUT = 20.0

# The wrapper around the documented block: everything nginx would write goes under
# the prefix, errors to a file there, no daemon, no worker processes (so no user
# switch, and the test's temp files stay readable).
NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ text/html html; text/css css; application/javascript js; }}
    default_type application/octet-stream;

{server}
}}
"""


def documented_block() -> str:
    """The one ```nginx block of docs/django.md's "Behind nginx" section."""
    section = DOC.read_text().split("\n## Behind nginx\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```nginx\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "docs/django.md's Behind nginx section should have one nginx block"
    return blocks[0]


def placeholders(http: int, https: int, bivio: int, certs: Certs,
                 static_root: str) -> dict[str, str]:
    """The doc's placeholders and what the test puts in their place: nothing else changes."""
    return {
        "listen 443 ssl;": f"listen 127.0.0.1:{https} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http};",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{bivio};",
        "/etc/letsencrypt/live/example.com/fullchain.pem": str(certs.cert),
        "/etc/letsencrypt/live/example.com/privkey.pem": str(certs.key),
        "/srv/mysite/staticfiles/": static_root.rstrip("/") + "/",
    }


def fill(block: str, values: dict[str, str]) -> str:
    return fill_placeholders(block, values, "docs/django.md's nginx block")


@dataclass
class Nginx:
    proc: subprocess.Popen
    prefix: Path
    http: int
    https: int

    @property
    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@functools.cache
def nginx_has_e() -> bool:
    """Whether nginx takes -e (1.19.5+): the error log before the config is read."""
    assert NGINX is not None
    usage = subprocess.run([NGINX, "-h"], capture_output=True, text=True, timeout=30)
    return "-e filename" in usage.stdout + usage.stderr


def nginx_argv(prefix: Path) -> list[str]:
    assert NGINX is not None
    early_log = ["-e", str(prefix / "error.log")] if nginx_has_e() else []
    return [NGINX, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), *early_log]


def write_conf(prefix: Path, server_block: str) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, server=server_block))


def check_conf(prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*nginx_argv(prefix), "-t"], capture_output=True, text=True,
                          timeout=30)


def start_nginx(prefix: Path, bivio: Running, certs: Certs, static_root: str,
                edit=lambda block: block) -> Nginx:
    """nginx with the documented block (placeholders filled; ``edit`` for a variant)."""
    http, https = free_port(), free_port()
    write_conf(prefix, edit(fill(documented_block(),
                                 placeholders(http, https, bivio.port, certs, static_root))))
    checked = check_conf(prefix)
    assert checked.returncode == 0, f"nginx -t refused the config:\n{checked.stderr}"
    with open(prefix / "stderr.log", "w") as out:
        proc = subprocess.Popen(nginx_argv(prefix), stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(proc, prefix, http, https)
    deadline = time.monotonic() + TIMEOUT
    for port in (http, https):
        while True:  # ready when both ports accept (or nginx has exited: its log says why)
            if proc.poll() is not None or time.monotonic() > deadline:
                nginx.stop()
                raise RuntimeError("nginx did not start:\n" + nginx.error_log +
                                   (prefix / "stderr.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
    return nginx


@dataclass
class Stack:
    mode: str
    bivio: Running
    nginx: Nginx
    certs: Certs
    static_root: str

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx.http}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.nginx.https}"

    def client(self, https: bool = True, local_address: str | None = None) -> httpx.Client:
        tls = self.certs.client_context()
        transport = httpx.HTTPTransport(verify=tls, local_address=local_address)
        return httpx.Client(base_url=self.https_url if https else self.http_url,
                            transport=transport, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def project_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return prepare_example(tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module", params=["asgi", "hybrid"])
def stack(request: pytest.FixtureRequest, project_env: dict[str, str], certs: Certs,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No --static: nginx answers /static/ from STATIC_ROOT, as the documented block does.
    bivio = start_bivio(*example_args(request.param), "--host", "127.0.0.1", env=project_env)
    static_root = project_env["EXAMPLE_STATIC_ROOT"]
    try:
        nginx = start_nginx(tmp_path_factory.mktemp(f"nginx-{request.param}"), bivio, certs,
                            static_root)
    except BaseException:
        bivio.stop()
        raise
    yield Stack(request.param, bivio, nginx, certs, static_root)
    nginx.stop()
    bivio.stop()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1)


def wait_for_line(bivio: Running, pattern: str) -> str:
    """The access-log line matching ``pattern`` (a regex), once bivio has written it."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(pattern, bivio.output)
        if match:
            return match.group(0)
        time.sleep(0.02)
    raise AssertionError(f"no line matching {pattern!r} in bivio's output:\n{bivio.output}")


# -- the configuration itself -----------------------------------------------------------------


def test_documented_block_passes_nginx_t(tmp_path, certs):
    """`nginx -t` accepts the block with only its placeholders filled (the old block's
    `listen 443 ssl` without certificate lines did not pass)."""
    block = fill(documented_block(), placeholders(1080, 1443, 8000, certs, str(tmp_path)))
    assert "/srv/mysite" not in block and "/etc/letsencrypt" not in block
    write_conf(tmp_path / "nginx", block)
    checked = check_conf(tmp_path / "nginx")
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    # Without its certificate lines, nginx refuses a "listen ... ssl" server.
    bare = "\n".join(line for line in block.splitlines() if "ssl_certificate" not in line)
    write_conf(tmp_path / "bare", bare)
    assert check_conf(tmp_path / "bare").returncode != 0


def test_readme_points_to_the_tested_block():
    """One source: the README's nginx section has no config of its own to drift."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n### Behind nginx\n", 1)[1].split("\n### ", 1)[0]
    assert "```nginx" not in section
    assert "docs/django.md#behind-nginx" in section


# -- through nginx ----------------------------------------------------------------------------


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_pages(stack, https):
    interface = "asgi" if stack.mode == "asgi" else "wsgi"
    with stack.client(https) as c:
        index = c.get("/")
        sync = c.get("/sync/")
    assert index.status_code == 200
    assert index.headers["server"].startswith("nginx")
    assert f'<strong id="interface">{interface}</strong>' in index.text
    assert sync.json()["interface"] == interface


def test_static_files_from_nginx(stack):
    with stack.client() as c:
        page = c.get("/chat/lobby/").text
        href = re.search(r'src="(/static/example/chat\.[0-9a-f]{12}\.js)"', page)
        assert href, page
        r = c.get(href.group(1))
        missing = c.get("/static/example/no-such-file.js")
    assert r.status_code == 200
    assert r.content == Path(stack.static_root, href.group(1)[len("/static/"):]).read_bytes()
    assert r.headers["content-type"] == "application/javascript"
    assert r.headers["cache-control"] == "max-age=2592000"  # expires 30d
    assert missing.status_code == 404
    # nginx answered from disk: bivio, started without --static, never saw /static/.
    assert "/static/" not in stack.bivio.output


def test_csrf_form_over_https(stack):
    """Django's CSRF check passes with the Origin a browser sends, with no
    CSRF_TRUSTED_ORIGINS: nginx keeps the port in Host ($http_host) and bivio turns
    the trusted X-Forwarded-Proto into the request's scheme."""
    origin = stack.https_url
    text = f"a note through nginx ({stack.mode})"
    with stack.client() as c:
        token = csrf_token(c.get("/notes/").text)
        browser = {"origin": origin, "referer": origin + "/notes/"}
        saved = c.post("/notes/", data={"text": text, "csrfmiddlewaretoken": token},
                       headers=browser)
        assert (saved.status_code, saved.headers.get("location")) == (302, "/notes/"), saved.text
        assert f"<li>{text}</li>" in c.get("/notes/").text
        # Django sees HTTPS: an http:// Origin is another origin, and with neither Origin
        # nor Referer it refuses (a check it makes only for secure requests: the same
        # POST over HTTP passes, see below).
        data = {"text": "refused", "csrfmiddlewaretoken": token}
        wrong_scheme = c.post("/notes/", data=data,
                              headers={"origin": f"http://127.0.0.1:{stack.nginx.https}"})
        no_referer = c.post("/notes/", data=data)
    assert wrong_scheme.status_code == 403
    assert no_referer.status_code == 403


def test_csrf_form_over_http(stack):
    """Over plain HTTP Django sees http: the browser's http:// Origin passes, and a
    POST with neither Origin nor Referer is not refused for it (unlike over HTTPS)."""
    origin = stack.http_url
    with stack.client(https=False) as c:
        token = csrf_token(c.get("/notes/").text)
        saved = c.post("/notes/", data={"text": "over http", "csrfmiddlewaretoken": token},
                       headers={"origin": origin, "referer": origin + "/notes/"})
        bare = c.post("/notes/", data={"text": "over http, bare", "csrfmiddlewaretoken": token})
        wrong_scheme = c.post("/notes/", data={"text": "no", "csrfmiddlewaretoken": token},
                              headers={"origin": f"https://127.0.0.1:{stack.nginx.http}"})
    assert (saved.status_code, saved.headers.get("location")) == (302, "/notes/"), saved.text
    assert bare.status_code == 302
    assert wrong_scheme.status_code == 403


@pytest.mark.parametrize("stack", ["asgi"], indirect=True)  # about the config, not the mode
def test_host_without_its_port_breaks_csrf(stack, tmp_path):
    """Why the docs say $http_host: with `Host $host` (the only change) nginx drops the
    port, Django's idea of the origin loses it too, and the POST that passes through
    the documented block (test_csrf_form_over_https) gets a 403."""
    block_host = "proxy_set_header Host $http_host;"
    nginx = start_nginx(tmp_path / "nginx", stack.bivio, stack.certs, stack.static_root,
                        edit=lambda block: block.replace(block_host,
                                                         "proxy_set_header Host $host;"))
    try:
        origin = f"https://127.0.0.1:{nginx.https}"
        with httpx.Client(base_url=origin, verify=stack.certs.client_context(),
                          timeout=TIMEOUT) as c:
            token = csrf_token(c.get("/notes/").text)
            r = c.post("/notes/", data={"text": "lost port", "csrfmiddlewaretoken": token},
                       headers={"origin": origin, "referer": origin + "/notes/"})
    finally:
        nginx.stop()
    assert r.status_code == 403


def https_only(block: str) -> str:
    """The docs' "Only HTTPS" variant: `listen 80;` moves into the redirecting server
    quoted in the text below the block."""
    doc = DOC.read_text().split("\n## Behind nginx\n", 1)[1]
    redirect = re.search(r"`(server \{ listen 80; .*?return 301 .*?\})`", doc)
    assert redirect, "docs/django.md should show the redirecting server"
    listen = re.search(r"\n\s*listen (127\.0\.0\.1:\d+);[^\n]*", block)
    assert listen
    return (block.replace(listen.group(0), "") + "\n" +
            redirect.group(1).replace("listen 80;", f"listen {listen.group(1)};") + "\n")


@pytest.mark.parametrize("stack", ["asgi"], indirect=True)  # about the config, not the mode
def test_https_only_variant(stack, tmp_path):
    nginx = start_nginx(tmp_path / "nginx", stack.bivio, stack.certs, stack.static_root,
                        edit=https_only)
    try:
        with httpx.Client(timeout=TIMEOUT) as c:
            plain = c.get(f"http://127.0.0.1:{nginx.http}/notes/?x=1")
        with httpx.Client(verify=stack.certs.client_context(), timeout=TIMEOUT) as c:
            secure = c.get(f"https://127.0.0.1:{nginx.https}/notes/")
    finally:
        nginx.stop()
    assert plain.status_code == 301
    # $host has no port: right for the default 443, and this test's port is not.
    assert plain.headers["location"] == "https://127.0.0.1/notes/?x=1"
    assert secure.status_code == 200


def test_unknown_host_is_refused_by_django(stack):
    """$http_host passes the client's Host as sent: ALLOWED_HOSTS is what vets it."""
    with socket.create_connection(("127.0.0.1", stack.nginx.http), timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        data, closed = read_until_close(s)
    assert closed
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]


def test_chat_websocket_through_nginx(stack):
    """The chat's WebSocket through nginx: wss on the HTTPS port, ws on the HTTP port,
    one room; a foreign Origin is still refused (by Channels, behind nginx)."""
    https_port, http_port = stack.nginx.https, stack.nginx.http
    tls = stack.certs.client_context()

    async def go() -> tuple[dict, dict, dict]:
        async with connect(f"wss://127.0.0.1:{https_port}/ws/chat/lobby/", ssl=tls,
                           origin=f"https://127.0.0.1:{https_port}") as alice, \
                connect(f"ws://127.0.0.1:{http_port}/ws/chat/lobby/",
                        origin=f"http://127.0.0.1:{http_port}") as bob:
            welcome = json.loads(await alice.recv())
            await bob.recv()
            await alice.send(json.dumps({"message": "hi through nginx"}))
            return welcome, json.loads(await alice.recv()), json.loads(await bob.recv())

    async def foreign() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"wss://127.0.0.1:{https_port}/ws/chat/lobby/", ssl=tls,
                               origin="https://evil.example"):
                pass
        return info.value.response.status_code

    welcome, to_alice, to_bob = asyncio.run(asyncio.wait_for(go(), TIMEOUT))
    assert welcome["type"] == "welcome"
    assert welcome["worker"] == stack.bivio.proc.pid
    assert to_alice["message"] == to_bob["message"] == "hi through nginx"
    assert asyncio.run(asyncio.wait_for(foreign(), TIMEOUT)) == 403


def test_chat_page_through_nginx(stack):
    """The chat page's own script, under Node, over HTTPS through nginx: it builds the
    wss: URL, connects on the first try, chats, and shows no warning."""
    said = f"hello through nginx ({stack.mode})"
    result = run_chat_page(stack.https_url + "/chat/lobby/", say=said, ca=stack.certs.ca)
    assert result["exit"] == 0, result
    assert result["tries"] == [f"wss://127.0.0.1:{stack.nginx.https}/ws/chat/lobby/"]
    assert result["log"] == [f"anonymous: {said} (sent via worker {stack.bivio.proc.pid})"]
    assert result["warning_hidden"] is True


def test_access_log_shows_the_client(stack):
    """bivio logs the client nginx saw (127.0.0.2 here), not nginx's own 127.0.0.1: the
    X-Forwarded-For of the trusted proxy. A client's own X-Forwarded-For is not trusted."""
    marker = f"who-{stack.mode}"
    with stack.client(local_address="127.0.0.2") as c:
        r = c.get(f"/sync/?{marker}", headers={"x-forwarded-for": "203.0.113.9"})
    assert r.status_code == 200
    line = wait_for_line(stack.bivio, rf"\S+ - \"GET /sync/\?{marker} HTTP/1\.1\" 200")
    assert line.startswith("127.0.0.2:"), line
    assert "203.0.113.9" not in stack.bivio.output

    async def ws() -> None:
        async with connect(f"wss://127.0.0.1:{stack.nginx.https}/ws/chat/lobby/?{marker}",
                           ssl=stack.certs.client_context(), local_addr=("127.0.0.2", 0),
                           origin=stack.https_url) as chat:
            await chat.recv()

    asyncio.run(asyncio.wait_for(ws(), TIMEOUT))
    line = wait_for_line(stack.bivio, rf"\S+ - \"GET /ws/chat/lobby/\?{marker} HTTP/1\.1\" 101")
    assert line.startswith("127.0.0.2:"), line
