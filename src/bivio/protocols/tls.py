"""What a TLS connection negotiated: read once per connection, for the streams.

asyncio (and uvloop) run the TLS handshake before ``connection_made``, so by
then the transport's ``ssl_object`` knows the version, the cipher, the ALPN
protocol and the client's certificate. :func:`connection_tls` turns that into
the :class:`~bivio.core.stream.TLSInfo` every stream of the connection shares
(the ASGI ``tls`` extension is built from it).
"""

from __future__ import annotations

import ssl
from typing import Any

from ..core.stream import TLSInfo

_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304, "TLSv1.1": 0x0302, "TLSv1": 0x0301}
# OpenSSL cipher name -> IANA number, learnt from the context (its low 16 bits).
_CIPHER_IDS: dict[str, int] = {}


def connection_tls(transport: Any, server_cert: str | None) -> TLSInfo | None:
    """The connection's :class:`TLSInfo`, or ``None`` for a cleartext transport."""
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    name, protocol, _bits = sslobj.cipher() or (None, None, None)
    return TLSInfo(
        version=_VERSIONS.get(sslobj.version() or "", 0),
        cipher_suite=_cipher_id(sslobj, name),
        client_cert_chain=_client_chain(sslobj),
        server_cert=server_cert,
        alpn=sslobj.selected_alpn_protocol(),
    )


def _cipher_id(sslobj: Any, name: str | None) -> int | None:
    if name is None:
        return None
    found = _CIPHER_IDS.get(name)
    if found is None:
        for cipher in sslobj.context.get_ciphers():
            _CIPHER_IDS[cipher["name"]] = cipher["id"] & 0xFFFF
        found = _CIPHER_IDS.get(name)
    return found


def _client_chain(sslobj: Any) -> tuple[str, ...]:
    """The client's certificates as PEM: the whole verified chain where Python has it (3.13)."""
    chain = getattr(sslobj, "get_verified_chain", None)
    if chain is not None:
        try:
            certs = chain()
        except (ssl.SSLError, ValueError):
            certs = None
        if certs:
            return tuple(c.public_bytes() for c in certs)  # PEM by default
    der = sslobj.getpeercert(binary_form=True)
    return (ssl.DER_cert_to_PEM_cert(der),) if der else ()
