"""The bundled Django example (examples/example) end to end: as ASGI, as WSGI, and hybrid.

One prepared project for the module (SQLite in a temp dir, collectstatic, a
superuser made by ``manage.py createsuperuser``), served by three bivio
processes with ``--static /static/=STATIC_ROOT``: the ASGI and WSGI entry points,
and hybrid mode (``--django example``: pages through WSGI, WebSockets through ASGI).
The chat page's script is run under Node (``chat_page.js``) against each of them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Running, start_bivio

from e2e.example_site import (
    PASSWORD,
    RETRY_DELAYS_MS,
    example_args,
    prepare_example,
    run_chat_page,
)

pytest.importorskip("channels")

CHAT_JS = ROOT / "examples" / "example" / "static" / "example" / "chat.js"


@pytest.fixture(scope="module")
def project_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return prepare_example(tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="module", params=["asgi", "wsgi", "hybrid"])
def site(request: pytest.FixtureRequest, project_env: dict[str, str]) -> Iterator[Running]:
    running = start_bivio(*example_args(request.param, project_env["EXAMPLE_STATIC_ROOT"]),
                          env=project_env)
    running.mode = request.param  # type: ignore[attr-defined]
    # Which Django handler answers the pages, and whether there are WebSockets.
    running.interface = "asgi" if request.param == "asgi" else "wsgi"  # type: ignore[attr-defined]
    running.websockets = request.param != "wsgi"  # type: ignore[attr-defined]
    yield running
    running.stop()


def client(site: Running) -> httpx.Client:
    return httpx.Client(base_url=site.url, timeout=15)


def test_index_and_interface(site):
    with client(site) as c:
        r = c.get("/")
    assert r.status_code == 200
    assert f'<strong id="interface">{site.interface}</strong>' in r.text
    # Without Redis the example says at startup that the chat stays in one process.
    assert "in-memory channel layer" in site.output


def test_sync_and_async_views(site):
    with client(site) as c:
        sync, async_ = c.get("/sync/").json(), c.get("/async/").json()
    assert (sync["view"], sync["interface"]) == ("sync", site.interface)
    assert (async_["view"], async_["interface"]) == ("async", site.interface)


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
    """The page no longer guesses from its own request whether WebSockets work (hybrid
    mode serves it through WSGI and the WebSocket through ASGI): the explanation is in
    every page, hidden, for the script to show when the WebSocket cannot be opened."""
    with client(site) as c:
        r = c.get("/chat/lobby/")
    assert r.status_code == 200
    assert 'id="room-name"' in r.text
    assert re.search(r'src="/static/example/chat\.[0-9a-f]{12}\.js"', r.text)
    warning = re.search(r'<p class="warn" id="no-websocket"( hidden)?>(.*?)</p>', r.text, re.S)
    assert warning, "the chat page should carry the no-WebSocket explanation"
    assert warning.group(1) == " hidden", "shown only by the script, when the WebSocket fails"
    assert "could not be opened" in warning.group(2)
    assert "has no\nWebSockets" not in r.text  # the old server-side guess


def test_chat_script_retries_a_bounded_number_of_times():
    """What can be seen without running it: a bounded list of retry delays, no fixed
    retry loop, and the explanation shown when it gives up."""
    script = CHAT_JS.read_text()
    delays = re.search(r"const RETRY_DELAYS_MS = \[([^\]]*)\];", script)
    assert delays, "chat.js should keep its retry delays in RETRY_DELAYS_MS"
    assert [int(d) for d in delays.group(1).split(",")] == RETRY_DELAYS_MS
    assert "setTimeout(connect, 2000)" not in script
    assert "noWebSocket.hidden = false" in script


def test_chat_page_script_in_node(site):
    """The page's own script, run under Node against the server: with WebSockets (ASGI,
    hybrid) it connects once, chats and never shows the warning; under WSGI alone it
    tries 1 + 3 times with backoff, then stops and shows why."""
    said = f"hello from the page ({site.mode})"
    if site.websockets:
        result = run_chat_page(site.url + "/chat/lobby/", say=said)
        assert result["exit"] == 0, result
        assert result["tries"] == [f"ws://127.0.0.1:{site.port}/ws/chat/lobby/"]
        assert result["status"].startswith("connected to worker"), result
        assert "(InMemoryChannelLayer)" in result["status"]
        assert result["log"] == [f"anonymous: {said} (sent via worker {site.proc.pid})"]
        assert result["warning_hidden"] is True
        assert result["delays"] == []
        return
    result = run_chat_page(site.url + "/chat/lobby/", say=said)
    assert result["exit"] == 0, result
    assert len(result["tries"]) == 1 + len(RETRY_DELAYS_MS), result
    assert result["delays"] == RETRY_DELAYS_MS
    assert result["status"] == "no WebSocket: gave up after 4 tries"
    assert result["warning_hidden"] is False
    assert "example.wsgi:application" in result["warning_text"]
    assert "--django example" in result["warning_text"]
    assert result["log"] == []
    # Each try reached bivio and got Django's 404, and no more came after the last.
    assert wait_count(site, '"GET /ws/chat/lobby/ HTTP/1.1" 404', 4) == 4


def wait_count(site: Running, text: str, count: int, timeout: float = 10.0) -> int:
    """How often ``text`` is in the output, once it is there ``count`` times (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while site.output.count(text) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return site.output.count(text)


@pytest.mark.parametrize("outcomes, tries, status, warning_hidden", [
    # Browsers fire "error" then "close" for a failed handshake: one retry per failure.
    (["fail"] * 4, 4, "no WebSocket: gave up after 4 tries", False),
    # Node 20's WebSocket fires only "error".
    (["error-only"] * 4, 4, "no WebSocket: gave up after 4 tries", False),
    # A chat that worked and dropped: three retries, then it says so, without the
    # no-WebSocket explanation (the server does have WebSockets).
    (["welcome-drop", "fail", "fail", "fail"], 4, "disconnected; 3 retries failed: reload the "
     "page to try again", True),
    # A welcome starts the count again: the chat comes back after a drop.
    (["welcome-drop", "fail", "welcome-drop", "fail", "fail", "fail"], 6,
     "disconnected; 3 retries failed: reload the page to try again", True),
])
@pytest.mark.parametrize("site", ["asgi"], indirect=True)  # the page is the same in every mode
def test_chat_script_retry_logic(site, outcomes, tries, status, warning_hidden):
    """The retry logic against scripted WebSockets (no server WebSocket needed)."""
    result = run_chat_page(site.url + "/chat/lobby/", fake=outcomes)
    assert result["exit"] == 0, result
    assert len(result["tries"]) == tries
    assert result["status"] == status
    assert result["warning_hidden"] is warning_hidden
    assert result["delays"][-len(RETRY_DELAYS_MS):] == RETRY_DELAYS_MS


def test_chat_over_websocket(site):
    if not site.websockets:
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
    if not site.websockets:
        pytest.skip("no WebSockets under WSGI alone")
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def go() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{site.port}/ws/chat/lobby/",
                               origin="http://evil.example"):
                pass
        return info.value.response.status_code

    assert asyncio.run(asyncio.wait_for(go(), 30)) == 403
