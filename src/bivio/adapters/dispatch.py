"""Hybrid mode: which of two apps answers a stream.

A Django project has a WSGI handler and an ASGI handler. Django's ASGI path
costs several times more per ordinary request than its WSGI path (see
docs/asgi-or-wsgi.md), yet WebSockets and long-lived async views need ASGI.
Hybrid mode serves both in one worker, and this module is the one decision
between them. The rule, in order:

1. a WebSocket upgrade (``stream.upgrade``) goes to the ASGI app: WSGI cannot
   speak WebSocket, so there is no other sensible owner;
2. a request whose path is under one of the ``--asgi-path`` prefixes goes to
   the ASGI app (async views, server-sent events, long polling);
3. everything else goes to the WSGI app, on its thread pool.

Static files (``--static``) are answered before this rule: the static-files
handler wraps the :class:`Dispatcher` (see ``build_handler`` in
:mod:`bivio.server`), so a static hit never reaches either app.

Prefixes match whole path segments: ``/events`` and ``/events/`` both match
``/events`` and ``/events/anything`` but never ``/eventsx``. The path matched
is the one the apps route on: percent-decoded, and without ``--root-path``
when a proxy kept that prefix in the URL, so a prefix is written the way the
app's own URL patterns are written.

The decision is a few byte comparisons on the event loop: no task, copy or
allocation beyond what the chosen handler does anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from ..core.context import ServerContext, StreamHandler
from ..core.paths import normalize_prefix, strip_root, under_prefix
from ..core.stream import Stream


class Dispatcher:
    """A stream handler that hands each stream to the WSGI or the ASGI handler.

    ``wsgi_handler`` and ``asgi_handler`` are ordinary stream handlers
    (:class:`bivio.wsgi.WSGIHandler`, :class:`bivio.asgi.ASGIHandler`); each
    keeps building its own environ or scope, so each app sees exactly what its
    own spec promises. ``bind`` and ``shutdown`` are passed on, so the server
    treats a Dispatcher like any single handler.
    """

    __slots__ = ("wsgi", "asgi", "prefixes", "root")

    def __init__(self, wsgi_handler: StreamHandler, asgi_handler: StreamHandler,
                 prefixes: Iterable[str | bytes] = (), root_path: str = "") -> None:
        self.wsgi = wsgi_handler
        self.asgi = asgi_handler
        self.prefixes = tuple(p if isinstance(p, bytes) else normalize_prefix(p)
                              for p in prefixes)
        self.root = root_path.rstrip("/").encode("latin-1")

    def route(self, stream: Stream) -> StreamHandler:
        """The handler for ``stream`` (the rule in the module docstring)."""
        if stream.upgrade is not None:
            return self.asgi
        if self.prefixes:
            path = stream.raw_path
            if b"%" in path:
                path = unquote_to_bytes(path)
            below = strip_root(path, self.root)
            if under_prefix(path if below is None else below, self.prefixes):
                return self.asgi
        return self.wsgi

    async def __call__(self, stream: Stream) -> None:
        await self.route(stream)(stream)

    def bind(self, ctx: ServerContext) -> None:
        """Pass the server context on (the WSGI pool pauses intake through it)."""
        self.wsgi.bind(ctx)
        self.asgi.bind(ctx)

    def shutdown(self) -> None:
        """Stop the WSGI pool's idle threads (the ASGI side has nothing to stop)."""
        self.wsgi.shutdown()
        self.asgi.shutdown()
