"""WSGI under --workers: the environ says another process may run the same app.

A supervised worker's own options have ``workers`` cleared (it is one worker);
``wsgi.multiprocess`` must still be true there, because its siblings serve the
same app at the same time.
"""

from __future__ import annotations

import httpx

APP = "tests.apps.wsgi_apps:app"
TIMEOUT = 10.0


def environ_of(running) -> dict:
    # A fresh connection per request: whichever worker accepts it answers.
    response = httpx.get(running.url + "/environ", timeout=TIMEOUT,
                         headers={"connection": "close"})
    assert response.status_code == 200, response.text
    return response.json()


def test_wsgi_multiprocess_is_true_under_workers(serve):
    running = serve(APP, "--workers", "2", "--threads", "2")
    for _ in range(4):
        env = environ_of(running)
        assert env["wsgi.multiprocess"] is True
        assert env["wsgi.multithread"] is True
        assert env["wsgi.run_once"] is False
    assert running.stop() == 0


def test_wsgi_multiprocess_is_false_with_one_process(serve):
    running = serve(APP, "--threads", "2")
    assert environ_of(running)["wsgi.multiprocess"] is False
