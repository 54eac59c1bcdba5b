"""The config file (bivio.toml, [tool.bivio], --config) and --print-config; JSON log lines."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from bivio import cli
from bivio.core import configfile
from bivio.core.config import OPTIONS, Config, ConfigError
from bivio.core.context import ResponseInfo
from bivio.core.logs import JSONFormatter

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "configuration.md").read_text()


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load(tmp_path: Path, options: dict | None = None, env: dict | None = None):
    return configfile.load(options or {}, env or {}, cwd=str(tmp_path))


# -- finding and reading the file -----------------------------------------------------


def test_no_file_gives_the_defaults(tmp_path):
    config, where = load(tmp_path)
    assert config == Config.from_options({}, {})
    assert set(where.values()) == {"default"}


def test_bivio_toml_in_the_working_directory(tmp_path):
    write(tmp_path, "bivio.toml", 'port = 8123\nheader = ["x-a: 1"]\naccess-log = false\n')
    config, where = load(tmp_path)
    assert (config.port, config.header, config.access_log) == (8123, ("x-a: 1",), False)
    assert config.extra_headers == ((b"x-a", b"1"),)
    assert where["port"] == where["header"] == where["access_log"] == "bivio.toml"
    assert where["host"] == "default"


def test_pyproject_tool_bivio(tmp_path):
    write(tmp_path, "pyproject.toml",
          '[project]\nname = "x"\n\n[tool.bivio]\nworkers = 3\nlog_level = "debug"\n')
    config, where = load(tmp_path)
    assert (config.workers, config.log_level) == (3, "debug")
    assert where["workers"] == "pyproject.toml [tool.bivio]"


def test_pyproject_without_the_table_is_no_config_file(tmp_path):
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n[tool.other]\nport = 1\n')
    assert configfile.find_config_file(None, str(tmp_path)) is None
    assert load(tmp_path)[0].port == 8000


def test_bivio_toml_wins_over_pyproject(tmp_path):
    write(tmp_path, "pyproject.toml", "[tool.bivio]\nport = 1111\n")
    write(tmp_path, "bivio.toml", "port = 2222\n")
    assert load(tmp_path)[0].port == 2222


def test_explicit_config_file_from_flag_or_environment(tmp_path):
    write(tmp_path, "bivio.toml", "port = 2222\n")
    write(tmp_path, "prod.toml", "port = 3333\n")
    config, where = load(tmp_path, {"config": "prod.toml"})
    assert config.port == 3333 and where["port"] == "prod.toml"
    assert load(tmp_path, env={"BIVIO_CONFIG": "prod.toml"})[0].port == 3333


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^nope\.toml: cannot read"):
        load(tmp_path, {"config": "nope.toml"})


def test_invalid_toml_names_the_file(tmp_path):
    write(tmp_path, "bivio.toml", "port = \n")
    with pytest.raises(ConfigError, match=r"^bivio\.toml: not valid TOML"):
        load(tmp_path)


# -- keys ------------------------------------------------------------------------------


def test_dashes_and_underscores_are_the_same_key(tmp_path):
    write(tmp_path, "bivio.toml", 'log-level = "debug"\ntimeout_keep_alive = 2.5\n'
                                  'h2-max-concurrent-streams = 7\n')
    config, _ = load(tmp_path)
    assert (config.log_level, config.timeout_keep_alive, config.h2_max_concurrent_streams) \
        == ("debug", 2.5, 7)


def test_a_key_in_both_spellings_is_an_error(tmp_path):
    write(tmp_path, "bivio.toml", 'log-level = "debug"\nlog_level = "info"\n')
    with pytest.raises(ConfigError, match="given twice"):
        load(tmp_path)


@pytest.mark.parametrize("key, suggestion", [
    ("prot", "'port'"),
    ("log-levle", "'log-level'"),
    ("timeout_keepalive", "'timeout_keep_alive'"),
])
def test_unknown_key_names_file_key_and_closest(tmp_path, key, suggestion):
    write(tmp_path, "bivio.toml", f"{key} = 1\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    message = str(info.value)
    assert message == f"bivio.toml: unknown key {key!r} (did you mean {suggestion}?)"
    assert "\n" not in message


def test_unknown_key_without_a_close_one(tmp_path):
    write(tmp_path, "bivio.toml", "zzzzzzzz = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'zzzzzzzz' \(the keys are"):
        load(tmp_path)


def test_config_is_not_a_key_of_a_file(tmp_path):
    write(tmp_path, "bivio.toml", 'config = "other.toml"\n')
    with pytest.raises(ConfigError, match="unknown key 'config'"):
        load(tmp_path)


@pytest.mark.parametrize("line, expected", [
    ('port = "8000"', r"bivio\.toml: port: expected an integer, got \"8000\" \(str\)"),
    ('access-log = "no"', r"bivio\.toml: access-log: expected true or false"),
    ("header = [1]", r"bivio\.toml: header: expected a list of strings"),
    ("timeout_keep_alive = true", r"bivio\.toml: timeout_keep_alive: expected a number"),
    ("http = 2", r"bivio\.toml: http: expected a string"),
    ("workers = 0", r"bivio\.toml: workers: must be at least 1"),
    ('http = "h3"', r"bivio\.toml: http: expected one of"),
    ('header = ["nocolon"]', r"--header: expected NAME:VALUE"),
])
def test_wrong_type_or_value_names_the_file_and_key(tmp_path, line, expected):
    write(tmp_path, "bivio.toml", line + "\n")
    with pytest.raises(ConfigError, match="^" + expected):
        load(tmp_path)


def test_every_option_but_config_is_a_key(tmp_path):
    """The keys are generated from OPTIONS: each one's default is accepted back."""
    lines = []
    for option in OPTIONS:
        if option.name in configfile.NOT_IN_FILE or option.default is None:
            continue
        value = option.default
        lines.append(f"{option.name.replace('_', '-')} = "
                     f"{json.dumps(list(value) if isinstance(value, tuple) else value)}")
    write(tmp_path, "bivio.toml", "\n".join(lines) + "\n")
    config, where = load(tmp_path)
    assert config == Config.from_options({}, {})
    assert where["port"] == "bivio.toml"


