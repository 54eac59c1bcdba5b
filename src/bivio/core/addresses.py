"""Listening addresses: what each ``--bind`` (or ``--host/--port``, ``--uds``, ``--fd``) names.

Parsed here, in ``core``, with the other options: a malformed or repeated
address is a usage error (one line, exit 2) found before anything is bound or
any app imported. Turning an :class:`Address` into a socket is the process
layer's job (:mod:`bivio.process.listeners`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORT = 8000
"""gunicorn's port when ``--bind HOST`` names none."""


class AddressError(ValueError):
    """An address bivio cannot use; the message is one line for the user."""


@dataclass(frozen=True)
class Address:
    """One listener: ``kind`` ``tcp`` (``host``, ``port``), ``unix`` (``path``) or
    ``fd`` (``fd``: a socket already bound and listening, inherited)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    @property
    def family(self) -> int:
        """The socket family bivio binds a ``tcp`` address with: an address with a
        colon is IPv6, anything else (IPv4, a host name) IPv4, as ``--host`` always did."""
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def label(self) -> str:
        """How an error line names it (``could not bind LABEL``): ``HOST:PORT``
        (``[IPv6]:PORT``), the socket's path, or ``fd N``."""
        if self.kind == "unix":
            return self.path
        if self.kind == "fd":
            return f"fd {self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def spec(self) -> str:
        """The address in ``--bind``'s spelling (``unix:PATH``, ``fd://N``, ``HOST:PORT``)."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return self.label

    def key(self) -> tuple[object, ...]:
        """What makes two spellings the same listener: the IP in canonical form
        (``[::0]`` is ``[::]``), the socket's absolute path, the descriptor."""
        if self.kind == "unix":
            return ("unix", os.path.abspath(self.path))
        if self.kind == "fd":
            return ("fd", self.fd)
        try:
            host = str(ipaddress.ip_address(self.host))
        except ValueError:
            host = self.host.lower()  # a name: compared as written
        return ("tcp", host, self.port)


def _number(text: str, label: str, low: int, high: int | None = None) -> int:
    """An integer in range, with the option-style message (``--bind port: ...``)."""
    try:
        value = int(text)
    except ValueError:
        raise AddressError(f"{label}: expected an integer, got {text!r}") from None
    if value < low:
        raise AddressError(f"{label}: must be at least {low}, got {text!r}")
    if high is not None and value > high:
        raise AddressError(f"{label}: must be at most {high}, got {text!r}")
    return value


def parse_address(address: str) -> Address:
    """gunicorn's ``--bind``: ``HOST:PORT``, ``HOST`` (port 8000), ``:PORT`` (all IPv4
    interfaces), ``[IPv6]:PORT``, ``tcp://HOST:PORT``, ``unix:PATH`` (or
    ``unix://PATH``) and ``fd://N``. Raises :class:`AddressError`."""
    text = address.strip()
    if not text:
        raise AddressError("--bind: expected an address, got an empty one")
    if text.startswith("unix:"):
        path = text[5:].removeprefix("//")
        if not path:
            raise AddressError(f"--bind: expected unix:PATH, got {address!r}")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        return Address("fd", fd=_number(text[5:], "--bind fd://", 0))
    text = text.removeprefix("tcp://")
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise AddressError(f"--bind: expected [IPv6]:PORT, got {address!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"--bind: [{host}] is not an IPv6 address") from None
        port = rest[1:] or port
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise AddressError(f"--bind: an IPv6 address goes in brackets: [{host}]:{port}")
    return Address("tcp", host=host or "0.0.0.0",
                   port=_number(port, "--bind port", 0, 65535))


def parse_addresses(specs: Iterable[str]) -> tuple[Address, ...]:
    """Every ``--bind``, parsed; the same listener named twice (however spelled) is
    refused, since the second bind could only fail or steal the first one's port."""
    seen: dict[tuple[object, ...], str] = {}
    out: list[Address] = []
    for spec in specs:
        address = parse_address(spec)
        key = address.key()
        if key in seen:
            first = seen[key]
            same = f"{spec!r} given twice" if first == spec \
                else f"{first!r} and {spec!r} are the same address"
            raise AddressError(f"--bind: {same}")
        seen[key] = spec
        out.append(address)
    return tuple(out)
