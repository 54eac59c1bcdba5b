"""Several listeners without a socket: the ``--bind`` parser, how the address flags
combine across the command line, the environment and a config file, what a worker
is told to serve, and systemd's several descriptors.

The same addresses over real sockets are in ``tests/e2e/test_listeners.py``.
"""

from __future__ import annotations

import os

import pytest

from bivio.core.addresses import Address, AddressError, parse_address, parse_addresses
from bivio.core.config import Config, ConfigError
from bivio.core.configfile import describe, load
from bivio.process import systemd
from bivio.process.supervisor import worker_options

# -- one address ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9000", Address("tcp", host="127.0.0.1", port=9000)),
    ("localhost", Address("tcp", host="localhost", port=8000)),
    (":9000", Address("tcp", host="0.0.0.0", port=9000)),
    ("tcp://10.0.0.1:80", Address("tcp", host="10.0.0.1", port=80)),
    ("[::]:8000", Address("tcp", host="::", port=8000)),
    ("[::1]", Address("tcp", host="::1", port=8000)),
    ("[fe80::1%lo]:80", Address("tcp", host="fe80::1%lo", port=80)),
    ("unix:/run/app.sock", Address("unix", path="/run/app.sock")),
    ("unix:///run/app.sock", Address("unix", path="/run/app.sock")),
    ("unix:app.sock", Address("unix", path="app.sock")),
    ("fd://3", Address("fd", fd=3)),
    ("  127.0.0.1:1  ", Address("tcp", host="127.0.0.1", port=1)),
])
def test_each_form_parses(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "--bind: expected an address, got an empty one"),
    ("::1:8000", "--bind: an IPv6 address goes in brackets: [::1]:8000"),
    ("[::1", "--bind: expected [IPv6]:PORT, got '[::1'"),
    ("[::1]8000", "--bind: expected [IPv6]:PORT, got '[::1]8000'"),
    ("[example.com]:80", "--bind: [example.com] is not an IPv6 address"),
    ("[127.0.0.1]:80", "--bind: [127.0.0.1] is not an IPv6 address"),
    ("host:http", "--bind port: expected an integer, got 'http'"),
    ("host:70000", "--bind port: must be at most 65535, got '70000'"),
    ("host:-1", "--bind port: must be at least 0, got '-1'"),
    ("unix:", "--bind: expected unix:PATH, got 'unix:'"),
    ("unix://", "--bind: expected unix:PATH, got 'unix://'"),
    ("fd://", "--bind fd://: expected an integer, got ''"),
    ("fd://three", "--bind fd://: expected an integer, got 'three'"),
    ("fd://-1", "--bind fd://: must be at least 0, got '-1'"),
])
def test_bad_forms_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("address", "label", "spec"), [
    (Address("tcp", host="127.0.0.1", port=80), "127.0.0.1:80", "127.0.0.1:80"),
    (Address("tcp", host="::", port=80), "[::]:80", "[::]:80"),
    (Address("unix", path="/run/a.sock"), "/run/a.sock", "unix:/run/a.sock"),
    (Address("fd", fd=4), "fd 4", "fd://4"),
])
def test_how_an_address_is_named(address: Address, label: str, spec: str) -> None:
    """``label`` is what "could not bind ..." says (as it always did for
    --host/--uds/--fd); ``spec`` is --bind's spelling, parsed back to the same."""
    assert address.label == label
    assert address.spec == spec
    assert parse_address(spec) == address


# -- the list -------------------------------------------------------------------------------


def test_the_list_keeps_its_order() -> None:
    specs = ["127.0.0.1:1", "[::1]:1", "unix:/tmp/a.sock", "fd://5"]
    assert [a.spec for a in parse_addresses(specs)] == specs


