"""Trusted proxy headers: ``X-Forwarded-For`` and ``X-Forwarded-Proto``.

Applied by the connection protocol only when the peer is in
``--forwarded-allow-ips`` (decided once per connection), so an untrusted
client can never spoof its address or scheme.
"""

from __future__ import annotations

from ..core.config import Config
from ..core.stream import Stream


def apply_proxy_headers(stream: Stream, config: Config) -> None:
    """Rewrite ``stream.client`` and ``stream.scheme`` from the proxy's headers.

    With a chain of proxies, ``X-Forwarded-For`` lists every hop; the last entry
    is the one our trusted proxy added, i.e. the address it saw.
    """
    for name, value in stream.headers:
        if name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
            if proto in ("http", "https", "ws", "wss"):
                stream.scheme = "https" if proto in ("https", "wss") else "http"
        elif name == b"x-forwarded-for":
            hosts = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
            # Walk from the nearest hop outwards, skipping proxies we trust.
            for host in reversed(hosts):
                if not config.is_trusted_proxy(host) or host == hosts[0]:
                    stream.client = (host, 0)
                    break
