"""The ``bivio`` command and :func:`bivio.run`, each in a real subprocess.

Exit codes: 0 clean shutdown, 1 the app could not be loaded or the socket not
bound, 2 invalid options. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Running, start_bivio

import bivio
from bivio.core.config import OPTIONS, ConfigError

SCRIPT = Path(sys.executable).with_name("bivio")

# A module the tests write into a temporary --app-dir. The lifespan marks go to
# $CLI_MARKS so a test can see whether startup and shutdown ran.
APP_MODULE = '''
import os

NUMBER = 42


def _mark(text):
    path = os.environ.get("CLI_MARKS")
    if path:
        with open(path, "a") as f:
            f.write(text + "\\n")


async def respond(send, body):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _mark("startup")
                await send({"type": "lifespan.startup.complete"})
            else:
                _mark("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await respond(send, b"asgi3 " + scope["path"].encode())


class Legacy:
    """An ASGI 2 (double callable) application."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            raise ValueError("http only")
        await respond(send, b"asgi2 " + self.scope["path"].encode())


def create_app():
    async def made(scope, receive, send):
        if scope["type"] != "http":
            return
        await respond(send, b"made by factory")
    return made


def create_raises():
    raise RuntimeError("factory failed: no DATABASE_URL")


def two_args(scope, receive):
    pass


async def async_two_args(scope, receive):
    pass
