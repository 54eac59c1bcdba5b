"""docs/http2.md's command lines, run as written; the Django example over HTTPS and HTTP/2.

A documented command is a tested command: every ``$ `` line of the page's
``console`` blocks runs here, with only the app, the port and the
certificate files swapped for the test's own (the page's ``cert.pem`` is a
self-signed certificate, so curl trusts it as ``--cacert``; the test's is
signed by a CA the test makes, which curl gets instead). Each curl must
have spoken HTTP/2.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import httpx
import pytest
from certs import make_certs
from conftest import ROOT, start_bivio

DOC = ROOT / "docs" / "http2.md"
CURL = shutil.which("curl")


def console_blocks(text: str) -> list[list[str]]:
    """The ``$ `` lines of each ```console block, in order."""
    blocks = re.findall(r"```console\n(.*?)```", text, re.S)
    return [[line[2:] for line in block.splitlines() if line.startswith("$ ")]
            for block in blocks]


def test_the_page_has_commands():
    blocks = console_blocks(DOC.read_text())
    assert len(blocks) == 2, "docs/http2.md: expected the cleartext and the TLS example"
    assert all(block[0].startswith("bivio ") for block in blocks)


@pytest.mark.skipif(CURL is None, reason="curl is not installed (Debian package curl)")
@pytest.mark.parametrize("index", [0, 1], ids=["cleartext", "tls"])
def test_documented_commands(index, tmp_path, serve):
    certs = make_certs(tmp_path)
    block = console_blocks(DOC.read_text())[index]
    server = None
    doc_port = ""
    for line in block:
        argv = shlex.split(line)
        if argv[0] == "bivio":
            args = []
            it = iter(argv[1:])
            for arg in it:
                if arg == "app:app":
                    args.append("tests.apps.basic:app")
                elif arg == "--port":
                    doc_port = next(it)
                    args += ["--port", "0"]
                elif arg == "cert.pem":
                    args.append(str(certs.cert))
                elif arg == "key.pem":
                    args.append(str(certs.key))
                else:
                    args.append(arg)
            server = serve(*args)
            continue
        assert argv[0] == "curl" and server is not None, f"unexpected line {line!r}"
        assert doc_port, "the page's bivio command names its port"
        args = [a.replace(f":{doc_port}/", f":{server.port}/") for a in argv[1:]]
        args = [str(certs.ca) if a == "cert.pem" else a for a in args]
        result = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_version}",
                                 "--max-time", "20", *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        assert result.stdout == "2", f"{line}: spoke HTTP/{result.stdout}, not HTTP/2"
    assert "HTTP/2" in server.output  # the access log says so


@pytest.fixture(scope="module")
def https_example(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("channels")
    base = tmp_path_factory.mktemp("example-https")
    certs = make_certs(base)
    env = {"EXAMPLE_DB_PATH": str(base / "db.sqlite3"),
           "EXAMPLE_STATIC_ROOT": str(base / "static"), "PYTHONUNBUFFERED": "1"}
    full = {**{k: v for k, v in os.environ.items() if k != "REDIS_URL"}, **env}
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v", "0"]):
        subprocess.run([sys.executable, str(ROOT / "examples" / "manage.py"), *command],
                       env=full, check=True, capture_output=True, timeout=60)
    running = start_bivio("example.asgi:application", "--app-dir", "examples",
                          "--static", f"/static/={env['EXAMPLE_STATIC_ROOT']}",
                          "--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key),
                          env=env)
    yield running, certs
    running.stop()


def test_django_example_over_https_and_http2(https_example):
    """Pages, a sync view and a static file over HTTP/2 with TLS (ALPN h2), through httpx."""
    running, certs = https_example
    assert running.url.startswith("https://")
    with httpx.Client(http2=True, verify=certs.client_context(), timeout=15,
                      base_url=f"https://localhost:{running.port}") as client:
        page = client.get("/")
        assert page.status_code == 200 and page.http_version == "HTTP/2"
        assert "<html" in page.text.lower()
        view = client.get("/sync/")
        assert view.http_version == "HTTP/2" and view.json()["view"] == "sync"
        css = re.search(r'href="(/static/[^"]+\.css)"', page.text)
        assert css, "the example's page links a stylesheet"
        static = client.get(css.group(1), headers={"accept-encoding": "identity"})
        assert static.status_code == 200 and static.http_version == "HTTP/2"
        assert static.headers["content-length"] == str(len(static.content))


@pytest.mark.skipif(CURL is None, reason="curl is not installed (Debian package curl)")
def test_django_example_with_curl_over_https(https_example):
    running, certs = https_example
    result = subprocess.run([CURL, "-sS", "--http2", "--cacert", str(certs.ca), "-o", "/dev/null",
                             "-w", "%{http_version} %{http_code}", "--max-time", "20",
                             f"https://localhost:{running.port}/"],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == "2 200", result.stderr
