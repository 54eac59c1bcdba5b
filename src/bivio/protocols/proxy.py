"""Trusted proxy headers: ``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``Forwarded``.

Applied by the connection protocol only when the peer is in
``--forwarded-allow-ips`` (decided once per connection), so an untrusted
client can never spoof its address or scheme.

``Forwarded`` (RFC 7239) is read for what the ``X-Forwarded-*`` headers do not
say: ``X-Forwarded-For`` wins over ``for=`` and ``X-Forwarded-Proto`` over
``proto=``. Most proxies set ``X-Forwarded-*`` and pass a client's own
``Forwarded`` through untouched, so preferring it would let a client choose
its address; a proxy that sets only ``Forwarded`` must drop the clients'
``X-Forwarded-*`` (docs/proxy.md).
"""

from __future__ import annotations

import ipaddress
import re

from ..core.config import Config
from ..core.stream import Stream

#: ``(client, server)`` from a PROXY protocol header (``proxy_protocol.py``), which a
#: connection protocol uses instead of the socket's peer and local address.
Proxied = tuple[tuple[str, int] | None, tuple[str, int] | None] | None

_SCHEMES = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
# One forwarded-pair (RFC 7239 section 4): token "=" ( token / quoted-string ).
_PAIR = re.compile(r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^;,\s"]*)[ \t]*')


def apply_proxy_headers(stream: Stream, config: Config) -> None:
    """Rewrite ``stream.client`` and ``stream.scheme`` from the proxy's headers.

    With a chain of proxies, ``X-Forwarded-For`` (and ``Forwarded``) lists every
    hop; the last entry is the one our trusted proxy added, i.e. the address it
    saw. Walking outwards, trusted proxies are skipped; the first other address
    is the client.
    """
    xff: list[str] = []
    proto: str | None = None
    forwarded: list[str] = []
    for name, value in stream.headers:
        if name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
        elif name == b"x-forwarded-for":
            xff.append(value.decode("latin-1"))
        elif name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
    if forwarded:
        elements = parse_forwarded(",".join(forwarded))
        if proto is None and elements:
            proto = elements[-1].get("proto", "").lower() or None
        if not xff and elements:
            client = _forwarded_client(elements, config)
            if client is not None:
                stream.client = client
    if proto in _SCHEMES:
        stream.scheme = _SCHEMES[proto]
    if xff:
        hosts = [h.strip() for h in ",".join(xff).split(",") if h.strip()]
        # Walk from the nearest hop outwards, skipping proxies we trust.
        for host in reversed(hosts):
            if not config.is_trusted_proxy(host) or host == hosts[0]:
                stream.client = (host, 0)
                break


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` value, nearest hop last, each a dict of its
    pairs (names lower-cased, quoted values unquoted). An element that does not
    parse ends the list there: what follows it cannot be told apart."""
    elements: list[dict[str, str]] = []
    element: dict[str, str] = {}
    pos, end = 0, len(value)
    while pos < end:
        match = _PAIR.match(value, pos)
        if match is None:
            break
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        element.setdefault(name, raw)
        pos = match.end()
        if pos < end and value[pos] == ";":
            pos += 1
        elif pos < end and value[pos] == ",":
            elements.append(element)
            element = {}
            pos += 1
            while pos < end and value[pos] in " \t":
                pos += 1
        elif pos < end:
            return elements  # garbage: keep only the whole elements before it
    if element:
        elements.append(element)
    return elements


def forwarded_node(node: str) -> tuple[str, int] | None:
    """``for=`` as ``(ip, port)`` (port 0 when absent or obfuscated); ``None`` for
    ``unknown``, an obfuscated identifier (``_hidden``) or anything else."""
    port = ""
    if node.startswith("["):
        host, sep, rest = node[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
        try:
            ip: str = str(ipaddress.IPv6Address(host))
        except ValueError:
            return None
    else:
        host, _, port = node.partition(":")
        try:
            ip = str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    if port.isdigit() and len(port) <= 5 and int(port) <= 65535:
        return (ip, int(port))
    if port and not port.startswith("_"):
        return None
    return (ip, 0)


def _forwarded_client(elements: list[dict[str, str]], config: Config) -> tuple[str, int] | None:
    for i in range(len(elements) - 1, -1, -1):
        node = forwarded_node(elements[i].get("for", ""))
        if node is None:
            return None  # unknown or obfuscated: keep the peer's address
        if i == 0 or not config.is_trusted_proxy(node[0]):
            return node
    return None
