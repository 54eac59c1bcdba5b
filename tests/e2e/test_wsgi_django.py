"""The Django project (tests/apps/djangoproj) through ``get_wsgi_application()``:
a CSRF form post with cookies, streaming, a FileResponse download (sent through
wsgi.file_wrapper), uploads with and without Content-Length, errors."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest

pytest.importorskip("django")

APP = "tests.apps.djangoproj.wsgi:application"
ENV = {"DJANGO_SETTINGS_MODULE": "tests.apps.djangoproj.wsgi_settings"}
VIEWS = Path(__file__).resolve().parent.parent / "apps" / "djangoproj" / "views.py"


@pytest.fixture
def django_wsgi(serve):
    return serve(APP, env=ENV)


def test_detected_as_wsgi(django_wsgi):
    response = httpx.get(django_wsgi.url + "/sync/", timeout=10)
    assert response.status_code == 200
    assert response.text == "sync view, main thread: False"
    assert "WSGI application:" in django_wsgi.output


def test_form_post_with_csrf_and_cookies(django_wsgi):
    with httpx.Client(base_url=django_wsgi.url, timeout=10) as client:
        page = client.get("/wsgi/form/")
        assert page.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        assert "csrftoken" in client.cookies
        response = client.post("/wsgi/form/", data={"csrfmiddlewaretoken": token,
                                                    "name": "bivio"})
        assert response.status_code == 200
        assert response.text == "hello bivio"


def test_form_post_without_csrf_is_refused(django_wsgi):
    response = httpx.post(django_wsgi.url + "/wsgi/form/", data={"name": "x"}, timeout=10)
    assert response.status_code == 403


def test_cookies_round_trip(django_wsgi):
    with httpx.Client(base_url=django_wsgi.url, timeout=10) as client:
        first = client.get("/wsgi/cookies/")
        assert first.json()["cookies"] == {}
        assert first.json()["thread"].startswith("bivio-wsgi-")
        second = client.get("/wsgi/cookies/")
        assert second.json()["cookies"] == {"visited": "yes", "count": "1"}
        assert client.cookies["count"] == "2"


def test_streaming_response(django_wsgi):
    response = httpx.get(django_wsgi.url + "/wsgi/stream/?count=20", timeout=10)
    assert response.text == "".join(f"chunk-{i};" for i in range(20))


def test_file_download(django_wsgi):
    response = httpx.get(django_wsgi.url + "/wsgi/download/", timeout=10)
    assert response.status_code == 200
    assert response.content == VIEWS.read_bytes()
    assert response.headers["content-length"] == str(VIEWS.stat().st_size)
    assert "attachment" in response.headers["content-disposition"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload(django_wsgi, chunked):
    body = bytes(range(256)) * 8192  # 2 MiB
    content = (body[i:i + 100_000] for i in range(0, len(body), 100_000)) if chunked else body
    response = httpx.post(django_wsgi.url + "/wsgi/upload/", content=content, timeout=30)
    result = response.json()
    assert result["length"] == len(body)
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["content_length"] == str(len(body))


def test_meta(django_wsgi):
    response = httpx.get(django_wsgi.url + "/meta/?a=1", headers={"X-Custom": "v"}, timeout=10)
    meta = response.json()
    assert meta["path"] == "/meta/"
    assert meta["GET"] == {"a": ["1"]}
    assert meta["HTTP_X_CUSTOM"] == "v"
    assert meta["REMOTE_ADDR"] == "127.0.0.1"
    assert meta["scheme"] == "http"


def test_root_path(serve):
    running = serve(APP, "--root-path", "/app", env=ENV)
    meta = httpx.get(running.url + "/app/meta/x", timeout=10).json()
    assert meta["script_name"] == "/app"
    assert meta["path"] == "/app/meta/x"
    assert meta["path_info"] == "/meta/x"


def test_view_error_is_a_500_and_serving_goes_on(django_wsgi):
    response = httpx.get(django_wsgi.url + "/boom/", timeout=10)
    assert response.status_code == 500
    # Django answers the 500 itself (and logs through its own, here silent, logging).
    assert httpx.get(django_wsgi.url + "/sync/", timeout=10).status_code == 200
