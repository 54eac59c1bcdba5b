"""Hybrid mode end to end: a WSGI app and an ASGI app in one worker (docs/asgi-or-wsgi.md).

Every view here says who served it: Django's ``WSGIRequest`` or ``ASGIRequest``,
Flask's environ or Starlette's scope. So each test proves the routing rule
(WebSocket upgrades and ``--asgi-path`` prefixes to the ASGI app, the rest to
the WSGI app) rather than just that something answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, start_bivio
from websockets.asyncio.client import connect

pytest.importorskip("channels")
pytest.importorskip("flask")

PROJECT = "tests.apps.hybridproj"
WSGI = f"{PROJECT}.wsgi:application"
ASGI = f"{PROJECT}.asgi:application"
PAIR_WSGI = "tests.apps.hybrid_pair:flask_app"
PAIR_ASGI = "tests.apps.hybrid_pair:starlette_app"
TIMEOUT = 20.0
PASSWORD = "hybrid-pass-1"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated SQLite database with one superuser; the env that points the project at it."""
    path = tmp_path_factory.mktemp("hybridproj") / "db.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": f"{PROJECT}.settings",
           "HYBRIDPROJ_DB": str(path)}
    code = (
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from django.contrib.auth.models import User\n"
        f"User.objects.create_superuser('admin', 'admin@example.com', {PASSWORD!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    return {"HYBRIDPROJ_DB": str(path)}


def ws_exchange(url: str, text: str, cookie: str | None = None) -> dict:
    async def go() -> dict:
        headers = {"cookie": cookie} if cookie else None
        async with connect(url, additional_headers=headers) as ws:
            await ws.send(text)
            reply = json.loads(await ws.recv())
            await ws.send(b"\x00bytes")
            assert await ws.recv() == b"\x00bytes"
            return reply

    return asyncio.run(asyncio.wait_for(go(), TIMEOUT))


def admin_login(client: httpx.Client) -> httpx.Response:
    """Log in through the admin's form: CSRF cookie + hidden token, as a browser does."""
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text
    return client.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": token.group(1), "username": "admin", "password": PASSWORD,
        "next": "/admin/"}, headers={"referer": str(client.base_url) + "/admin/login/"})


def test_django_hybrid_routes_each_request_to_its_handler(serve, database):
    server = serve(WSGI, "--asgi-app", ASGI, "--asgi-path", "/events/", env=database)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.get("/page/").text == "WSGIRequest |/page/"
        assert client.get("/events/which/").text == "ASGIRequest |/events/which/"
        # Segment boundary: /eventsx/ is not under /events/, so WSGI runs this async view.
        assert client.get("/eventsx/").text == "WSGIRequest |/eventsx/"
        # Percent-encoding cannot sneak a request past the prefix.
        assert client.get("/%65vents/which/").text == "ASGIRequest |/events/which/"
        sse = client.get("/events/ticks/")
        assert sse.headers["content-type"] == "text/event-stream"
        assert sse.text == "".join(f"data: tick {i} ASGIRequest\n\n" for i in range(3))
    assert "Hybrid mode: WebSockets, /events/ to the ASGI app" in server.output
    # A WebSocket goes to the ASGI app (Channels) although /ws/ is not an --asgi-path.
    reply = ws_exchange(f"ws://127.0.0.1:{server.port}/ws/echo/", "hi")
    assert reply == {"echo": "hi", "type": "websocket", "user": "-"}


def test_django_hybrid_admin_login_csrf_and_session_shared_with_websocket(serve, database):
    server = serve(WSGI, "--asgi-app", ASGI, "--asgi-path", "/events", env=database)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        login = admin_login(client)
        assert login.status_code == 302 and login.headers["location"] == "/admin/", login.text
        assert "Site administration" in client.get("/admin/").text
        assert client.get("/whoami/").text == "admin"
        # A CSRF-protected form POST on the WSGI side: refused without the token, taken with it.
        client.get("/form/")
        assert client.post("/form/", data={"name": "x"}).status_code == 403
        posted = client.post("/form/", data={"name": "x",
                                             "csrfmiddlewaretoken": client.cookies["csrftoken"]})
        assert posted.text == "posted x via WSGIRequest"
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    # The session the WSGI handler created authenticates the ASGI handler's WebSocket.
    reply = ws_exchange(f"ws://127.0.0.1:{server.port}/ws/echo/", "who", cookie)
    assert reply == {"echo": "who", "type": "websocket", "user": "admin"}
    assert server.stop() == 0


