"""The part of an ASGI scope that HTTP and WebSocket scopes share.

One place builds it, fresh for every connection down to its ``asgi`` and
``extensions`` dicts: a middleware that writes into a scope must never change
a later request's.
"""

from __future__ import annotations

from typing import Any

from ..core.paths import scope_paths
from ..core.stream import Stream

ASGI_VERSION = "3.0"
SPEC_VERSION = "2.4"


def connection_scope(kind: str, stream: Stream, scheme: str, root_path: str,
                     state: dict[str, Any], extensions: dict[str, Any]) -> dict[str, Any]:
    """The fields both scope types have (``kind`` is ``"http"`` or ``"websocket"``)."""
    path, raw_path = scope_paths(stream.raw_path, root_path)
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
