import httpx


def test_hello(serve):
    server = serve("tests.apps.basic:app")
    response = httpx.get(server.url + "/")
    assert response.status_code == 200
    assert response.text == "hello"
    assert response.headers["server"] == "bivio"
    assert "date" in response.headers