# -- precedence: defaults < file < BIVIO_* < command line -----------------------------


def test_precedence(tmp_path):
    write(tmp_path, "bivio.toml", 'port = 1111\nlog_level = "debug"\nthreads = 5\n'
                                  "backlog = 10\n")
    config, where = load(tmp_path, {"port": 3333, "threads": None},
                         {"BIVIO_PORT": "2222", "BIVIO_LOG_LEVEL": "warning"})
    assert (config.port, config.log_level, config.threads, config.backlog) \
        == (3333, "warning", 5, 10)
    assert where["port"] == "command line"
    assert where["log_level"] == "BIVIO_LOG_LEVEL"
    assert where["threads"] == where["backlog"] == "bivio.toml"
    assert where["timeout_send"] == "default"


def test_fallback_variables_yield_to_the_file(tmp_path):
    write(tmp_path, "bivio.toml", 'workers = 2\nforwarded_allow_ips = "10.0.0.1"\n')
    config, _ = load(tmp_path, env={"WEB_CONCURRENCY": "7", "FORWARDED_ALLOW_IPS": "*"})
    assert (config.workers, config.forwarded_allow_ips) == (2, "10.0.0.1")


def test_an_address_above_the_file_replaces_the_files(tmp_path):
    write(tmp_path, "bivio.toml", 'host = "0.0.0.0"\nport = 1111\n')
    config, where = load(tmp_path, {"bind": ["127.0.0.2:2222"]})
    assert (config.host, config.port) == ("127.0.0.2", 2222)
    assert where["port"] == "command line"
    write(tmp_path, "bivio.toml", 'bind = ["0.0.0.0:1111"]\n')
    config, _ = load(tmp_path, {"port": 2222})
    assert (config.host, config.port, config.bind) == ("127.0.0.1", 2222, ())


def test_env_file_named_by_the_config_file(tmp_path):
    write(tmp_path, ".env", "BIVIO_PORT=4444\n")
    write(tmp_path, "bivio.toml", f'env_file = "{tmp_path / ".env"}"\nport = 1111\n')
    config, where = load(tmp_path)
    assert config.port == 4444
    assert where["port"].startswith("BIVIO_PORT in ")


# -- the documented example ------------------------------------------------------------


def doc_example() -> str:
    section = DOC.split("An example, `bivio.toml`", 1)[1]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)


def test_the_example_in_the_docs_loads(tmp_path, monkeypatch):
    write(tmp_path, "bivio.toml", doc_example())
    (tmp_path / "staticfiles").mkdir()
    monkeypatch.chdir(tmp_path)
    config, where = load(tmp_path)
    assert config.django == "mysite" and config.asgi_app == "mysite.asgi:application"
    assert (config.port, config.workers, config.log_format) == (8001, 4, "json")
    assert config.extra_headers[0] == (b"x-frame-options", b"DENY")
    assert where["static"] == "bivio.toml"


# -- --print-config ----------------------------------------------------------------------


