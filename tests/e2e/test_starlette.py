"""Starlette apps end to end: anyio needs every request to run inside a real Task."""

import httpx
import pytest


@pytest.mark.parametrize("app", ["plain", "withmw"])
def test_starlette_routes(serve, app):
    server = serve(f"tests.apps.starlette_app:{app}")
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/").text == "hi"
        assert client.get("/ct").text == "True"
        assert client.get("/tg").text == "tg ok"
        response = client.get("/s")
        assert response.text == "ab"
        if app == "withmw":
            assert response.headers["x-mw"] == "1"
    assert "Traceback" not in server.output
