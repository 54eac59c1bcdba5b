"""--reload: an edited file restarts the worker; a broken file keeps the supervisor up."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest
from conftest import env_without_bivio

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
    # No "serving on" yet: the banner waits for a worker that is ready.
    server = serve("devapp3:app", "--reload", "--app-dir", str(tmp_path), wait=False)
    assert wait_until(lambda: "RuntimeError: not yet" in server.output), server.output
    assert wait_until(lambda: "Waiting for a file change" in server.output), server.output
    assert server.proc.poll() is None
    assert "serving on" not in server.output
    write_app(app, b"fixed")
    server.wait_ready()
    assert serves(server, b"fixed"), server.output


# -- Django: views are imported before a new worker counts as ready ---------------------------

DJANGO_FILES = {
    "__init__.py": "",
    "settings.py": (
        "SECRET_KEY = 'reload-test'\nDEBUG = False\nALLOWED_HOSTS = ['*']\n"
        "ROOT_URLCONF = 'devsite.urls'\nINSTALLED_APPS = []\nMIDDLEWARE = []\nDATABASES = {}\n"
    ),
    "urls.py": "from django.urls import path\n\nfrom . import views\n\n"
               "urlpatterns = [path('', views.index)]\n",
    "asgi.py": "import os\n\nfrom django.core.asgi import get_asgi_application\n\n"
               "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'devsite.settings')\n"
               "application = get_asgi_application()\n",
}
VIEWS_TEMPLATE = '''from django.http import HttpResponse


def index(request):
    return HttpResponse({body!r}, content_type="text/plain")
'''
BROKEN_VIEWS = "from django.http import HttpResponse\n\n\ndef index(request)\n    return 1\n"


def django_project(tmp_path, views: str):
    site = tmp_path / "devsite"
    site.mkdir()
    for name, text in DJANGO_FILES.items():
        (site / name).write_text(text)
    (site / "views.py").write_text(views)
    return site


def test_reload_keeps_the_old_django_worker_when_a_lazily_imported_view_breaks(serve, tmp_path):
    pytest.importorskip("django")
    site = django_project(tmp_path, VIEWS_TEMPLATE.format(body="v1"))
    server = serve("devsite.asgi:application", "--reload", "--app-dir", str(tmp_path),
                   env={"DJANGO_SETTINGS_MODULE": "devsite.settings"})
    assert serves(server, b"v1"), server.output

    # Django imports views.py on the first request, not at get_asgi_application(): without
    # the URLconf check this new worker would be "ready" and answer every request with a 500.
    (site / "views.py").write_text(BROKEN_VIEWS)
    assert wait_until(lambda: "Waiting for a file change" in server.output), server.output
    assert ("Django URLconf 'devsite.urls' does not load: SyntaxError" in server.output), \
        server.output
    assert body(server) == b"v1"  # the old worker still serves the last good code
    assert len(re.findall(r"Worker \[\d+\] ready", server.output)) == 1

    (site / "views.py").write_text(VIEWS_TEMPLATE.format(body="v22"))
    assert serves(server, b"v22"), server.output
    assert server.stop() == 0


def test_a_django_app_with_a_broken_view_does_not_start(tmp_path):
    pytest.importorskip("django")
    django_project(tmp_path, BROKEN_VIEWS)
    env = env_without_bivio()
    env["DJANGO_SETTINGS_MODULE"] = "devsite.settings"
    result = subprocess.run([sys.executable, "-m", "bivio", "devsite.asgi:application",
                             "--port", "0", "--app-dir", str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bivio: error: Django URLconf 'devsite.urls' does not load: "
                               "SyntaxError"), lines
    assert "views.py" in lines[0]
