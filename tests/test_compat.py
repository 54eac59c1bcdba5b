"""A drop-in for uvicorn's and gunicorn's command lines (README: "Swap uvicorn for bivio").

Every flag uvicorn 0.54 has is accepted with the same meaning, or refused with
one line (exit 2) saying why and what to use; gunicorn's everyday spellings
(``-w``, ``-b``/``--bind``, ``--access-logfile``, ``--error-logfile``,
``--pid``) work. The long command line at the end is a real uvicorn one: bivio
serves it, and when the benchmark peers (``bench/.venv-peers``) are installed,
uvicorn itself runs it too and both answer alike.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from conftest import ROOT, Running, free_port, start_bivio, wait_until
from test_cli import assert_one_error_line, clean_env, run_cli

from bivio.cli import build_parser, uvicorn_spellings
from bivio.core.config import OPTIONS_BY_NAME, Config, ConfigError, parse_bind
from bivio.core.envfile import EnvFileError, parse_env, read_env_file

UVICORN = ROOT / "bench" / ".venv-peers" / "bin" / "uvicorn"

# `uvicorn --help` of uvicorn 0.54.0, every flag (both forms of the on/off ones).
UVICORN_054_FLAGS = (
    "--host", "--port", "--uds", "--fd", "--reload", "--reload-dir", "--reload-include",
    "--reload-exclude", "--reload-delay", "--workers", "--loop", "--http", "--http2", "--ws",
    "--ws-max-size", "--ws-max-queue", "--ws-ping-interval", "--ws-ping-timeout",
    "--ws-per-message-deflate", "--lifespan", "--interface", "--env-file", "--log-config",
    "--log-level", "--access-log", "--no-access-log", "--use-colors", "--no-use-colors",
    "--proxy-headers", "--no-proxy-headers", "--server-header", "--no-server-header",
    "--date-header", "--no-date-header", "--forwarded-allow-ips", "--root-path",
    "--limit-concurrency", "--backlog", "--limit-max-requests", "--limit-max-requests-jitter",
    "--timeout-keep-alive", "--timeout-graceful-shutdown", "--timeout-worker-healthcheck",
    "--ssl-keyfile", "--ssl-certfile", "--ssl-keyfile-password", "--ssl-version",
    "--ssl-cert-reqs", "--ssl-ca-certs", "--ssl-ciphers", "--header", "--version", "--app-dir",
    "--h11-max-incomplete-event-size", "--reset-contextvars", "--factory", "--help",
)


def config_of(*argv: str, env: dict[str, str] | None = None) -> Config:
    """What bivio makes of a command line (the CLI's own parsing, in-process)."""
    args = vars(build_parser().parse_args(uvicorn_spellings(argv)))
    args.pop("app")
    return Config.from_options(args, env=env or {})




# -- every uvicorn flag is known ------------------------------------------------------------


def test_every_uvicorn_flag_is_a_bivio_flag():
    known = build_parser()._option_string_actions
    missing = [flag for flag in UVICORN_054_FLAGS if flag not in known]
    assert missing == []


@pytest.mark.skipif(not UVICORN.exists(), reason="bench/.venv-peers is not installed")
def test_the_flag_list_is_uvicorns():
    """The list above is what the installed uvicorn 0.54 offers, no more, no less."""
    result = subprocess.run([str(UVICORN), "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "200"})
    version = subprocess.run([str(UVICORN), "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    assert version.startswith("Running uvicorn 0.54."), version
    flags = set(re.findall(r"^\s+(--[a-z0-9-]+)(?: / (--[a-z0-9-]+))?", result.stdout, re.M))
    assert {f for pair in flags for f in pair if f} == set(UVICORN_054_FLAGS)


# Each uvicorn flag with a value, and what bivio then does: the same meaning.
SAME_MEANING: list[tuple[list[str], dict[str, Any]]] = [
    (["--host", "0.0.0.0", "--port", "9000"], {"host": "0.0.0.0", "port": 9000}),
    (["--uds", "/tmp/app.sock"], {"uds": "/tmp/app.sock"}),
    (["--fd", "3"], {"fd": 3}),
    (["--reload", "--reload-dir", "src", "--reload-include", "*.html", "--reload-exclude",
      "tmp*", "--reload-delay", "0.25"],
     {"reload": True, "reload_dir": ("src",), "reload_include": ("*.html",),
      "reload_exclude": ("tmp*",), "reload_delay": 0.25}),
    (["--workers", "3"], {"workers": 3}),
    (["--loop", "asyncio"], {"loop": "asyncio"}),
    (["--loop", "uvloop"], {"loop": "uvloop"}),
    (["--http", "auto"], {"http": "auto"}),
    (["--http", "httptools"], {"http": "h1"}),  # uvicorn: HTTP/1.1 by httptools
    (["--http", "zttp"], {"http": "h1"}),
    (["--http", "zttp", "--http2"], {"http": "auto"}),  # uvicorn: HTTP/1.1 and HTTP/2
    (["--http2"], {"http": "auto"}),
    (["--ws", "websockets"], {"ws": "websockets"}),
    (["--ws", "websockets-sansio"], {"ws": "websockets-sansio"}),
    (["--ws", "wsproto"], {"ws": "wsproto"}),
    (["--ws", "none"], {"ws": "none"}),
    (["--ws-max-size", "1000000", "--ws-max-queue", "32", "--ws-ping-interval", "5",
      "--ws-ping-timeout", "6"],
     {"ws_max_size": 1000000, "ws_max_queue": 32, "ws_ping_interval": 5.0,
      "ws_ping_timeout": 6.0}),
    (["--ws-per-message-deflate", "false"], {"ws_per_message_deflate": False}),
    (["--ws-per-message-deflate", "True"], {"ws_per_message_deflate": True}),
    (["--ws-per-message-deflate=0"], {"ws_per_message_deflate": False}),
    (["--lifespan", "off", "--interface", "asgi2"], {"lifespan": "off", "interface": "asgi2"}),
    (["--env-file", "{env_file}"], {"env_file": "{env_file}"}),
    (["--log-config", "logging.ini", "--log-level", "trace"],
     {"log_config": "logging.ini", "log_level": "trace"}),
    (["--no-access-log", "--use-colors"], {"access_log": False, "use_colors": True}),
    (["--access-log", "--no-use-colors"], {"access_log": True, "use_colors": False}),
    (["--no-proxy-headers", "--no-server-header", "--no-date-header"],
     {"proxy_headers": False, "server_header": False, "date_header": False}),
    (["--proxy-headers", "--server-header", "--date-header", "--forwarded-allow-ips", "*"],
     {"proxy_headers": True, "server_header": True, "date_header": True,
      "trusted_proxies": ("*",)}),
    (["--root-path", "/api"], {"root_path": "/api"}),
    (["--limit-concurrency", "10", "--backlog", "64"], {"limit_concurrency": 10, "backlog": 64}),
    (["--limit-max-requests", "100", "--limit-max-requests-jitter", "10"],
     {"limit_max_requests": 100, "limit_max_requests_jitter": 10}),
    (["--timeout-keep-alive", "7", "--timeout-graceful-shutdown", "3",
      "--timeout-worker-healthcheck", "9"],
     {"timeout_keep_alive": 7.0, "timeout_graceful_shutdown": 3.0,
      "timeout_worker_healthcheck": 9.0}),
    (["--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem", "--ssl-keyfile-password", "pw",
      "--ssl-version", "17", "--ssl-cert-reqs", "2", "--ssl-ca-certs", "ca.pem",
      "--ssl-ciphers", "ECDHE+AESGCM"],
     {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem", "ssl_keyfile_password": "pw",
      "ssl_version": 17, "ssl_cert_reqs": "required", "ssl_ca_certs": "ca.pem",
      "ssl_ciphers": "ECDHE+AESGCM"}),
    (["--ssl-certfile", "c.pem", "--ssl-version", "2"], {"ssl_version": 2}),
    (["--header", "x-a:1", "--header", "x-b: 2"],
     {"extra_headers": ((b"x-a", b"1"), (b"x-b", b"2"))}),
    (["--app-dir", "src", "--factory"], {"app_dir": "src", "factory": True}),
    (["--h11-max-incomplete-event-size", "4096"], {"h11_max_incomplete_event_size": 4096}),
    (["--reset-contextvars"], {"reset_contextvars": True}),
]


@pytest.mark.parametrize(("argv", "expected"), SAME_MEANING,
                         ids=[" ".join(a)[:60] for a, _ in SAME_MEANING])
def test_uvicorn_flags_keep_their_meaning(tmp_path, argv, expected):
    env_file = tmp_path / ".env"
    env_file.write_text("X=1\n")
    argv = [a.replace("{env_file}", str(env_file)) for a in argv]
    config = config_of(*argv, "app:app")
    for name, value in expected.items():
        if isinstance(value, str):
            value = value.replace("{env_file}", str(env_file))
        assert getattr(config, name) == value, name


def test_every_uvicorn_flag_is_exercised_above():
    used = {a.split("=")[0] for argv, _ in SAME_MEANING for a in argv if a.startswith("--")}
    not_tried = set(UVICORN_054_FLAGS) - used - {"--help", "--version"}
    assert not_tried == set()


def test_http_httptools_says_what_it_means():
    config = config_of("--http", "httptools")
    assert config.http == "h1"
    assert config.notes and "HTTP/1.1 only" in config.notes[0]
    assert config_of("--http", "h1").notes == ()


def test_no_http2_means_http11_only():
    assert config_of("--no-http2").http == "h1"
    assert config_of("--http2", "--http", "h2").http == "h2"


# -- what cannot apply: one line, exit 2 ------------------------------------------------------


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--http", "h11"], {}, "--http h11: bivio has no h11 implementation (its HTTP/1.1 "
                            "parser is httptools): use --http h1"),
    ([], {"BIVIO_HTTP": "h11"}, "BIVIO_HTTP=h11: bivio has no h11 implementation"),
    (["--loop", "zuvloop"], {}, "--loop zuvloop: bivio does not run on zuvloop: use uvloop"),
    (["--ssl-version", "5"], {}, "--ssl-version: 5 cannot apply: bivio negotiates TLS 1.2 or "
                                 "1.3"),
    (["--http2", "--http", "h1"], {}, "--http2: --http h1 serves HTTP/1.1 only"),
    (["--no-http2", "--http", "h2"], {}, "--no-http2: --http h2 serves HTTP/2 only"),
    (["-b", "127.0.0.1:8001", "-b", "127.0.0.1:8001"], {},
     "--bind: '127.0.0.1:8001' given twice"),
    (["--bind", "127.0.0.1:8001", "--port", "8002"], {}, "--bind and --port: choose one"),
    (["--bind", "::1:8000"], {}, "--bind: an IPv6 address goes in brackets: [::1]:8000"),
    (["--bind", "host:http"], {}, "--bind port: expected an integer, got 'http'"),
    (["--env-file", "/no/such/.env"], {}, "--env-file: cannot read /no/such/.env"),
    (["--log-config", "/no/such/logging.ini"], {}, "--log-config: cannot read"),
    (["--log-config", "/no/such/logging.yaml"], {}, "--log-config: "),
    (["--pid", "/no/such/dir/bivio.pid"], {}, "--pid: cannot write /no/such/dir/bivio.pid"),
    (["--access-logfile", "/no/such/dir/access.log"], {},
     "--access-logfile: cannot open /no/such/dir/access.log"),
    (["--error-logfile", "/no/such/dir/error.log"], {},
     "--error-logfile: cannot open /no/such/dir/error.log"),
    (["--ws-per-message-deflate=maybe"], {}, "--ws-per-message-deflate"),
])
def test_what_cannot_apply_is_refused_in_one_line(args, env, expected):
    port = [] if {"-b", "--bind"} & set(args) else ["--port", "0"]
    result = run_cli("tests.apps.basic:app", *port, *args, env=env)
    line = assert_one_error_line(result, 2)
    assert line.startswith("bivio: error: "), line
    assert expected in line, line


def test_a_bad_env_file_line_is_named(tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("GOOD=1\nthis is not a binding\n")
    result = run_cli("tests.apps.basic:app", "--env-file", str(env_file))
    line = assert_one_error_line(result, 2)
    assert f"--env-file: {env_file} line 2: expected KEY=VALUE" in line, line


# -- --bind ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:9000", {"host": "127.0.0.1", "port": 9000}),
    ("0.0.0.0", {"host": "0.0.0.0", "port": 8000}),
    (":9000", {"host": "0.0.0.0", "port": 9000}),
    ("[::1]:9000", {"host": "::1", "port": 9000}),
    ("[::]", {"host": "::", "port": 8000}),
    ("tcp://localhost:9000", {"host": "localhost", "port": 9000}),
    ("unix:/run/app.sock", {"uds": "/run/app.sock"}),
    ("unix:///run/app.sock", {"uds": "/run/app.sock"}),
    ("fd://3", {"fd": 3}),
])
def test_bind_addresses_as_gunicorn_reads_them(address, expected):
    assert parse_bind(address) == expected
    config = config_of("--bind", address)
    for name, value in expected.items():
        assert getattr(config, name) == value


def test_bind_from_the_environment_and_short_flag():
    assert config_of(env={"BIVIO_BIND": "127.0.0.2:9001"}).port == 9001
    assert config_of("-b", "unix:/tmp/x.sock").uds == "/tmp/x.sock"
    assert config_of("-w", "4").workers == 4


# -- --env-file -----------------------------------------------------------------------------


def test_env_file_syntax_as_python_dotenv():
    text = (
        "# a comment\n"
        "export A=1\n"
        "B = two words  # comment\n"
        "C=\"quoted # not comment\"\n"
        "D='single \\' quote \\\\ back \\n kept'\n"
        "E=\"esc \\n new \\t tab \\\" q\"\n"
        "F=${A}-${NOPE:-dflt}-${FROM_ENV}\n"
        "G=#value\n"
        "H= # comment only\n"
        "I\n"
        "J=\"multi\nline\"\n"
        "'K'=k\n"
        "L=\n"
        "M=a#b\n"
        "  N=indented\n"
    )
    assert parse_env(text, {"FROM_ENV": "env"}) == {
        "A": "1", "B": "two words", "C": "quoted # not comment",
        "D": "single ' quote \\ back \\n kept", "E": "esc \n new \t tab \" q",
        "F": "1-dflt-env", "G": "#value", "H": "", "J": "multi\nline", "K": "k", "L": "",
        "M": "a#b", "N": "indented",
    }


@pytest.mark.parametrize(("text", "line"), [
    ("A=1\nnot a binding\n", 2),
    ("A=\"unterminated\n", 1),
    ("A='x' trailing\n", 1),
    ("=value\n", 1),
])
def test_env_file_errors_name_the_line(text, line):
    with pytest.raises(EnvFileError, match=f"line {line}: expected KEY=VALUE"):
        parse_env(text, {})


def test_env_file_variables_set_options_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("BIVIO_PORT=8123\nBIVIO_HOST=127.0.0.9\n")
    config = Config.from_options({"env_file": str(env_file)}, env={"BIVIO_HOST": "::1"})
    assert (config.port, config.host) == (8123, "::1")
    config = Config.from_options({}, env={"BIVIO_ENV_FILE": str(env_file)})
    assert config.port == 8123
    with pytest.raises(ConfigError, match="--env-file: cannot read"):
        Config.from_options({"env_file": str(tmp_path / "missing")}, env={})
    assert read_env_file(str(env_file)) == {"BIVIO_PORT": "8123", "BIVIO_HOST": "127.0.0.9"}


# -- the long uvicorn command line ------------------------------------------------------------


COMPAT_APP = '''
import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = True
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close"})
        return
    body = json.dumps({
        "root_path": scope["root_path"], "client": scope["client"][0],
        "scheme": scope["scheme"], "secret": os.environ.get("COMPAT_SECRET"),
        "started": scope["state"].get("started"),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''

UVICORN_COMMAND_LINE = (
    "compatapp:app --host 127.0.0.1 --port {port} --workers 1 --loop uvloop --http httptools "
    "--ws websockets --lifespan on --env-file {env_file} --log-level debug --no-access-log "
    "--use-colors --proxy-headers --forwarded-allow-ips * --root-path /x "
    "--limit-concurrency 100 --backlog 100 --timeout-keep-alive 5 "
    "--timeout-graceful-shutdown 5 --header x-a:b --reload-delay 0.25 --ws-max-size 1000000 "
    "--ws-max-queue 32 --ws-ping-interval 20 --ws-ping-timeout 20 "
    "--ws-per-message-deflate true --app-dir {app_dir}"
)


def exercise(base: str) -> tuple[dict[str, Any], str, str]:
    """One request through the proxy headers, and one WebSocket message."""
    from websockets.sync.client import connect

    response = httpx.get(base + "/x/hello", timeout=10,
                         headers={"x-forwarded-for": "203.0.113.7",
                                  "x-forwarded-proto": "https"})
    assert response.status_code == 200, response.text
    with connect(base.replace("http://", "ws://") + "/x/ws", open_timeout=10) as ws:
        ws.send("hi")
        echoed = ws.recv(timeout=10)
    return response.json(), response.headers.get("x-a", ""), echoed


@pytest.fixture
def compat_dir(tmp_path):
    (tmp_path / "compatapp.py").write_text(COMPAT_APP)
    (tmp_path / "compat.env").write_text("# for the app\nexport COMPAT_SECRET='from the file'\n")
    return tmp_path


def test_a_long_uvicorn_command_line_serves(compat_dir):
    words = UVICORN_COMMAND_LINE.format(port=0, env_file=compat_dir / "compat.env",
                                        app_dir=compat_dir).split()
    running = start_bivio(*words)
    try:
        got, header, echoed = exercise(running.url)
        assert got == {"root_path": "/x", "client": "203.0.113.7", "scheme": "https",
                       "secret": "from the file", "started": True}
        assert header == "b"
        assert echoed == "echo hi"
        output = running.output
        assert "\x1b[32mINFO\x1b[0m" in output  # --use-colors
        assert '"GET /x/hello' not in output  # --no-access-log
        assert "(HTTP/1.1): ASGI, uvloop, 1 worker " in output  # --http httptools, --workers 1
        running.signal(signal.SIGTERM)
        assert running.proc.wait(30) == 0
    finally:
        running.stop()


@pytest.mark.skipif(not UVICORN.exists(), reason="bench/.venv-peers is not installed")
def test_uvicorn_runs_the_same_command_line_alike(compat_dir):
    """The command line is a real uvicorn one: uvicorn answers exactly as bivio did."""
    port = free_port()
    words = UVICORN_COMMAND_LINE.format(port=port, env_file=compat_dir / "compat.env",
                                        app_dir=compat_dir).split()
    env = clean_env()
    env.pop("COMPAT_SECRET", None)
    proc = subprocess.Popen([str(UVICORN), *words], cwd=str(compat_dir), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running = Running(proc, words)
    try:
        assert wait_until(lambda: "Application startup complete" in running.output
                          or proc.poll() is not None), running.output
        got, header, echoed = exercise(f"http://127.0.0.1:{port}")
        assert got == {"root_path": "/x", "client": "203.0.113.7", "scheme": "https",
                       "secret": "from the file", "started": True}
        assert (header, echoed) == ("b", "echo hi")
    finally:
        running.stop()


# -- gunicorn's spellings -------------------------------------------------------------------


def test_gunicorn_spellings_serve(tmp_path):
    access, errors, pidfile = tmp_path / "access.log", tmp_path / "error.log", tmp_path / "pid"
    running = start_bivio("tests.apps.basic:app", "-w", "1", "-b", "127.0.0.1:0",
                          "--access-logfile", str(access), "--error-logfile", str(errors),
                          "--pid", str(pidfile), wait=False)
    try:
        assert wait_until(lambda: "serving on" in (errors.read_text() if errors.exists()
                                                   else "")), running.output
        url = re.search(r"serving on (\S+)", errors.read_text())[1]
        assert httpx.get(url + "/gunicorn").status_code == 200
        assert pidfile.read_text() == f"{running.proc.pid}\n"  # the supervisor's
        assert wait_until(lambda: '"GET /gunicorn HTTP/1.1" 200' in access.read_text())
        assert "serving on" not in access.read_text()
        running.signal(signal.SIGTERM)
        assert running.proc.wait(30) == 0
    finally:
        running.stop()
    assert not pidfile.exists()  # removed on exit
    assert "Shutdown complete" in errors.read_text()
    assert "serving on" not in running.output  # the server log went to the file


def test_access_logfile_dash_is_stdout(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bivio", "tests.apps.basic:app", "--port", "0",
         "--access-logfile", "-"],
        cwd=str(ROOT), env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    running = Running(proc, [])  # reads stdout: where the access log goes
    try:
        errors = proc.stderr
        assert errors is not None
        line = errors.readline()
        url = re.search(r"serving on (\S+)", line)[1]
        assert httpx.get(url + "/dash").status_code == 200
        assert wait_until(lambda: '"GET /dash HTTP/1.1" 200' in running.output)
    finally:
        running.stop()


def test_bind_a_unix_socket(tmp_path):
    path = tmp_path / "app.sock"
    running = start_bivio("tests.apps.basic:app", "--bind", f"unix:{path}")
    try:
        assert running.url == f"unix:{path}"
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport) as client:
            assert client.get("http://bivio/unix").status_code == 200
    finally:
        running.stop()


# -- --log-config -----------------------------------------------------------------------------


def test_log_config_json_routes_bivio_logs(tmp_path):
    log = tmp_path / "server.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tagged": {"format": "TAGGED %(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log),
                              "formatter": "tagged"}},
        "loggers": {"bivio.error": {"handlers": ["file"], "level": "INFO"}},
    }
    (tmp_path / "logging.json").write_text(json.dumps(config))
    running = start_bivio("tests.apps.basic:app", "--log-config",
                          str(tmp_path / "logging.json"), wait=False)
    try:
        assert wait_until(lambda: log.exists() and "serving on" in log.read_text())
        assert re.search(r"^TAGGED INFO bivio \S+ serving on http://", log.read_text(), re.M)
        assert "serving on" not in running.output  # no handler of bivio's own besides
    finally:
        running.stop()


def test_log_config_ini(tmp_path):
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root\n\n[handlers]\nkeys=out\n\n[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=INFO\nhandlers=out\n\n"
        "[handler_out]\nclass=StreamHandler\nformatter=plain\nargs=(sys.stdout,)\n\n"
        "[formatter_plain]\nformat=INI %(name)s %(message)s\n")
    running = start_bivio("tests.apps.basic:app", "--log-config", str(ini))
    try:
        # Only the root logger is configured: bivio's loggers propagate to it.
        assert re.search(r"^INI bivio\.error bivio \S+ serving on ", running.output, re.M)
    finally:
        running.stop()


# -- --reset-contextvars ----------------------------------------------------------------------


RESET_SCRIPT = '''
import contextvars
import sys
import bivio

var = contextvars.ContextVar("var")
var.set("set before serving")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": var.get("unset").encode()})

sys.exit(bivio.run(app, port=0, reset_contextvars=%s))
'''


@pytest.mark.parametrize(("reset", "seen"), [(False, "set before serving"), (True, "unset")])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_reset_contextvars(reset, seen, loop):
    argv = [sys.executable, "-c", RESET_SCRIPT % reset]
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=clean_env({"BIVIO_LOOP": loop}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running = Running(proc, argv)
    try:
        running.wait_ready()
        assert httpx.get(running.url + "/").text == seen
    finally:
        running.stop()


# -- --ws-max-queue and --h11-max-incomplete-event-size (no sockets) ---------------------------


def test_ws_max_queue_is_where_reading_pauses():
    import asyncio

    from fakes import FakeTransport

    from bivio.core.context import ServerContext
    from bivio.protocols.http1 import H1Connection

    request = (b"GET /ws HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
               b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
    frame = b"\x81\x82\x00\x00\x00\x00hi"  # a masked text message (a zero mask)

    async def paused_after(max_queue: int | None) -> int:
        async def handler(stream: Any) -> None:
            ws = stream.open_websocket()
            await ws.accept(None, [])
            await asyncio.Event().wait()  # never receives

        options = {} if max_queue is None else {"ws_max_queue": max_queue}
        ctx = ServerContext(Config(ws_ping_interval=0, **options), handler)
        t = FakeTransport()
        t.connect(H1Connection(ctx))
        t.feed(request)
        for _ in range(20):
            await asyncio.sleep(0)
        assert t.take().startswith(b"HTTP/1.1 101 ") and t.reading
        for count in range(1, 100):
            t.feed(frame)
            if not t.reading:
                return count
        return 0

    assert asyncio.run(paused_after(3)) == 3
    assert asyncio.run(paused_after(None)) == OPTIONS_BY_NAME["ws_max_queue"].default == 16


@pytest.mark.parametrize(("cap", "status"), [(None, b""), (1024, b"HTTP/1.1 431 ")])
def test_h11_max_incomplete_event_size_caps_a_head_in_progress(cap, status):
    import asyncio

    from fakes import FakeTransport

    from bivio.core.context import ServerContext
    from bivio.protocols.http1 import H1Connection

    async def go() -> bytes:
        options = {} if cap is None else {"h11_max_incomplete_event_size": cap}
        ctx = ServerContext(Config(**options), lambda stream: asyncio.sleep(0))
        t = FakeTransport()
        t.connect(H1Connection(ctx))
        t.feed(b"GET / HTTP/1.1\r\nhost: test\r\nx-big: " + b"a" * 2000)  # no end yet
        await asyncio.sleep(0)
        return t.take()

    written = asyncio.run(go())
    assert written.startswith(status) if status else written == b""
