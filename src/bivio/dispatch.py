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
from typing import Any
from urllib.parse import unquote_to_bytes

from .context import Handler
from .loader import ASGIApp, LoadError, WSGIApp, load_app
from .stream import Stream


class PrefixError(ValueError):
    """An ``--asgi-path`` value bivio cannot use; the message is one line for the user."""


def normalize_prefix(prefix: str) -> bytes:
    """``/events/`` -> ``b"/events"``: the form :func:`under_prefix` compares with.

    A prefix must start with ``/``; a trailing slash is dropped so that both
    spellings mean the same thing. ``/`` alone would send everything to the
    ASGI app, which is what serving the ASGI app alone already does, so it is
    refused rather than silently making the WSGI app unreachable.
    """
    if not prefix.startswith("/"):
        raise PrefixError(f"--asgi-path: must start with '/', got {prefix!r}")
    trimmed = prefix.rstrip("/")
    if not trimmed:
        raise PrefixError("--asgi-path: '/' would send every request to the ASGI app; "
                          "serve the ASGI app alone instead")
    if any(c in trimmed for c in "?#\r\n\0 "):
        raise PrefixError(f"--asgi-path: not a path prefix: {prefix!r}")
    try:
        return trimmed.encode("latin-1")
    except UnicodeEncodeError:
        # Non-ASCII paths arrive percent-encoded and are compared decoded as UTF-8.
        return trimmed.encode("utf-8")


def under_prefix(path: bytes, prefixes: tuple[bytes, ...]) -> bool:
    """True if ``path`` is one of ``prefixes`` or lies below one (segment boundary)."""
    for prefix in prefixes:
        if path.startswith(prefix):
            n = len(prefix)
            if len(path) == n or path[n:n + 1] == b"/":
                return True
    return False


class Dispatcher:
    """A stream handler that hands each stream to the WSGI or the ASGI handler.

    ``wsgi_handler`` and ``asgi_handler`` are ordinary stream handlers
    (:class:`bivio.wsgi.WSGIHandler`, :class:`bivio.asgi.ASGIHandler`); each
    keeps building its own environ or scope, so each app sees exactly what its
    own spec promises. ``bind`` and ``shutdown`` are passed on, so the server
    treats a Dispatcher like any single handler.
    """

    __slots__ = ("wsgi", "asgi", "prefixes", "root")

    def __init__(self, wsgi_handler: Handler, asgi_handler: Handler,
                 prefixes: Iterable[str | bytes] = (), root_path: str = "") -> None:
        self.wsgi = wsgi_handler
        self.asgi = asgi_handler
        self.prefixes = tuple(p if isinstance(p, bytes) else normalize_prefix(p)
                              for p in prefixes)
        self.root = root_path.rstrip("/").encode("latin-1")

    def route(self, stream: Stream) -> Handler:
        """The handler for ``stream`` (the rule in the module docstring)."""
        if stream.upgrade is not None:
            return self.asgi
        if self.prefixes:
            path = stream.raw_path
            if b"%" in path:
                path = unquote_to_bytes(path)
            root = self.root
            if root and path.startswith(root) and path[len(root):len(root) + 1] in (b"/", b""):
                path = path[len(root):]
            if under_prefix(path, self.prefixes):
                return self.asgi
        return self.wsgi

    async def __call__(self, stream: Stream) -> None:
        await self.route(stream)(stream)

    def bind(self, ctx: Any) -> None:
        """Pass the server context on (the WSGI pool pauses intake through it)."""
        for handler in (self.wsgi, self.asgi):
            bind = getattr(handler, "bind", None)
            if bind is not None:
                bind(ctx)

    def shutdown(self) -> None:
        """Stop the WSGI pool's idle threads (the ASGI side has nothing to stop)."""
        for handler in (self.wsgi, self.asgi):
            shutdown = getattr(handler, "shutdown", None)
            if shutdown is not None:
                shutdown()


def django_targets(project: str) -> tuple[str, str]:
    """``--django mysite`` -> the two entry points ``startproject`` writes."""
    return f"{project}.wsgi:application", f"{project}.asgi:application"


def load_pair(app: Any, asgi_target: str, *, factory: bool = False, app_dir: str | None = ".",
              interface: str = "auto", django: str | None = None) -> tuple[WSGIApp, ASGIApp]:
    """Load hybrid mode's two apps and check that each is the kind its place needs.

    A swapped or doubled pair would otherwise start and then fail on the first
    request (a WSGI app called with a scope, or an ASGI app on the thread pool),
    so it is refused at startup with a :class:`LoadError` (exit code 1, as for
    any app that cannot be loaded). ``factory`` and ``interface`` apply to
    ``app``, the WSGI one; the ASGI app's interface is always detected.
    """
    where = f"--django {django}: " if django else ""
    try:
        wsgi = load_app(app, factory=factory, app_dir=app_dir, interface=interface)
    except LoadError as exc:
        raise LoadError(f"{where}{exc}") from exc
    if not isinstance(wsgi, WSGIApp):
        raise LoadError(f"hybrid mode: {_name(app)} is an ASGI application, but MODULE:ATTR "
                        f"must be the WSGI one (the ASGI app goes in --asgi-app)")
    try:
        asgi = load_app(asgi_target, app_dir=None)  # sys.path already has --app-dir
    except LoadError as exc:
        raise LoadError(f"{where or '--asgi-app: '}{exc}") from exc
    if isinstance(asgi, WSGIApp):
        raise LoadError(f"--asgi-app: {asgi_target} is a WSGI application; --asgi-app takes "
                        f"the ASGI one (MODULE:ATTR is the WSGI app)")
    return wsgi, asgi


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