def test_django_shortcut_finds_both_entry_points_and_settings(serve, database):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(database)
    server = start_bivio("--django", PROJECT, "--asgi-path", "/events/", env=env)
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            assert client.get("/page/").text == "WSGIRequest |/page/"
            assert client.get("/events/which/").text == "ASGIRequest |/events/which/"
        reply = ws_exchange(f"ws://127.0.0.1:{server.port}/ws/echo/", "short")
        assert reply["echo"] == "short"
    finally:
        assert server.stop() == 0


def test_django_shortcut_without_the_project_fails_clearly(serve):
    server = serve("--django", "tests.apps.no_such_project", wait=False)
    assert server.proc.wait(TIMEOUT) == 1
    server._reader.join(5)
    lines = [line for line in server.output.splitlines() if "error" in line]
    assert lines == ["bivio: error: --django tests.apps.no_such_project: could not import "
                     "module 'tests.apps.no_such_project.wsgi': no such module"], server.output


def test_flask_and_starlette_pair_with_root_path_and_lifespan(serve):
    server = serve(PAIR_WSGI, "--asgi-app", PAIR_ASGI, "--asgi-path", "/live",
                   "--root-path", "/app")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.get("/page").text == "flask /app|/page wsgi=(1, 0)"
        assert client.get("/live/x").text == "starlette /app|/app/live/x asgi=3.0 started=True"
        assert client.get("/live").text == "starlette /app|/app/live asgi=3.0 started=True"
        assert client.get("/livex").text == "flask /app|/livex wsgi=(1, 0)"
        # A proxy that kept the mount point: the prefix is still matched inside it.
        assert client.get("/app/page").text == "flask /app|/page wsgi=(1, 0)"

    async def ws() -> list[str]:
        # Any path upgrades to the ASGI app, not only the --asgi-path ones.
        async with connect(f"ws://127.0.0.1:{server.port}/anything/ws") as a, \
                connect(f"ws://127.0.0.1:{server.port}/ws") as b:
            await a.send("one")
            await b.send("two")
            return [await a.recv(), await b.recv()]

    assert asyncio.run(asyncio.wait_for(ws(), TIMEOUT)) == [
        "starlette echo: one", "starlette echo: two"]
    assert server.stop() == 0
    assert "hybrid pair lifespan startup" in server.output
    assert "hybrid pair lifespan shutdown" in server.output


def test_limits_apply_to_both_apps(serve):
    server = serve(PAIR_WSGI, "--asgi-app", PAIR_ASGI, "--asgi-path", "/live",
                   "--limit-request-body", "100")
    for path in ("/page", "/live/x"):
        response = httpx.post(server.url + path, content=b"x" * 1000, timeout=TIMEOUT)
        assert response.status_code == 413, (path, response.text)
        assert httpx.post(server.url + path, content=b"x" * 10, timeout=TIMEOUT).status_code \
            in (200, 405)


def test_graceful_shutdown_waits_for_both_kinds_of_request(serve, tmp_path):
    gate = tmp_path / "gate"  # the WSGI /slow request runs until this file exists
    server = serve(PAIR_WSGI, "--asgi-app", PAIR_ASGI, "--asgi-path", "/live",
                   env={"BIVIO_TEST_GATE": str(gate)})
    results: list[str] = []
    slow = threading.Thread(target=lambda: results.append(
        httpx.get(server.url + "/slow", timeout=TIMEOUT).text), daemon=True)

    async def go() -> tuple[str, int | None]:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send("before")
            first = await ws.recv()
            slow.start()
            assert await asyncio.to_thread(server.wait_for_output, "slow request started")
            server.signal(signal.SIGTERM)
            await ws.wait_closed()
            return first, ws.close_code

    first, code = asyncio.run(asyncio.wait_for(go(), TIMEOUT * 2))
    assert first == "starlette echo: before"
    assert code == 1012  # "service restart": the server closed the WebSocket on shutdown
    assert server.wait_for_output("shutting down gracefully")
    assert results == [] and server.proc.poll() is None  # still held by the request
    gate.touch()
    slow.join(TIMEOUT)
    assert results == ["slow done"]  # the WSGI request in flight was finished, not dropped
    assert server.proc.wait(TIMEOUT * 2) == 0
    server._reader.join(5)
    assert "hybrid pair lifespan shutdown" in server.output


