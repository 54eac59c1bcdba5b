"""Config.from_options: defaults < BIVIO_* environment < explicit options, validated."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from bivio.core.config import (
    CONFIG_FIELDS,
    OPTIONS,
    OPTIONS_BY_NAME,
    Config,
    ConfigError,
    convert,
    parse_header,
    parse_networks,
)


def build(options=None, **env: str) -> Config:
    return Config.from_options(options or {}, env=env)


def one_line_error(options=None, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(options, **env)
    message = str(info.value)
    assert message and "\n" not in message, repr(message)
    return message


# -- the option table ---------------------------------------------------------------


def test_every_option_is_a_config_field_with_the_same_default():
    defaults = Config()
    for option in OPTIONS:
        assert option.name in CONFIG_FIELDS, option.name
        assert getattr(defaults, option.name) == option.default, option.name


def test_every_config_field_is_an_option_or_derived():
    derived = {"extra_headers", "trusted_proxies", "multiprocess", "notes"}
    assert CONFIG_FIELDS - derived == set(OPTIONS_BY_NAME)


def test_flag_and_env_names():
    option = OPTIONS_BY_NAME["limit_request_body"]
    assert option.flag == "--limit-request-body"
    assert option.env == "BIVIO_LIMIT_REQUEST_BODY"
    assert len({o.flag for o in OPTIONS}) == len(OPTIONS)


# -- defaults --------------------------------------------------------------------------


def test_defaults_without_options_or_environment():
    config = build()
    for option in OPTIONS:
        if option.name != "forwarded_allow_ips":
            assert getattr(config, option.name) == option.default, option.name
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.lifespan == "auto"
    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == "127.0.0.1"
    assert config.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),)
    assert config.extra_headers == ()
    assert config.header == ()


def test_config_is_frozen():
    config = build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -- environment -----------------------------------------------------------------------------


def test_environment_values_are_converted():
    config = build(BIVIO_PORT="8001", BIVIO_HOST="0.0.0.0", BIVIO_TIMEOUT_KEEP_ALIVE="2.5",
                   BIVIO_LIMIT_CONCURRENCY="10", BIVIO_LIFESPAN="off",
                   BIVIO_LOG_LEVEL="debug", BIVIO_ROOT_PATH="/api/")
    assert config.port == 8001 and isinstance(config.port, int)
    assert config.host == "0.0.0.0"
    assert config.timeout_keep_alive == 2.5
    assert config.limit_concurrency == 10
    assert config.lifespan == "off"
    assert config.log_level == "debug"
    assert config.root_path == "/api"


@pytest.mark.parametrize("text", ["1", "true", "True", "YES", "on", " true "])
def test_environment_true_values(text):
    assert build(BIVIO_FACTORY=text).factory is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "no", "Off"])
def test_environment_false_values(text):
    config = build(BIVIO_ACCESS_LOG=text, BIVIO_SERVER_HEADER=text, BIVIO_PROXY_HEADERS=text)
    assert config.access_log is False
    assert config.server_header is False
    assert config.proxy_headers is False


def test_environment_list_is_semicolon_separated():
    config = build(BIVIO_HEADER="X-One: 1; X-Two: two ;;")
    assert config.header == ("X-One: 1", "X-Two: two")
    assert config.extra_headers == ((b"x-one", b"1"), (b"x-two", b"two"))


def test_choices_are_case_insensitive():
    assert build(BIVIO_LOG_LEVEL="WARNING").log_level == "warning"
    assert build({"lifespan": "ON"}).lifespan == "on"


def test_unrelated_environment_is_ignored():
    config = build(PORT="1234", BIVIO_NOT_AN_OPTION="x", bivio_port="5")
    assert config.port == 8000


def test_environment_is_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("BIVIO_BACKLOG", "77")
    monkeypatch.setenv("BIVIO_DATE_HEADER", "off")
    config = Config.from_options({})
    assert config.backlog == 77
    assert config.date_header is False


# -- explicit options ------------------------------------------------------------------------


def test_explicit_options_override_environment():
    config = build({"port": 9000, "access_log": True, "header": ["X-A: 1"]},
                   BIVIO_PORT="8001", BIVIO_ACCESS_LOG="false", BIVIO_HEADER="X-B: 2")
    assert config.port == 9000
    assert config.access_log is True
    assert config.header == ("X-A: 1",)
    assert config.extra_headers == ((b"x-a", b"1"),)


def test_none_options_are_ignored_so_environment_wins():
    config = build({"port": None, "access_log": None}, BIVIO_PORT="8001",
                   BIVIO_ACCESS_LOG="no")
    assert config.port == 8001
    assert config.access_log is False


def test_explicit_options_accept_strings_like_the_cli():
    config = build({"port": "8123", "factory": "true", "timeout_graceful_shutdown": "1.5"})
    assert config.port == 8123
    assert config.factory is True
    assert config.timeout_graceful_shutdown == 1.5


def test_python_values():
    config = build({"port": 0, "factory": True, "timeout_keep_alive": 0,
                    "header": ("X-A: 1", "X-B: 2")})
    assert config.port == 0
    assert config.factory is True
    assert config.timeout_keep_alive == 0.0 and isinstance(config.timeout_keep_alive, float)
    assert config.header == ("X-A: 1", "X-B: 2")


def test_unknown_option():
    message = one_line_error({"prot": 8000})
    assert "unknown option" in message
    assert "'prot'" in message


# -- invalid values ----------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "flag"), [
    ({"port": "abc"}, "--port"),
    ({"port": -1}, "--port"),
    ({"port": 65536}, "--port"),
    ({"port": True}, "--port"),
    ({"port": "8.5"}, "--port"),
    ({"lifespan": "sometimes"}, "--lifespan"),
    ({"loop": "trio"}, "--loop"),
    ({"log_level": "verbose"}, "--log-level"),
    ({"limit_request_body": -1}, "--limit-request-body"),
    ({"limit_request_line": 10}, "--limit-request-line"),
    ({"limit_concurrency": 0}, "--limit-concurrency"),
    ({"backlog": 0}, "--backlog"),
    ({"timeout_keep_alive": "soon"}, "--timeout-keep-alive"),
    ({"timeout_keep_alive": -0.5}, "--timeout-keep-alive"),
    ({"timeout_graceful_shutdown": "nan"}, "--timeout-graceful-shutdown"),
    ({"factory": "maybe"}, "--factory"),
    ({"access_log": 2}, "--access-log"),
    ({"fd": -3}, "--fd"),
    ({"root_path": "api"}, "--root-path"),
    ({"header": ["no colon"]}, "--header"),
    ({"forwarded_allow_ips": "10.0.0.300"}, "--forwarded-allow-ips"),
])
def test_invalid_option_values(options, flag):
    message = one_line_error(options)
    assert message.startswith(flag), message


@pytest.mark.parametrize(("env", "expected"), [
    ({"BIVIO_PORT": "x"}, "BIVIO_PORT: expected an integer, got 'x'"),
    ({"BIVIO_ACCESS_LOG": "maybe"}, "BIVIO_ACCESS_LOG: expected true or false, got 'maybe'"),
    ({"BIVIO_LIFESPAN": "sometimes"},
     "BIVIO_LIFESPAN: expected one of auto, on, off, got 'sometimes'"),
    ({"BIVIO_LIMIT_REQUEST_BODY": "-1"}, "BIVIO_LIMIT_REQUEST_BODY: must be at least 0, got '-1'"),
    ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY: expected an integer, got 'many'"),
    ({"BIVIO_FORWARDED_ALLOW_IPS": "10.0.0.300"},
     "BIVIO_FORWARDED_ALLOW_IPS: '10.0.0.300' is not an IP address or network"),
    ({"FORWARDED_ALLOW_IPS": "10.0.0.300"},
     "FORWARDED_ALLOW_IPS: '10.0.0.300' is not an IP address or network"),
])
def test_invalid_environment_values_name_the_variable(env, expected):
    assert one_line_error(**env) == expected


def test_an_explicit_option_error_names_the_flag_even_with_the_variable_set():
    assert one_line_error({"port": "y"}, BIVIO_PORT="x") == "--port: expected an integer, got 'y'"
    assert one_line_error({"forwarded_allow_ips": "nope"}, FORWARDED_ALLOW_IPS="10.0.0.1") == (
        "--forwarded-allow-ips: 'nope' is not an IP address or network")


def test_uds_and_fd_are_exclusive():
    message = one_line_error({"uds": "/tmp/x.sock", "fd": 3})
    assert "--uds" in message and "--fd" in message


def test_error_message_names_the_value():
    message = one_line_error({"limit_request_body": "-1"})
    assert message == "--limit-request-body: must be at least 0, got '-1'"


def test_convert_none_is_none():
    for option in OPTIONS:
        assert convert(option, None) is None


# -- --header ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("X-Frame-Options: DENY", (b"x-frame-options", b"DENY")),
    ("x-a:1", (b"x-a", b"1")),
    ("  X-Spaced  :   padded value  ", (b"x-spaced", b"padded value")),
    ("Link: </a.css>; rel=preload", (b"link", b"</a.css>; rel=preload")),
    ("X-Empty:", (b"x-empty", b"")),
    ("X-Latin: caf\xe9", (b"x-latin", b"caf\xe9")),
])
def test_parse_header(text, expected):
    assert parse_header(text) == expected


@pytest.mark.parametrize("text", [
    "no colon here",
    ": value without a name",
    "Bad Name: x",
    "Bad(Name): x",
    "X-Split: a\r\nX-Injected: b",
    "X-Newline: a\nb",
    "X-Nul: a\0b",
])
def test_parse_header_rejects(text):
    with pytest.raises(ConfigError) as info:
        parse_header(text)
    assert str(info.value).startswith("--header:")
    assert "\n" not in str(info.value)


def test_headers_keep_their_order():
    config = build({"header": ["X-B: 2", "X-A: 1", "X-B: 3"]})
    assert config.extra_headers == ((b"x-b", b"2"), (b"x-a", b"1"), (b"x-b", b"3"))


# -- --forwarded-allow-ips --------------------------------------------------------------------


def test_networks_and_addresses():
    config = build({"forwarded_allow_ips": "10.0.0.0/8, 192.168.1.7,::1,2001:db8::/32"})
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.is_trusted_proxy("10.1.2.3")
    assert config.is_trusted_proxy("192.168.1.7")
    assert not config.is_trusted_proxy("192.168.1.8")
    assert config.is_trusted_proxy("::1")
    assert config.is_trusted_proxy("2001:db8::42")
    assert not config.is_trusted_proxy("127.0.0.1")
    assert not config.is_trusted_proxy("not an address")
    assert not config.is_trusted_proxy(None)


def test_non_strict_networks():
    assert parse_networks("10.1.2.3/8") == (ipaddress.ip_network("10.0.0.0/8"),)


def test_star_trusts_everyone():
    config = build({"forwarded_allow_ips": "127.0.0.1, *"})
    assert config.trusted_proxies == ("*",)
    assert config.is_trusted_proxy("203.0.113.9")
    assert config.is_trusted_proxy("::1")
    assert config.is_trusted_proxy("unix:")


def test_default_trusts_only_localhost():
    config = build()
    assert config.is_trusted_proxy("127.0.0.1")
    assert not config.is_trusted_proxy("127.0.0.2")
    assert not config.is_trusted_proxy("10.0.0.1")


def test_forwarded_allow_ips_environment_fallbacks():
    assert build(FORWARDED_ALLOW_IPS="*").trusted_proxies == ("*",)
    config = build(FORWARDED_ALLOW_IPS="*", BIVIO_FORWARDED_ALLOW_IPS="10.0.0.1")
    assert config.forwarded_allow_ips == "10.0.0.1"
    assert config.is_trusted_proxy("10.0.0.1")
    assert not config.is_trusted_proxy("10.0.0.2")
    config = build({"forwarded_allow_ips": "10.0.0.2"}, FORWARDED_ALLOW_IPS="*")
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.2/32"),)


def test_unix_socket_peer():
    config = build({"forwarded_allow_ips": "unix:"})
    assert config.is_trusted_proxy("unix:")
    assert not config.is_trusted_proxy("127.0.0.1")


def test_no_proxy_headers_trusts_nobody():
    config = build({"proxy_headers": False, "forwarded_allow_ips": "*"})
    assert not config.is_trusted_proxy("127.0.0.1")


def test_invalid_network_message():
    message = one_line_error({"forwarded_allow_ips": "127.0.0.1,proxy.example"})
    assert message == "--forwarded-allow-ips: 'proxy.example' is not an IP address or network"


# -- --root-path --------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [
    ("", ""), ("/", ""), ("/api", "/api"), ("/api/", "/api"), ("/a/b//", "/a/b"),
])
def test_root_path_normalised(given, expected):
    assert build({"root_path": given}).root_path == expected
