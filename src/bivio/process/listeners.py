"""The listening sockets: every address of ``--bind`` (or ``--host/--port``, ``--uds``,
``--fd``) bound at once, or none.

Binding is all or nothing: the second address failing must not leave the first
bound (a port held by a process that is exiting, a stale UNIX socket file), so
what was bound is closed and unlinked before the one error line goes up. The
supervisor binds here before any worker exists and passes the sockets down by
descriptor; a single process binds here after its app's startup.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Sequence

from ..core.addresses import Address
from ..core.config import Config
from .errors import StartupError


def bind_listeners(config: Config) -> list[socket.socket]:
    """One listening, non-blocking socket per address of ``config``, in order.

    An IPv6 address is bound IPv6-only (``IPV6_V6ONLY``) when an IPv4 address
    is listed too, so ``0.0.0.0:P`` and ``[::]:P`` can both be bound; alone it
    keeps the system's default (dual-stack on Linux, as ``--host ::`` always
    served). Raises :class:`StartupError` naming the address that failed, with
    every socket bound before it closed (and its UNIX path removed).
    """
    addresses = config.addresses
    v6only = any(a.kind == "tcp" and a.family == socket.AF_INET for a in addresses)
    bound: list[socket.socket] = []
    try:
        for address in addresses:
            bound.append(bind_address(address, config.backlog, v6only))
    except StartupError:
        close_listeners(bound, addresses[:len(bound)])
        raise
    return bound


def bind_address(address: Address, backlog: int, v6only: bool = False) -> socket.socket:
    """The listening socket for one address (``fd``: the inherited one, as it is)."""
    sock: socket.socket | None = None
    try:
        if address.kind == "fd":
            sock = socket.socket(fileno=address.fd)
        elif address.kind == "unix":
            path = address.path
            if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket of a previous run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, 0o666)
        else:
            sock = socket.socket(address.family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.family == socket.AF_INET6 and v6only:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address.host, address.port))
        if address.kind != "fd":
            sock.listen(backlog)
    except OSError as exc:
        if sock is not None and address.kind != "fd":
            sock.close()
            if address.kind == "unix":
                _unlink_socket(address.path)
        raise StartupError(f"could not bind {address.label}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def close_listeners(sockets: Sequence[socket.socket], addresses: Sequence[Address]) -> None:
    """Close ``sockets`` and remove the files of the UNIX sockets bivio bound."""
    for sock in sockets:
        sock.close()
    remove_unix_paths(addresses)


def remove_unix_paths(addresses: Sequence[Address]) -> None:
    """At exit: remove the socket files bivio created (``unix:`` addresses; an
    inherited ``fd://`` socket's file belongs to whoever bound it)."""
    for address in addresses:
        if address.kind == "unix":
            _unlink_socket(address.path)


def _unlink_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass  # already gone
