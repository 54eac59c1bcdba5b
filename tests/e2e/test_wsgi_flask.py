"""A Flask app (tests/apps/flaskapp.py) as WSGI: send_file, a generator response,
a large upload read with ``request.stream``, a multipart form, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

pytest.importorskip("flask")

APP = "tests.apps.flaskapp:app"
FILE = Path(__file__).resolve().parent.parent / "apps" / "flaskapp.py"


@pytest.fixture
def flask_app(serve):
    return serve(APP)


def test_detected_as_wsgi(flask_app):
    assert httpx.get(flask_app.url + "/", timeout=10).text == "Hello from Flask"
    assert "WSGI application:" in flask_app.output


def test_send_file(flask_app):
    response = httpx.get(flask_app.url + "/file", timeout=10)
    assert response.status_code == 200
    assert response.content == FILE.read_bytes()
    assert response.headers["content-length"] == str(FILE.stat().st_size)


def test_send_file_range_uses_the_fallback(flask_app):
    response = httpx.get(flask_app.url + "/file", headers={"Range": "bytes=10-19"}, timeout=10)
    assert response.status_code == 206
    assert response.content == FILE.read_bytes()[10:20]


def test_send_file_conditional(flask_app):
    first = httpx.get(flask_app.url + "/file", timeout=10)
    again = httpx.get(flask_app.url + "/file", timeout=10,
                      headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_generator_response(flask_app):
    response = httpx.get(flask_app.url + "/generate?count=30", timeout=10)
    assert response.text == "".join(f"item-{i} of 30;" for i in range(30))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_upload_read_with_request_stream(flask_app, chunked):
    body = b"0123456789abcdef" * (512 * 1024)  # 8 MiB
    content = (body[i:i + 256 * 1024] for i in range(0, len(body), 256 * 1024)) \
        if chunked else body
    result = httpx.post(flask_app.url + "/upload", content=content, timeout=60).json()
    assert result == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_multipart_form(flask_app):
    response = httpx.post(flask_app.url + "/form", data={"name": "bivio"},
                          files={"doc": ("a.txt", b"hello")}, timeout=10)
    assert response.json() == {"name": "bivio", "files": ["doc"]}


def test_view_error(flask_app):
    response = httpx.get(flask_app.url + "/boom", timeout=10)
    assert response.status_code == 500
    assert httpx.get(flask_app.url + "/", timeout=10).status_code == 200
