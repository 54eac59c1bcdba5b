"""What the ASGI HTTP and WebSocket adapters share: the common part of a scope, and
:data:`READY`, the awaitable a ``send`` that is already done returns.

One place builds it, fresh for every connection down to its ``asgi`` and
``extensions`` dicts: a middleware that writes into a scope must never change
a later request's.

Over TLS both scope types carry the ASGI TLS extension (``extensions["tls"]``,
asgiref's specs/tls.rst, version 0.2); over cleartext the spec forbids it.
"""

from __future__ import annotations

from typing import Any

from ..core.paths import scope_paths
from ..core.stream import Stream, TLSInfo

ASGI_VERSION = "3.0"
SPEC_VERSION = "2.4"

_EXHAUSTED = iter(())


class _Ready:
    """What ``send`` returns when it is already done: awaiting it returns at once.

    Cheaper than a coroutine (no frame, no object per call; an exhausted
    iterator ends the ``await`` without a StopIteration).
    """

    __slots__ = ()

    def __await__(self) -> Any:
        return _EXHAUSTED


READY = _Ready()


def connection_scope(kind: str, stream: Stream, scheme: str, root_path: str,
                     state: dict[str, Any], extensions: dict[str, Any]) -> dict[str, Any]:
    """The fields both scope types have (``kind`` is ``"http"`` or ``"websocket"``).

    ``extensions`` must be a dict made for this scope; the ``tls`` extension is
    added to it when the stream came over TLS.
    """
    raw_path = stream.raw_path
    if root_path or 0x25 in raw_path:  # b"%": the rule is scope_paths'
        path, raw_path = scope_paths(raw_path, root_path)
    else:  # the common case, without a call: no root, nothing to decode
        path = raw_path.decode("latin-1")
    if stream.tls is not None:
        extensions["tls"] = tls_extension(stream.tls)
    return {
        "type": kind,
        "asgi": {"version": ASGI_VERSION, "spec_version": SPEC_VERSION},
        "http_version": stream.http_version,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": stream.query_string,
        "root_path": root_path,
        "headers": stream.headers,
        "client": stream.client,
        "server": stream.server,
        "state": state.copy(),
        "extensions": extensions,
    }


def tls_extension(tls: TLSInfo) -> dict[str, Any]:
    """The ASGI TLS extension's dict for a connection (a new one per scope)."""
    return {
        "server_cert": tls.server_cert,
        "client_cert_chain": list(tls.client_cert_chain),
        "client_cert_name": tls.client_cert_name,
        # A certificate that fails verification ends the handshake: no scope sees one.
        "client_cert_error": None,
        "tls_version": tls.version or None,
        "cipher_suite": tls.cipher_suite,
    }
