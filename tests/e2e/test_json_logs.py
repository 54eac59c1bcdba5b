"""--log-format json: every line bivio writes is one JSON object."""

from __future__ import annotations

import json
import re

import httpx
import pytest


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["single", "workers"])
def test_every_line_is_json(serve, workers):
    server = serve("tests.apps.basic:app", "--log-format", "json", *workers)
    assert httpx.get(server.url + "/?x=1").status_code == 200
    assert httpx.get(server.url + "/tagged", headers={"X-Request-ID": "req-42"}).status_code \
        == 200
    assert httpx.get(server.url + "/error-before").status_code == 500
    assert server.wait_for_output("boom before start")
    assert server.wait_for_output('"path": "/error-before"')
    assert server.stop() == 0
    lines = [line for line in server.output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, or this fails
    assert all(isinstance(r, dict) for r in records)
    for r in records:
        assert {"time", "level", "logger", "message"} <= set(r), r
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", r["time"])
    assert any(r["logger"] == "bivio.error" and "serving on" in r["message"] for r in records)

    access = [r for r in records if r["logger"] == "bivio.access"]
    ok = next(r for r in access if r["path"] == "/")
    assert ok["query"] == "x=1" and ok["target"] == "/?x=1"
    assert (ok["method"], ok["status"], ok["bytes"], ok["http_version"]) == ("GET", 200, 5, "1.1")
    assert (ok["protocol"], ok["interface"]) == ("http/1.1", "asgi")
    assert ok["client"].startswith("127.0.0.1:")
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] >= 0
    assert "request_id" not in ok  # the client sent none
    assert next(r for r in access if r["path"] == "/tagged")["request_id"] == "req-42"
    failed = next(r for r in access if r["path"] == "/error-before")
    assert failed["status"] == 500

    errors = [r for r in records if "exception" in r]
    assert errors, "the app's exception is logged"
    assert errors[0]["level"] == "ERROR"
    assert "RuntimeError: boom before start" in errors[0]["exception"]
    assert errors[0]["exception"].startswith("Traceback")