@pytest.mark.parametrize(("specs", "message"), [
    (["127.0.0.1:80", "127.0.0.1:80"], "--bind: '127.0.0.1:80' given twice"),
    (["127.0.0.1:0", "127.0.0.1:0"], "--bind: '127.0.0.1:0' given twice"),
    (["[::]:80", "[0::0]:80"], "--bind: '[::]:80' and '[0::0]:80' are the same address"),
    (["[::1]", "[::1]:8000"], "--bind: '[::1]' and '[::1]:8000' are the same address"),
    (["Example.com:80", "example.com:80"], "are the same address"),
    (["unix:/tmp/a.sock", "unix:///tmp/a.sock"], "are the same address"),
    (["unix:a.sock", f"unix:{os.getcwd()}/a.sock"], "are the same address"),
    (["fd://3", "fd://3"], "--bind: 'fd://3' given twice"),
])
def test_the_same_listener_twice_is_refused(specs: list[str], message: str) -> None:
    with pytest.raises(AddressError, match="^--bind: ") as caught:
        parse_addresses(specs)
    assert message in str(caught.value)


def test_different_listeners_on_one_port_are_not_duplicates() -> None:
    """IPv4 and IPv6 on the same port are two sockets: the point of several listeners."""
    specs = ["0.0.0.0:8000", "[::]:8000", "127.0.0.1:8000", "[::1]:8000", "unix:/tmp/8000"]
    assert len(parse_addresses(specs)) == 5


# -- how the address options combine ----------------------------------------------------------


def test_several_binds_are_every_listener() -> None:
    config = Config.from_options({"bind": ["0.0.0.0:8000", "[::]:8000", "unix:/tmp/b.sock"]},
                                 env={})
    assert [a.spec for a in config.addresses] == ["0.0.0.0:8000", "[::]:8000",
                                                  "unix:/tmp/b.sock"]
    # host/port stay as they were: no single one of them is "the" address
    assert (config.host, config.port, config.uds, config.fd) == ("127.0.0.1", 8000, None, None)


def test_one_bind_still_sets_host_and_port() -> None:
    config = Config.from_options({"bind": ["[::1]:9001"]}, env={})
    assert (config.host, config.port) == ("::1", 9001)
    assert config.addresses == (Address("tcp", host="::1", port=9001),)


@pytest.mark.parametrize(("options", "expected"), [
    ({}, ["127.0.0.1:8000"]),
    ({"host": "::1", "port": 9}, ["[::1]:9"]),
    ({"uds": "/tmp/u.sock", "port": 9}, ["unix:/tmp/u.sock"]),  # uvicorn: --uds wins
    ({"fd": 5, "host": "0.0.0.0"}, ["fd://5"]),  # uvicorn: --fd wins
])
def test_without_bind_uvicorns_flags_make_one_listener(options: dict, expected: list[str]) -> None:
    assert [a.spec for a in Config.from_options(options, env={}).addresses] == expected


@pytest.mark.parametrize("flag", ["host", "port", "uds", "fd"])
def test_bind_and_an_address_flag_on_one_level_is_an_error(flag: str) -> None:
    value = {"host": "0.0.0.0", "port": 1, "uds": "/tmp/x.sock", "fd": 3}[flag]
    with pytest.raises(ConfigError) as caught:
        Config.from_options({"bind": ["127.0.0.1:1", "[::1]:1"], flag: value}, env={})
    assert str(caught.value).startswith(f"--bind and --{flag}: choose one (--bind lists "
                                        "every address")
    with pytest.raises(ConfigError, match=f"--bind and --{flag}: choose one"):
        Config.from_options({}, env={"BIVIO_BIND": "127.0.0.1:1",
                                     f"BIVIO_{flag.upper()}": str(value)})


def test_bind_from_the_environment_is_a_semicolon_list() -> None:
    config = Config.from_options({}, env={"BIVIO_BIND": "127.0.0.1:1; [::1]:1 ;unix:/tmp/e"})
    assert [a.spec for a in config.addresses] == ["127.0.0.1:1", "[::1]:1", "unix:/tmp/e"]
    with pytest.raises(ConfigError, match="given twice"):
        Config.from_options({}, env={"BIVIO_BIND": "127.0.0.1:1;127.0.0.1:1"})


