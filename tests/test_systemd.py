"""bivio.process.systemd without systemd: the environment it reads and what it sends."""

from __future__ import annotations

import os
import socket

from bivio.core.config import Config
from bivio.process import systemd


def test_listen_fds_for_another_process_are_left_alone() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert systemd.listen_fds(env) == []
    assert env == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}


def test_listen_fds_for_this_process_are_taken_and_unset() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "OTHER": "x"}
    assert systemd.listen_fds(env, pid=42) == [3, 4]
    assert env == {"OTHER": "x"}


def test_no_or_bad_listen_fds() -> None:
    assert systemd.listen_fds({}) == []
    assert systemd.listen_fds({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, pid=42) == []
    assert systemd.listen_fds({"LISTEN_PID": "x", "LISTEN_FDS": "1"}, pid=42) == []


def test_activate_without_sockets_is_the_same_config() -> None:
    config = Config.from_options({"port": 9000}, env={})
    assert systemd.activate(config, environ={}) is config


def test_activate_serves_fd_3_over_address_flags() -> None:
    config = Config.from_options({"uds": "/tmp/bivio-x.sock"}, env={})
    activated = systemd.activate(config, environ={"LISTEN_PID": "7", "LISTEN_FDS": "1"}, pid=7)
    assert (activated.fd, activated.uds, activated.bind) == (3, None, ())


def test_no_notify_socket_no_notifier() -> None:
    assert systemd.from_environ({}) is None
    assert systemd.from_environ({"WATCHDOG_USEC": "1000000"}) is None


def test_watchdog_interval_and_pid() -> None:
    notifier = systemd.from_environ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000"})
    assert notifier is not None and notifier.watchdog == 1.5 and notifier.address == "\0x"
    other = systemd.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000",
                                  "WATCHDOG_PID": "1"}, pid=2)
    assert other is not None and other.watchdog is None
    mine = systemd.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000",
                                 "WATCHDOG_PID": "2"}, pid=2)
    assert mine is not None and mine.watchdog == 1.5


def test_notifier_sends_datagrams(tmp_path) -> None:
    path = str(tmp_path / "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        receiver.settimeout(5)
        notifier = systemd.Notifier(path)
        notifier.stop("bye")
        notifier.stop("again")  # STOPPING=1 once
        notifier.ping()
        assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=bye\n"
        assert receiver.recv(4096) == b"WATCHDOG=1\n"
        notifier.reloading()
        fields = dict(x.split("=", 1) for x in receiver.recv(4096).decode().split())
        assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