'''


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("BIVIO_") or k == "BIVIO_NO_EXTENSIONS")
           and k != "FORWARDED_ALLOW_IPS"}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | str = ROOT,
            script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run bivio to completion: these invocations must exit on their own."""
    argv = [str(SCRIPT)] if script else [sys.executable, "-m", "bivio"]
    return subprocess.run([*argv, *args], cwd=str(cwd), env=clean_env(env),
                          capture_output=True, text=True, timeout=60)


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "serving on" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture
def app_dir(tmp_path):
    directory = tmp_path / "apps"
    directory.mkdir()
    (directory / "cliapp.py").write_text(APP_MODULE)
    return directory


# -- --version and --help ---------------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["python -m bivio", "bivio script"])
def test_version(script):
    result = run_cli("--version", script=script)
    assert result.returncode == 0
    assert result.stdout.strip() == f"bivio {bivio.__version__}"


@pytest.mark.parametrize("script", [False, True], ids=["python -m bivio", "bivio script"])
def test_help_lists_every_option(script):
    result = run_cli("--help", script=script)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("usage: bivio")
    assert "MODULE:ATTR" in text
    assert "--version" in text
    for option in OPTIONS:
        assert option.flag in text, option.flag
        assert option.env in text, option.env
        if option.kind == "bool":
            assert "--no-" + option.flag[2:] in text, option.flag
        for choice in option.choices:
            if choice not in dict(option.refused):  # refused values are not offered
                assert choice in text, (option.flag, choice)


# -- invalid options: one line, exit 2 -------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["--port", "abc"], "--port: expected an integer, got 'abc'"),
    (["--port", "70000"], "--port: must be at most 65535"),
    (["--lifespan", "sometimes"], "--lifespan: expected one of auto, on, off, got 'sometimes'"),
    (["--limit-request-body", "-1"], "--limit-request-body: must be at least 0, got '-1'"),
    (["--log-level", "loud"], "--log-level: expected one of"),
    (["--timeout-keep-alive", "soon"], "--timeout-keep-alive: expected a number"),
    (["--header", "no colon"], "--header: expected NAME:VALUE"),
    (["--forwarded-allow-ips", "proxy.example"], "--forwarded-allow-ips: 'proxy.example'"),
    (["--root-path", "api"], "--root-path: must start with '/'"),
    (["--uds", "/tmp/x.sock", "--fd", "3"], "--uds and --fd"),
    (["--factory=yes"], "--factory"),
    (["--prot", "8000"], "unrecognized arguments: --prot"),
])
def test_invalid_option(args, expected):
    result = run_cli("tests.apps.basic:app", *args)
    line = assert_one_error_line(result, 2)
    assert line.startswith("bivio: error: "), line
    assert expected in line, line
    assert result.stdout == ""


def test_missing_option_value():
    line = assert_one_error_line(run_cli("tests.apps.basic:app", "--port"), 2)
    assert line.startswith("bivio: error: ") and "--port" in line


def test_missing_app():
    line = assert_one_error_line(run_cli("--port", "0"), 2)
    assert line.startswith("bivio: error: ") and "MODULE:ATTR" in line


@pytest.mark.parametrize(("env", "expected"), [
    ({"BIVIO_PORT": "abc"}, "BIVIO_PORT: expected an integer, got 'abc'"),
    ({"BIVIO_ACCESS_LOG": "maybe"}, "BIVIO_ACCESS_LOG: expected true or false, got 'maybe'"),
    ({"BIVIO_LIFESPAN": "sometimes"}, "BIVIO_LIFESPAN: expected one of"),
    ({"BIVIO_LIMIT_REQUEST_BODY": "-1"}, "BIVIO_LIMIT_REQUEST_BODY: must be at least 0"),
    ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY: expected an integer, got 'many'"),
])
def test_invalid_environment_value(env, expected):
    result = run_cli("tests.apps.basic:app", env=env)
    line = assert_one_error_line(result, 2)
    assert line.startswith("bivio: error: ") and expected in line, line


@pytest.mark.parametrize("script", [False, True], ids=["python -m bivio", "bivio script"])
def test_invalid_option_same_through_console_script(script):
    result = run_cli("tests.apps.basic:app", "--port", "abc", script=script)
    line = assert_one_error_line(result, 2)
    assert line == "bivio: error: --port: expected an integer, got 'abc' (see bivio --help)"


# -- the app cannot be loaded: one line, exit 1 ----------------------------------------------


@pytest.mark.parametrize(("target", "args", "expected"), [
    ("no_such_module_anywhere:app", [],
     "could not import module 'no_such_module_anywhere': no such module"),
    ("cliapp:missing", [], "module 'cliapp' has no attribute 'missing'"),
    ("cliapp:NUMBER", [], "int object is not an ASGI application (not callable)"),
    # (a sync two_args(a, b) is a WSGI app: tests/test_wsgi.py covers its detection)
    ("cliapp:async_two_args", [],
     "async_two_args is not an ASGI application: it takes 2 positional"),
    ("cliapp", [], 'app must be given as "MODULE:ATTRIBUTE"'),
    ("cliapp:create_raises", ["--factory"],
     "the app factory raised RuntimeError: factory failed: no DATABASE_URL"),
    ("cliapp:NUMBER", ["--factory"], "--factory: the target is not callable"),
    ("cliapp:create_app", [], "create_app is not an ASGI application: it takes 0 positional"),
])
def test_load_error(app_dir, target, args, expected):
    result = run_cli(target, "--app-dir", str(app_dir), "--port", "0", *args)
    line = assert_one_error_line(result, 1)
    assert line.startswith("bivio: error: "), line
    assert expected in line, line


def test_module_raising_at_import(app_dir):
    (app_dir / "raiser.py").write_text("x = 1\nraise RuntimeError('settings are broken')\n")
    result = run_cli("raiser:app", "--app-dir", str(app_dir), "--port", "0")
    line = assert_one_error_line(result, 1)
    assert line.startswith("bivio: error: error while importing 'raiser': "
                           "RuntimeError: settings are broken"), line
    assert "raiser.py:2" in line


def test_module_with_missing_dependency(app_dir):
    (app_dir / "needsdep.py").write_text("import not_installed_dependency_xyz\napp = None\n")
    result = run_cli("needsdep:app", "--app-dir", str(app_dir), "--port", "0")
    line = assert_one_error_line(result, 1)
    assert line.startswith("bivio: error: error while importing 'needsdep': "
                           "ModuleNotFoundError"), line
    assert "not_installed_dependency_xyz" in line


def test_module_with_syntax_error(app_dir):
    (app_dir / "broken.py").write_text("def oops(:\n    pass\n")
    line = assert_one_error_line(
        run_cli("broken:app", "--app-dir", str(app_dir), "--port", "0"), 1)
    assert line.startswith("bivio: error: error while importing 'broken': SyntaxError"), line


def test_module_with_multiline_error_message(app_dir):
    (app_dir / "wordy.py").write_text("raise ValueError('line one\\nline two')\n")
    line = assert_one_error_line(
        run_cli("wordy:app", "--app-dir", str(app_dir), "--port", "0"), 1)
    assert "line one" in line and "line two" in line


def test_load_error_through_console_script(app_dir):
    result = run_cli("cliapp:missing", "--app-dir", str(app_dir), script=True)
    line = assert_one_error_line(result, 1)
    assert line == "bivio: error: module 'cliapp' has no attribute 'missing'"


# -- the socket cannot be bound: one line, exit 1 ------------------------------------------


def test_port_in_use(app_dir, tmp_path):
    marks = tmp_path / "marks.txt"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("cliapp:app", "--app-dir", str(app_dir), "--port", str(port),
                         env={"CLI_MARKS": str(marks)})
    line = assert_one_error_line(result, 1)
    assert f"could not bind 127.0.0.1:{port}" in line, line
    assert "in use" in line.lower(), line
    # The app's startup ran; it must be told to shut down again.
    assert marks.read_text().splitlines() == ["startup", "shutdown"]


def test_port_in_use_without_lifespan(app_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("cliapp:app", "--app-dir", str(app_dir), "--port", str(port),
                         "--lifespan", "off")
    line = assert_one_error_line(result, 1)
    assert f"could not bind 127.0.0.1:{port}" in line, line


def test_uds_in_missing_directory(app_dir, tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "bivio.sock"
    result = run_cli("cliapp:app", "--app-dir", str(app_dir), "--uds", str(path))
    line = assert_one_error_line(result, 1)
    assert f"could not bind {path}" in line, line


def test_bad_file_descriptor(app_dir):
    result = run_cli("cliapp:app", "--app-dir", str(app_dir), "--fd", "987")
    line = assert_one_error_line(result, 1)
    assert "could not bind fd 987" in line, line


def test_unknown_host(app_dir):
    result = run_cli("cliapp:app", "--app-dir", str(app_dir), "--host", "host.invalid",
                     "--port", "0")
    line = assert_one_error_line(result, 1)
    assert "could not bind host.invalid:0" in line, line


# -- serving: app dir, factory, ASGI 2 --------------------------------------------------------


def test_app_dir(serve, app_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    running = serve("cliapp:app", "--app-dir", str(app_dir), cwd=elsewhere)
    response = httpx.get(running.url + "/hello")
    assert response.status_code == 200
    assert response.text == "asgi3 /hello"


def test_app_dir_from_environment(serve, app_dir, tmp_path):
    running = serve("cliapp:app", env={"BIVIO_APP_DIR": str(app_dir)}, cwd=tmp_path)
    assert httpx.get(running.url + "/env").text == "asgi3 /env"


def test_app_dir_defaults_to_current_directory(serve, app_dir):
    running = serve("cliapp:app", cwd=app_dir)
    assert httpx.get(running.url + "/cwd").text == "asgi3 /cwd"


def test_without_app_dir_the_module_is_not_found(app_dir, tmp_path):
    line = assert_one_error_line(run_cli("cliapp:app", "--port", "0", cwd=tmp_path), 1)
    # It is in a directory below: the line says which --app-dir finds it.
    assert line == ("bivio: error: could not import module 'cliapp': no such module; "
                    "apps/cliapp.py exists: try --app-dir apps")


def test_import_error_traceback_at_log_level_debug(tmp_path):
    (tmp_path / "brokenapp.py").write_text("import json\njson.loads('{')\n")
    quiet = run_cli("brokenapp:app", "--port", "0", cwd=tmp_path)
    line = assert_one_error_line(quiet, 1)
    assert line.startswith("bivio: error: error while importing 'brokenapp': JSONDecodeError")
    loud = run_cli("brokenapp:app", "--port", "0", "--log-level", "debug", cwd=tmp_path)
    assert loud.returncode == 1
    assert "Traceback (most recent call last):" in loud.stderr
    assert 'brokenapp.py", line 2, in <module>' in loud.stderr
    assert loud.stderr.count("bivio: error: ") == 1


def test_factory(serve, app_dir):
    running = serve("cliapp:create_app", "--factory", "--app-dir", str(app_dir))
    response = httpx.get(running.url + "/")
    assert response.status_code == 200
    assert response.text == "made by factory"


def test_factory_from_environment(serve, app_dir):
    running = serve("cliapp:create_app", "--app-dir", str(app_dir),
                    env={"BIVIO_FACTORY": "true"})
    assert httpx.get(running.url + "/").text == "made by factory"


def test_asgi2_app(serve, app_dir):
    running = serve("cliapp:Legacy", "--app-dir", str(app_dir))
    response = httpx.get(running.url + "/old/style")
    assert response.status_code == 200
    assert response.text == "asgi2 /old/style"
    assert "Traceback" not in running.output


def test_flags_reach_the_server(serve):
    running = serve("tests.apps.basic:app", "--header", "X-One: 1", "--header", "X-Two:two",
                    "--no-server-header", "--no-access-log")
    response = httpx.get(running.url + "/")
    assert response.headers["x-one"] == "1"
    assert response.headers["x-two"] == "two"
    assert "server" not in response.headers
    assert '"GET / HTTP/1.1"' not in running.output


def test_environment_reaches_the_server(serve):
    running = serve("tests.apps.basic:app",
                    env={"BIVIO_HEADER": "X-One: 1;X-Two: 2", "BIVIO_SERVER_HEADER": "false",
                         "BIVIO_DATE_HEADER": "0"})
    response = httpx.get(running.url + "/")
    assert response.headers["x-one"] == "1"
    assert response.headers["x-two"] == "2"
    assert "server" not in response.headers
    assert "date" not in response.headers


def test_explicit_flag_beats_environment(serve):
    running = serve("tests.apps.basic:app", "--server-header",
                    env={"BIVIO_SERVER_HEADER": "false"})
    assert httpx.get(running.url + "/").headers["server"] == "bivio"


def test_console_script_serves_and_stops(app_dir):
    argv = [str(SCRIPT), "cliapp:app", "--app-dir", str(app_dir), "--port", "0"]
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    running = Running(proc, argv)
    try:
        running.wait_ready()
        assert httpx.get(running.url + "/script").text == "asgi3 /script"
    finally:
        code = running.stop()
    assert code == 0
    assert "Traceback" not in running.output


def test_sigterm_exits_zero_and_runs_lifespan_shutdown(app_dir, tmp_path):
    marks = tmp_path / "marks.txt"
    running = start_bivio("cliapp:app", "--app-dir", str(app_dir),
                          env={"CLI_MARKS": str(marks)})
    try:
        assert httpx.get(running.url + "/").status_code == 200
        running.signal(signal.SIGTERM)
        assert running.proc.wait(30) == 0
    finally:
        running.stop()
    assert marks.read_text().splitlines() == ["startup", "shutdown"]


# -- bivio.run -------------------------------------------------------------------------------


RUN_SCRIPT = '''
import sys
import bivio

