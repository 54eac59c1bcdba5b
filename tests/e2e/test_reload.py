"""--reload: an edited file restarts the worker; a broken file keeps the supervisor up."""

from __future__ import annotations

import re

import httpx

from .test_workers import LONG, TIMEOUT, wait_until

APP_TEMPLATE = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": {body!r}}})
'''


def write_app(path, body: bytes) -> None:
    # Different lengths on purpose: a .pyc is trusted when size and mtime (seconds) match.
    path.write_text(APP_TEMPLATE.format(body=body))


def body(server) -> bytes | None:
    try:
        return httpx.get(server.url + "/", timeout=TIMEOUT).content
    except httpx.HTTPError:
        return None


def serves(server, expected: bytes) -> bool:
    return wait_until(lambda: body(server) == expected, LONG)


def test_reload_picks_up_edits_and_survives_a_syntax_error(serve, tmp_path):
    app = tmp_path / "devapp.py"
    write_app(app, b"v1")
    server = serve("devapp:app", "--reload", "--app-dir", str(tmp_path))
    assert serves(server, b"v1")
    assert f"Watching for changes in {tmp_path.resolve()}" in server.output

    write_app(app, b"v22")
    assert serves(server, b"v22"), server.output
    assert "Changes detected in" in server.output

    app.write_text("async def app(scope, receive, send)\n    pass\n")  # missing colon
    assert wait_until(lambda: "SyntaxError" in server.output), server.output
    assert wait_until(lambda: "Waiting for a file change" in server.output), server.output
    assert server.proc.poll() is None  # the supervisor is still there
    assert body(server) == b"v22"  # and the last good code still answers

    write_app(app, b"v333")
    assert serves(server, b"v333"), server.output
    assert server.stop() == 0


def test_reload_include_and_exclude(serve, tmp_path):
    app = tmp_path / "devapp2.py"
    write_app(app, b"a")
    (tmp_path / "settings.toml").write_text("x = 1\n")
    server = serve("devapp2:app", "--reload", "--app-dir", str(tmp_path),
                   "--reload-include", "*.toml", "--reload-exclude", "scratch_*")
    assert serves(server, b"a")
    (tmp_path / "scratch_notes.py").write_text("# ignored\n")
    (tmp_path / "settings.toml").write_text("x = 22\n")
    assert wait_until(lambda: "Changes detected in" in server.output), server.output
    detected = re.findall(r"Changes detected in (.*): reloading", server.output)
    assert all("scratch_" not in line for line in detected), detected
    assert any("settings.toml" in line for line in detected), detected
    assert wait_until(lambda: len(re.findall(r"Worker \[\d+\] ready", server.output)) == 2)


def test_reload_without_a_valid_app_at_start_waits_for_a_fix(serve, tmp_path):
    app = tmp_path / "devapp3.py"
    app.write_text("raise RuntimeError('not yet')\n")
    server = serve("devapp3:app", "--reload", "--app-dir", str(tmp_path))
    assert wait_until(lambda: "RuntimeError: not yet" in server.output), server.output
    assert wait_until(lambda: "Waiting for a file change" in server.output), server.output
    assert server.proc.poll() is None
    write_app(app, b"fixed")
    assert serves(server, b"fixed"), server.output
