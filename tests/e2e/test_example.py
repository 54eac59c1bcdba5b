"""The bundled Django example (examples/example) end to end, as ASGI and as WSGI.

One prepared project for the module (SQLite in a temp dir, collectstatic, a
superuser made by ``manage.py createsuperuser``), served by two bivio
processes with ``--static /static/=STATIC_ROOT``: the ASGI and WSGI entry points.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Running, start_bivio

pytest.importorskip("channels")

EXAMPLES = ROOT / "examples"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def project_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("example")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(EXAMPLE_DB_PATH=str(base / "db.sqlite3"), EXAMPLE_STATIC_ROOT=str(base / "static"),
               DJANGO_SUPERUSER_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v", "0"],
                    ["createsuperuser", "--noinput", "--username", "admin",
                     "--email", "admin@example.com"]):
        subprocess.run([sys.executable, str(EXAMPLES / "manage.py"), *command], env=env,
                       check=True, capture_output=True, timeout=60)
    return env


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def site(request: pytest.FixtureRequest, project_env: dict[str, str]) -> Iterator[Running]:
    running = start_bivio(f"example.{request.param}:application", "--app-dir", "examples",
                          "--static", f"/static/={project_env['EXAMPLE_STATIC_ROOT']}",
                          env=project_env)
    running.mode = request.param  # type: ignore[attr-defined]
    yield running
    running.stop()


def client(site: Running) -> httpx.Client:
    return httpx.Client(base_url=site.url, timeout=15)


def test_index_and_interface(site):
    with client(site) as c:
        r = c.get("/")
    assert r.status_code == 200
    assert f'<strong id="interface">{site.mode}</strong>' in r.text
    # Without Redis the example says at startup that the chat stays in one process.
    assert "in-memory channel layer" in site.output


def test_sync_and_async_views(site):
    with client(site) as c:
        sync, async_ = c.get("/sync/").json(), c.get("/async/").json()
    assert (sync["view"], sync["interface"]) == ("sync", site.mode)
    assert (async_["view"], async_["interface"]) == ("async", site.mode)


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1)


def test_form_with_csrf(site):
    text = f"note from {site.mode}"
    with client(site) as c:
        token = csrf_token(c.get("/notes/").text)
        refused = c.post("/notes/", data={"text": "no token"})
        assert refused.status_code == 403
        saved = c.post("/notes/", data={"text": text, "csrfmiddlewaretoken": token})
        assert saved.status_code == 302
        assert saved.headers["location"] == "/notes/"
        page = c.get("/notes/").text
    assert f"<li>{text}</li>" in page
    assert "no token" not in page


def test_admin_login_and_its_static_files(site):
    with client(site) as c:
        login = c.get("/admin/login/?next=/admin/")
        token = csrf_token(login.text)
        r = c.post("/admin/login/?next=/admin/", data={
            "username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": token,
            "next": "/admin/"})
        assert (r.status_code, r.headers["location"]) == (302, "/admin/")
        home = c.get("/admin/")
        assert home.status_code == 200
        assert "Site administration" in home.text
        assert "Notes" in home.text
        css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', home.text)
        assert css, "the admin's stylesheet should have a hashed name"
        sheet = c.get(css.group(1))
        assert sheet.status_code == 200
        assert sheet.headers["content-type"] == "text/css; charset=utf-8"
        assert sheet.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert sheet.headers["content-encoding"] == "gzip"  # storage.py wrote a .gz sibling
        assert "server" in sheet.headers
        again = c.get(css.group(1), headers={"if-none-match": sheet.headers["etag"]})
        assert again.status_code == 304
        part = c.get(css.group(1), headers={"range": "bytes=0-9", "accept-encoding": "identity"})
        assert part.status_code == 206
        assert part.content == Path(site_static(site), css.group(1)[len("/static/"):]
                                    ).read_bytes()[:10]


def site_static(site: Running) -> str:
    return site.args[site.args.index("--static") + 1].split("=", 1)[1]


def test_streaming(site):
    lines = []
    with client(site) as c, c.stream("GET", "/stream/") as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        for line in r.iter_lines():
            lines.append(line)
    assert lines == [f"line {n} of 5" for n in range(1, 6)]


def test_chat_page(site):
    with client(site) as c:
        r = c.get("/chat/lobby/")
    assert r.status_code == 200
    assert 'id="room-name"' in r.text
    assert re.search(r'src="/static/example/chat\.[0-9a-f]{12}\.js"', r.text)
    assert ("has no\nWebSockets" in r.text) is (site.mode == "wsgi")


def test_chat_over_websocket(site):
    if site.mode == "wsgi":
        # WSGI has no WebSockets: the upgrade is answered as plain HTTP (Django's 404).
        with client(site) as c:
            r = c.get("/ws/chat/lobby/", headers={"connection": "upgrade", "upgrade": "websocket",
                                                  "sec-websocket-version": "13",
                                                  "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert r.status_code == 404
        return
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{site.port}/ws/chat/lobby/"
    origin = f"http://127.0.0.1:{site.port}"

    async def go() -> tuple[dict, dict, dict]:
        async with connect(url, origin=origin) as alice, connect(url, origin=origin) as bob:
            welcome = json.loads(await alice.recv())
            await bob.recv()
            await alice.send(json.dumps({"message": "hi bob"}))
            return welcome, json.loads(await alice.recv()), json.loads(await bob.recv())

    welcome, to_alice, to_bob = asyncio.run(asyncio.wait_for(go(), 30))
    assert welcome["layer"] == "InMemoryChannelLayer"
    assert to_alice["message"] == to_bob["message"] == "hi bob"
    assert to_bob["user"] == "anonymous"


def test_chat_refuses_foreign_origin(site):
    if site.mode == "wsgi":
        pytest.skip("WebSockets are ASGI only")
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def go() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{site.port}/ws/chat/lobby/",
                               origin="http://evil.example"):
                pass
        return info.value.response.status_code

    assert asyncio.run(asyncio.wait_for(go(), 30)) == 403