def test_the_command_line_replaces_the_environments_addresses() -> None:
    """A level above replaces the addresses below, as for any option, instead of
    clashing with them: --port over BIVIO_BIND, --bind over BIVIO_HOST/BIVIO_PORT."""
    env = {"BIVIO_BIND": "0.0.0.0:1;[::]:1"}
    config = Config.from_options({"port": 2}, env=env)
    assert [a.spec for a in config.addresses] == ["127.0.0.1:2"]
    env = {"BIVIO_HOST": "0.0.0.0", "BIVIO_PORT": "3", "BIVIO_UDS": "/tmp/u"}
    config = Config.from_options({"bind": ["[::1]:4", "127.0.0.1:4"]}, env=env)
    assert [a.spec for a in config.addresses] == ["[::1]:4", "127.0.0.1:4"]
    # the host of the environment with the port of the command line still combine
    config = Config.from_options({"port": 5}, env={"BIVIO_HOST": "::1"})
    assert [a.spec for a in config.addresses] == ["[::1]:5"]


def test_a_config_file_lists_binds(tmp_path) -> None:
    (tmp_path / "bivio.toml").write_text('bind = ["127.0.0.1:7001", "[::1]:7001"]\n')
    config, where = load({}, env={}, cwd=str(tmp_path))
    assert [a.spec for a in config.addresses] == ["127.0.0.1:7001", "[::1]:7001"]
    assert where["bind"] == "bivio.toml"
    text = describe(config, where)
    assert 'bind = ["127.0.0.1:7001", "[::1]:7001"]' in text
    assert "# host: see bind" in text and "\nhost = " not in text
    # the command line's --port replaces the file's list
    config, _ = load({"port": 7002}, env={}, cwd=str(tmp_path))
    assert [a.spec for a in config.addresses] == ["127.0.0.1:7002"]
    (tmp_path / "bivio.toml").write_text('bind = ["127.0.0.1:7001", "127.0.0.1:7001"]\n')
    with pytest.raises(ConfigError, match="given twice"):
        load({}, env={}, cwd=str(tmp_path))


def test_print_config_names_the_level_the_addresses_came_from(tmp_path) -> None:
    env = {"BIVIO_BIND": "0.0.0.0:1;[::]:1"}
    config, where = load({"port": 9}, env=env, cwd=str(tmp_path))
    assert (config.bind, where["bind"], where["port"]) == ((), "default", "command line")
    config, where = load({}, env=env, cwd=str(tmp_path))
    assert where["bind"] == where["host"] == "BIVIO_BIND"


# -- what a worker serves ---------------------------------------------------------------------


def test_a_worker_serves_every_inherited_socket_in_order() -> None:
    config = Config.from_options(
        {"workers": 2, "bind": ["127.0.0.1:1", "[::1]:1", "unix:/tmp/w.sock"]}, env={})
    worker = Config.from_options(worker_options(config, [7, 8, 9]), env={})
    assert not worker.needs_supervisor()
    assert worker.addresses == (Address("fd", fd=7), Address("fd", fd=8), Address("fd", fd=9))
    # the worker binds nothing and unlinks nothing: the sockets are the parent's
    assert all(a.kind == "fd" for a in worker.addresses)


def test_a_worker_of_one_listener_serves_it_as_fd() -> None:
    config = Config.from_options({"workers": 2, "host": "::1", "port": 5}, env={})
    worker = Config.from_options(worker_options(config, 6), env={})
    assert (worker.fd, worker.uds) == (6, None)
    assert worker.addresses == (Address("fd", fd=6),)


# -- systemd passes several sockets -----------------------------------------------------------


def test_activation_with_two_sockets_serves_both() -> None:
    config = Config.from_options({"port": 9000}, env={})
    env = {"LISTEN_PID": "7", "LISTEN_FDS": "2"}
    activated = systemd.activate(config, environ=env, pid=7)
    assert activated.addresses == (Address("fd", fd=3), Address("fd", fd=4))
    assert (activated.fd, activated.uds) == (None, None)
    assert env == {}


def test_activation_with_one_socket_is_fd_3_over_several_binds() -> None:
    config = Config.from_options({"bind": ["127.0.0.1:1", "[::1]:1"]}, env={})
    activated = systemd.activate(config, environ={"LISTEN_PID": "7", "LISTEN_FDS": "1"}, pid=7)
    assert activated.addresses == (Address("fd", fd=3),)