def test_describe_is_toml_with_the_sources(tmp_path):
    write(tmp_path, "bivio.toml", 'port = 8123\nheader = ["x-a: 1"]\n')
    config, where = load(tmp_path, {"log_level": "debug"}, {"BIVIO_THREADS": "3"})
    text = configfile.describe(config, where)
    assert re.search(r"^port = 8123 +# bivio\.toml$", text, re.M)
    assert re.search(r'^header = \["x-a: 1"\] +# bivio\.toml$', text, re.M)
    assert re.search(r'^log_level = "debug" +# command line$', text, re.M)
    assert re.search(r"^threads = 3 +# BIVIO_THREADS$", text, re.M)
    assert re.search(r"^# uds is unset +# default$", text, re.M)
    uncommented = "\n".join(line.split("  #")[0] for line in text.splitlines()
                            if not line.startswith("#"))
    parsed = configfile.tomllib.loads(uncommented)  # tomli on Python 3.10
    assert parsed["port"] == 8123 and parsed["access_log"] is True
    assert configfile.parse_table(parsed, "printed")  # the output is a valid config file


def test_describe_hides_the_key_password():
    config = Config.from_options({"ssl_certfile": "c.pem", "ssl_keyfile_password": "s3cret"},
                                 {})
    text = configfile.describe(config, {o.name: "default" for o in OPTIONS})
    assert "s3cret" not in text and 'ssl_keyfile_password = "********"' in text


def test_cli_print_config_exits_0(tmp_path, monkeypatch, capsys):
    write(tmp_path, "bivio.toml", "port = 8123\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIVIO_BACKLOG", "77")
    with pytest.raises(SystemExit) as info:
        cli.main(["--print-config", "--threads", "3"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"^port = 8123 +# bivio\.toml$", out, re.M)
    assert re.search(r"^backlog = 77 +# BIVIO_BACKLOG$", out, re.M)
    assert re.search(r"^threads = 3 +# command line$", out, re.M)


def test_cli_bad_file_one_line_exit_2(tmp_path, monkeypatch, capsys):
    write(tmp_path, "bivio.toml", "prot = 8123\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(["tests.apps.basic:app"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bivio.toml" in err and "'prot'" in err and "did you mean 'port'?" in err


# -- SIGHUP: the file read again --------------------------------------------------------


def test_reload_config_rereads_the_file_and_keeps_the_socket(tmp_path):
    path = write(tmp_path, "bivio.toml", 'port = 1111\nheader = ["x-a: 1"]\nworkers = 2\n')
    old, _ = load(tmp_path, {"timeout_send": 5})
    path.write_text('port = 2222\nheader = ["x-a: 2"]\nworkers = 5\nlog_level = "debug"\n')
    new = configfile.reload_config(old)
    assert new is not None
    assert (new.port, new.workers) == (1111, 2)  # bound once; SIGTTIN/SIGTTOU for workers
    assert (new.header, new.log_level, new.timeout_send) == (("x-a: 2",), "debug", 5)
    assert new.extra_headers == ((b"x-a", b"2"),)
    changed = configfile.changes(old, new)
    assert 'header: ["x-a: 1"] -> ["x-a: 2"]' in changed
    assert not any(c.startswith("port") for c in changed)


def test_reload_config_with_a_broken_file_raises(tmp_path):
    path = write(tmp_path, "bivio.toml", "port = 1111\n")
    old, _ = load(tmp_path)
    path.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="did you mean 'port'"):
        configfile.reload_config(old)


# -- JSONFormatter -----------------------------------------------------------------------


def record(name: str, msg: str, *args, **kwargs) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args,
                                              None, **kwargs)


def test_json_formatter_server_line():
    line = JSONFormatter().format(record("bivio.error", "serving on %s", "http://x"))
    data = json.loads(line)
    assert data["level"] == "INFO" and data["logger"] == "bivio.error"
    assert data["message"] == "serving on http://x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", data["time"])
    assert "exception" not in data and "\n" not in line


def test_json_formatter_exception_is_one_string():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.getLogger("bivio.error").makeRecord(
            "bivio.error", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JSONFormatter().format(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert data["exception"].startswith("Traceback") and "RuntimeError: boom" in data["exception"]


def test_json_formatter_access_fields():
    info = ResponseInfo(client=("10.0.0.1", 5555), method="GET", target="/a/b?x=1&y=2",
                        http_version="1.1", status=404, sent=12, duration=0.0015,
                        protocol="http/1.1", interface="wsgi")
    data = json.loads(JSONFormatter().format(record("bivio.access", "line",
                                                    extra={"response": info})))
    assert data | {"time": None, "process": None} == {
        "time": None, "level": "INFO", "logger": "bivio.access", "process": None,
        "message": "line", "client": "10.0.0.1:5555", "method": "GET",
        "target": "/a/b?x=1&y=2", "path": "/a/b", "query": "x=1&y=2", "http_version": "1.1",
        "status": 404, "bytes": 12, "duration_ms": 1.5, "protocol": "http/1.1",
        "interface": "wsgi"}


def test_reload_config_only_for_what_load_built(tmp_path):
    """bivio.run (no load) or another Config: nothing to read again."""
    write(tmp_path, "bivio.toml", "port = 1111\n")
    load(tmp_path)
    assert configfile.reload_config(Config.from_options({"port": 5}, {})) is None