@pytest.mark.parametrize(("args", "message"), [
    ((ASGI, "--asgi-app", ASGI),
     f"bivio: error: hybrid mode: {ASGI} is an ASGI application, but MODULE:ATTR must be the "
     "WSGI one (the ASGI app goes in --asgi-app)"),
    ((WSGI, "--asgi-app", WSGI),
     f"bivio: error: --asgi-app: {WSGI} is a WSGI application; --asgi-app takes the ASGI one "
     "(MODULE:ATTR is the WSGI app)"),
    ((PAIR_ASGI, "--asgi-app", PAIR_WSGI),
     f"bivio: error: hybrid mode: {PAIR_ASGI} is an ASGI application, but MODULE:ATTR must be "
     "the WSGI one (the ASGI app goes in --asgi-app)"),
])
def test_wrong_pair_fails_at_startup_with_one_line_and_exit_1(serve, database, args, message):
    server = serve(*args, env=database, wait=False)
    assert server.proc.wait(TIMEOUT * 2) == 1
    server._reader.join(5)
    assert message in server.output.splitlines(), server.output
    assert "Traceback" not in server.output and "serving on" not in server.output


def test_wrong_pair_under_workers_fails_with_the_same_exit_code(serve):
    server = serve(PAIR_ASGI, "--asgi-app", PAIR_ASGI, "--workers", "2", wait=False)
    assert server.proc.wait(TIMEOUT * 3) == 1
    server._reader.join(5)
    assert "is an ASGI application, but MODULE:ATTR must be the WSGI one" in server.output


@pytest.mark.parametrize(("args", "message"), [
    (("--asgi-path", "/events/"), "--asgi-path: needs --asgi-app (or --django)"),
    (("--asgi-app", PAIR_ASGI, "--asgi-path", "events"), "--asgi-path: must start with '/'"),
    (("--asgi-app", PAIR_ASGI, "--asgi-path", "/"), "--asgi-path: '/' would send every"),
    (("--asgi-app", PAIR_ASGI, "--interface", "asgi3"), "--interface: in hybrid mode"),
])
def test_bad_hybrid_options_are_usage_errors(serve, args, message):
    server = serve(PAIR_WSGI, *args, wait=False)
    assert server.proc.wait(TIMEOUT) == 2
    server._reader.join(5)
    assert message in server.output, server.output


def test_hybrid_with_two_workers(serve, database):
    server = serve(WSGI, "--asgi-app", ASGI, "--asgi-path", "/events/", "--workers", "2",
                   env=database)
    assert server.wait_for_output("Worker", TIMEOUT)
    # Both workers built the dispatcher from the flags the supervisor passed on.
    assert _wait(lambda: server.output.count("Hybrid mode: WebSockets, /events/") == 2), \
        server.output
    with httpx.Client(base_url=server.url, timeout=TIMEOUT,
                      headers={"connection": "close"}) as client:
        for _ in range(6):
            assert client.get("/page/").text == "WSGIRequest |/page/"
            assert client.get("/events/which/").text == "ASGIRequest |/events/which/"
        login = admin_login(client)
        assert login.status_code == 302, login.text
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    for _ in range(3):  # whichever worker takes it, the session is in the shared database
        assert ws_exchange(f"ws://127.0.0.1:{server.port}/ws/echo/", "w", cookie)["user"] \
            == "admin"
    assert server.stop() == 0


def _wait(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_hybrid_project_files_exist() -> None:
    """--django relies on startproject's layout; the test project must keep it."""
    base = Path(ROOT, *PROJECT.split("."))
    assert (base / "wsgi.py").is_file() and (base / "asgi.py").is_file()
    assert (base / "settings.py").is_file()
