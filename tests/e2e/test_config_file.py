"""The config file end to end: bivio started in a directory holding bivio.toml."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
from conftest import ROOT, Running, env_without_bivio, free_port, wait_until

APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"from the temp dir"})
'''



def bivio(cwd, *args: str) -> list[str]:
    return [sys.executable, "-m", "bivio", *args]


def environment() -> dict[str, str]:
    env = env_without_bivio()
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT / "src"))
    return env


def start(cwd, *args: str) -> Running:
    """bivio with no --port: the address is the file's."""
    proc = subprocess.Popen(bivio(cwd, *args), cwd=str(cwd), env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running = Running(proc, list(args))
    running.wait_ready()
    return running


def test_bivio_toml_sets_port_and_header(tmp_path):
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "bivio.toml").write_text(
        f'port = {port}\nheader = ["x-from-file: yes"]\nserver-header = false\n')
    server = start(tmp_path, "app:app")
    try:
        assert server.port == port
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert response.text == "from the temp dir"
        assert response.headers["x-from-file"] == "yes"
        assert "server" not in response.headers
    finally:
        server.stop()

    result = subprocess.run(bivio(tmp_path, "--print-config", "--threads", "3"),
                            cwd=str(tmp_path), env={**environment(), "BIVIO_BACKLOG": "99"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf"^port = {port} +# bivio\.toml$", out, re.M), out
    assert re.search(r'^header = \["x-from-file: yes"\] +# bivio\.toml$', out, re.M)
    assert re.search(r"^backlog = 99 +# BIVIO_BACKLOG$", out, re.M)
    assert re.search(r"^threads = 3 +# command line$", out, re.M)
    assert re.search(r'^host = "127.0.0.1" +# default$', out, re.M)


def test_a_bad_file_stops_bivio_before_it_binds(tmp_path):
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "bivio.toml").write_text(f"port = {port}\nworker = 2\n")
    result = subprocess.run(bivio(tmp_path, "app:app"), cwd=str(tmp_path), env=environment(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "bivio.toml: unknown key 'worker' (did you mean 'workers'?)" in result.stderr
    assert "serving" not in result.stdout + result.stderr


def test_sighup_rereads_the_file_for_new_workers(tmp_path):
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    config = tmp_path / "bivio.toml"
    config.write_text(f'port = {port}\nworkers = 1\nheader = ["x-version: 1"]\n')
    server = start(tmp_path, "app:app")

    def version() -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=10).headers.get("x-version")
        except httpx.HTTPError:
            return None

    try:
        assert version() == "1"
        config.write_text(f'port = {port + 1}\nworkers = 1\nheader = ["x-version: 2"]\n')
        server.signal(signal.SIGHUP)
        assert wait_until(lambda: version() == "2"), server.output
        assert 'header: ["x-version: 1"] -> ["x-version: 2"]' in server.output
        # A broken file aborts the reload: the running worker keeps serving.
        config.write_text("prot = 1\n")
        server.signal(signal.SIGHUP)
        assert wait_until(lambda: "Reload aborted: bivio.toml: unknown key 'prot'"
                          in server.output), server.output
        assert version() == "2"
    finally:
        assert server.stop() == 0
