"""What a TLS connection negotiated: read once per connection, for the streams.

asyncio (and uvloop) run the TLS handshake before ``connection_made``, so by
then the transport's ``ssl_object`` knows the version, the cipher, the ALPN
protocol and the client's certificate. :func:`connection_tls` turns that into
the :class:`~bivio.core.stream.TLSInfo` every stream of the connection shares
(the ASGI ``tls`` extension is built from it).

A client certificate is there only when ``--ssl-cert-reqs`` asks for one, and
then it was verified against ``--ssl-ca-certs`` during the handshake: one that
fails verification ends the handshake, so no stream ever carries an
unverified certificate (the extension's ``client_cert_error`` is always None).
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
        client_cert_name=_subject_name(sslobj),
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


# RFC 4514 section 3: the attribute types written by name; any other by its OID.
_RFC4514_NAMES = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST",
                  "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
                  "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}


def _subject_name(sslobj: Any) -> str | None:
    """The verified client certificate's subject as an RFC 4514 string, or None."""
    try:
        subject = (sslobj.getpeercert() or {}).get("subject")
    except (ssl.SSLError, ValueError):
        return None
    if not subject:
        return None
    # RFC 4514 writes the RDNs last to first (the certificate's order reversed).
    return ",".join("+".join(f"{_attribute_type(k)}={_escape(v)}" for k, v in rdn)
                    for rdn in reversed(subject))


def _attribute_type(name: str) -> str:
    short = _RFC4514_NAMES.get(name)
    if short is not None:
        return short
    try:
        return ssl._ASN1Object.fromname(name).oid  # OpenSSL's long name -> dotted OID
    except ValueError:
        return name


def _escape(value: str) -> str:
    """An attribute value escaped as RFC 4514 section 2.4 asks."""
    last = len(value) - 1
    out = []
    for i, c in enumerate(value):
        if c in ',+"\\<>;' or (i == 0 and c in "# ") or (i == last and c == " "):
            out.append("\\" + c)
        elif c == "\0":
            out.append("\\00")
        else:
            out.append(c)
    return "".join(out)


def _client_chain(sslobj: Any) -> tuple[str, ...]:
    """The client's certificates as PEM: the whole verified chain where Python has it (3.13)."""
    chain = getattr(sslobj, "get_verified_chain", None)
    if chain is not None:
        try:
            certs = chain()
        except (ssl.SSLError, ValueError):
            certs = None
        if certs:
            # Python 3.13's public SSLObject gives DER bytes; the private _ssl
            # certificates (what some builds return) give PEM from public_bytes().
            return tuple(ssl.DER_cert_to_PEM_cert(c) if isinstance(c, bytes) else c.public_bytes()
                         for c in certs)
    der = sslobj.getpeercert(binary_form=True)
    return (ssl.DER_cert_to_PEM_cert(der),) if der else ()