events = []

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hello from run"
                await send({"type": "lifespan.startup.complete"})
            else:
                print("lifespan shutdown ran", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["state"]["greeting"].encode()})

code = bivio.run(%s)
print("bivio.run returned", code, flush=True)
sys.exit(code)
'''


def start_run_script(arguments: str, env: dict[str, str] | None = None,
                     cwd: Path | str = ROOT) -> Running:
    source = RUN_SCRIPT % arguments
    argv = [sys.executable, "-c", source]
    proc = subprocess.Popen(argv, cwd=str(cwd), env=clean_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    running = Running(proc, argv)
    running.wait_ready()
    return running


def test_run_serves_an_app_object():
    running = start_run_script("app, port=0, log_level='info', access_log=False")
    try:
        response = httpx.get(running.url + "/")
        assert response.status_code == 200
        assert response.text == "hello from run"
        running.signal(signal.SIGTERM)
        assert running.proc.wait(30) == 0
    finally:
        running.stop()
    output = running.output
    assert "lifespan shutdown ran" in output
    assert "bivio.run returned 0" in output
    assert "Traceback" not in output


def test_run_takes_options_and_environment():
    running = start_run_script("app, port=0, header=['X-From-Run: yes']",
                               env={"BIVIO_SERVER_HEADER": "false"})
    try:
        response = httpx.get(running.url + "/")
        assert response.headers["x-from-run"] == "yes"
        assert "server" not in response.headers
    finally:
        assert running.stop() == 0


def test_run_with_an_import_string(app_dir):
    source = textwrap.dedent(f'''
        import sys
        import bivio
        sys.exit(bivio.run("cliapp:app", port=0, app_dir={str(app_dir)!r}))
    ''')
    argv = [sys.executable, "-c", source]
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    running = Running(proc, argv)
    try:
        running.wait_ready()
        assert httpx.get(running.url + "/via/string").text == "asgi3 /via/string"
    finally:
        assert running.stop() == 0


async def _noop_app(scope, receive, send):
    pass


@pytest.mark.parametrize(("options", "flag"), [
    ({"port": "abc"}, "--port"),
    ({"port": 70000}, "--port"),
    ({"lifespan": "sometimes"}, "--lifespan"),
    ({"limit_request_body": -1}, "--limit-request-body"),
    ({"access_log": "maybe"}, "--access-log"),
])
def test_run_invalid_option_raises_config_error(options, flag):
    with pytest.raises(ConfigError) as info:
        bivio.run(_noop_app, **options)
    assert str(info.value).startswith(flag)
    assert "\n" not in str(info.value)


def test_run_unknown_option_raises_config_error():
    with pytest.raises(ConfigError) as info:
        bivio.run(_noop_app, prot=8000)
    assert "unknown option 'prot'" in str(info.value)


def test_run_load_error_raises():
    # In a subprocess: bivio.run sets up bivio's loggers, which must not leak here.
    source = textwrap.dedent('''
        import bivio
        from bivio.process.loader import LoadError
        try:
            bivio.run("no_such_module_for_run:app", port=0)
        except LoadError as exc:
            print("LoadError:", exc)
    ''')
    result = subprocess.run([sys.executable, "-c", source], cwd=str(ROOT), env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "LoadError: could not import module 'no_such_module_for_run': no such module\n")
    assert result.stderr == ""
