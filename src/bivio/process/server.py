"""One worker: the event loop, its listeners, lifespan and graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable, Sequence
from typing import Any

from ..adapters.asgi import ASGIHandler
from ..adapters.lifespan import Lifespan, LifespanFailure
from ..core import exits
from ..core.config import Config
from ..core.context import ServerContext, StreamHandler
from ..core.logs import access_enabled, log_response, logger
from ..core.version import __version__
from ..protocols.http1 import H1Connection
from .errors import StartupError
from .listeners import bind_listeners, remove_unix_paths
from .loader import WSGIApp, load_app, load_pair
from .systemd import Notifier, notifier
from .tls import Handshakes, build_ssl_context, served_certificate
from .watchdog import LoopWatchdog

# Set by bivio.supervisor in a worker process before it runs the ordinary serve
# path: called once this worker is ready (lifespan startup done, accepting), so it
# can tell the supervisor and start its heartbeat. The supervisor logs the
# "serving on" line once for all workers, so a worker does not.
on_worker_ready: Callable[[Server], None] | None = None


def setup_loop(kind: str) -> None:
    """Install uvloop's policy when asked or available (``--loop``)."""
    if kind == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise StartupError("--loop uvloop: uvloop is not installed") from None
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def listener_url(sock: socket.socket, tls: bool = False) -> str:
    """Where a listener serves: ``http(s)://HOST:PORT`` or ``unix:PATH``."""
    if sock.family == getattr(socket, "AF_UNIX", None):
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{'[' + host + ']' if ':' in host else host}:{port}"


def http_versions(config: Config) -> str:
    """The HTTP versions a listener speaks (``--http``), as the banner says them."""
    h2 = "HTTP/2" if config.tls else "cleartext HTTP/2"
    return {"h1": "HTTP/1.1", "h2": h2}.get(config.http, f"HTTP/1.1, {h2}")


def banner(url: str, config: Config, mode: str, loop: str, processes: str) -> str:
    """The "serving on" line, logged once bivio serves (a worker is ready, with workers).

    The URL comes first after "serving on": scripts and the tests read it there.
    """
    return (f"bivio {__version__} serving on {url} ({http_versions(config)}): {mode}, {loop}, "
            f"{processes} (Press CTRL+C to quit)")


def build_handler(config: Config, app: Any, asgi_app: Any = None,
                  state: dict[str, Any] | None = None) -> StreamHandler:
    """Build the worker's stream handler chain: the one place it is composed.

    ``app`` is an ASGI 3 app or a :class:`WSGIApp`; ``asgi_app`` is hybrid
    mode's ASGI app (``--asgi-app``), in which case ``app`` is the WSGI one and
    a :class:`bivio.dispatch.Dispatcher` chooses per stream. ``state`` is the
    lifespan state the ASGI scopes carry. Handlers that answer before any app
    (static files) wrap the result here, so they come first in every mode.
    """
    handler: StreamHandler
    if asgi_app is not None or isinstance(app, WSGIApp):
        from ..adapters.wsgi import WSGIHandler  # the thread pool is only paid for by WSGI apps

    if asgi_app is not None:
        from ..adapters.dispatch import Dispatcher

        handler = Dispatcher(WSGIHandler(app.app, config),
                             ASGIHandler(asgi_app, config.root_path, state),
                             config.asgi_path, config.root_path)
        logger.info("Hybrid mode: WebSockets%s to the ASGI app, everything else to the WSGI app",
                    "".join(f", {p}" for p in config.asgi_path))
    elif isinstance(app, WSGIApp):
        handler = WSGIHandler(app.app, config)
    else:
        handler = ASGIHandler(app, config.root_path, state)
    if config.static:
        from ..adapters.static import StaticFiles  # first: files never reach an app
        from ..core.paths import parse_mounts

        handler = StaticFiles(parse_mounts(config.static), handler)
    return handler


class Server:
    """Serve ``app`` (ASGI 3 or :class:`WSGIApp`) with ``config`` until told to stop.

    With ``asgi_app`` (hybrid mode) ``app`` must be a :class:`WSGIApp`; the
    lifespan protocol then runs for ``asgi_app``, the only one that has it.
    ``ssl_context``: the TLS context when ``config.tls`` (built from the
    ``--ssl-*`` options at :meth:`serve` when not given).
    """

    def __init__(self, app: Any, config: Config, asgi_app: Any = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.asgi_app = asgi_app
        self.config = config
        self.ssl_context = ssl_context
        if asgi_app is not None:
            if not isinstance(app, WSGIApp):
                raise StartupError("hybrid mode: MODULE:ATTR must be a WSGI application")
            self.lifespan = Lifespan(asgi_app, config.lifespan)
        elif isinstance(app, WSGIApp):
            # WSGI has no lifespan protocol; the thread pool is the app's runtime.
            if config.lifespan == "on":
                raise StartupError("--lifespan on: a WSGI application has no lifespan protocol",
                                   exits.USAGE)
            self.lifespan = Lifespan(app, "off")
        else:
            self.lifespan = Lifespan(app, config.lifespan)
        self.handler = build_handler(config, app, asgi_app, self.lifespan.state)
        self.ctx = ServerContext(config, self.handler)
        self.handler.bind(self.ctx)  # the WSGI pool pauses intake through the context
        if access_enabled():
            self.ctx.response_hooks.append(log_response)
        self.should_exit = asyncio.Event()  # loop-independent on Python >= 3.10
        self.servers: list[asyncio.base_events.Server] = []
        self.sockets: list[socket.socket] = []
        self.started = False
        self._force_exit = False
        # Requests cancelled by a forced close or an expired graceful shutdown: any
        # makes run() exit with exits.ABORTED.
        self.aborted: set[asyncio.Future[None]] = set()
        self._handshakes: Handshakes | None = None
        self._notifier: Notifier | None = None  # sd_notify, single process under systemd
        # --loop-warn: logs where a blocked event loop is stuck (None when 0: off).
        self.watchdog = LoopWatchdog(self.ctx, config.loop_warn) if config.loop_warn else None

    async def serve(self, sock: socket.socket | Sequence[socket.socket] | None = None) -> None:
        """Start, serve until :meth:`stop` (or SIGINT/SIGTERM), then shut down gracefully.

        ``sock``: the listening socket(s) to serve; by default every address of the
        config is bound here (:func:`bivio.process.listeners.bind_listeners`), after
        the app's startup. Each socket gets its own asyncio server, all with the same
        protocol factory (TLS, ``--proxy-protocol``) and the same context.
        """
        loop = asyncio.get_running_loop()
        self.ctx.loop = loop
        if on_worker_ready is None:  # a worker's supervisor speaks to systemd
            self._notifier = notifier()
            if self._notifier is not None and self._notifier.watchdog is not None:
                self._systemd_watchdog(loop, self._notifier)
        if self.config.tls:  # before the app's startup: a bad certificate fails fast
            if self.ssl_context is None:
                self.ssl_context = build_ssl_context(self.config)
            self.ctx.tls_server_cert = served_certificate(self.config)
        try:
            await self.lifespan.startup()
        except LifespanFailure as exc:
            raise StartupError(f"application startup failed: {exc}",
                               exits.STARTUP_FAILED) from None
        try:
            socks = [sock] if isinstance(sock, socket.socket) \
                else list(sock or ()) or bind_listeners(self.config)
        except StartupError:
            await self.lifespan.shutdown()  # startup ran: let the app clean up
            raise
        self.sockets = socks
        self.ctx.start_date_timer(loop)
        if self.watchdog is not None:
            self.watchdog.start(loop)
        factory = self._protocol_factory(loop)
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            # The handshake runs before the protocol sees the connection; a client
            # that does not finish it in time is dropped (slowloris on TLS).
            tls = {"ssl": self.ssl_context,
                   "ssl_handshake_timeout": self.config.timeout_tls_handshake}
            factory = self._handshakes = Handshakes(factory, loop, self.ssl_context,
                                                    self.config.timeout_tls_handshake)
        for listening in socks:
            self.servers.append(await loop.create_server(
                factory, sock=listening, backlog=self.config.backlog, **tls))
        self.started = True
        if on_worker_ready is None:
            self._log_started(socks)
            if self._notifier is not None:
                urls = ", ".join(listener_url(s, self.config.tls) for s in socks)
                self._notifier.ready(f"serving on {urls}")
        self._install_signals(loop)
        if on_worker_ready is not None:
            on_worker_ready(self)
        try:
            await self.should_exit.wait()
        finally:
            await self.shutdown()

    def _protocol_factory(self, loop: asyncio.AbstractEventLoop) -> Callable[[], Any]:
        """What speaks first on a new connection: HTTP/1.1 (which hands over to
        HTTP/2 on ALPN h2, a PRI preface or h2c), or HTTP/2 alone (``--http h2``);
        with ``--proxy-protocol``, a front that reads the PROXY header first."""
        factory: Callable[[], Any] = lambda: H1Connection(self.ctx, loop)  # noqa: E731
        if self.config.http == "h2":
            from ..protocols.http2 import H2Connection

            factory = lambda: H2Connection(self.ctx, loop)  # noqa: E731
        if self.config.proxy_protocol != "off":  # --proxy-protocol: the header first
            from ..protocols.proxy_protocol import ProxyProtocolFront

            inner = factory
            return lambda: ProxyProtocolFront(self.ctx, loop, inner)
        return factory

    def stop(self) -> None:
        self.should_exit.set()

    def _systemd_watchdog(self, loop: asyncio.AbstractEventLoop, notify: Notifier) -> None:
        """``WATCHDOG=1`` from the event loop: a blocked loop stops the pings."""
        notify.ping()
        assert notify.watchdog is not None
        loop.call_later(notify.watchdog, self._systemd_watchdog, loop, notify)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread: the embedding program stops us

    def _on_signal(self, sig: int) -> None:
        if self.should_exit.is_set():
            logger.warning("Second %s: closing connections now", signal.Signals(sig).name)
            self._force_close("closed by a second signal")
            return
        logger.info("Received %s, shutting down gracefully", signal.Signals(sig).name)
        self.stop()

    def _force_close(self, why: str) -> None:
        """Cancel every request in flight (each one logged) and drop every connection."""
        self._force_exit = True
        self._abort_requests(why)
        for conn in list(self.ctx.connections):
            conn.close_now()

    def _abort_requests(self, why: str) -> None:
        tasks = self.ctx.tasks
        for task, stream in list(tasks.items()):
            if task.done() or task in self.aborted:
                continue
            self.aborted.add(task)
            client = stream.client
            who = f"{client[0]}:{client[1]}" if client else "-"
            logger.warning("Aborted %s %s from %s: %s", stream.method,
                           stream.raw_path.decode("latin-1"), who, why)
            task.cancel()
            self.ctx.forget_when_done(task)  # one that never started cannot leave on its own

    def _log_started(self, socks: Sequence[socket.socket]) -> None:
        """The banner, one line per listener (as the supervisor logs it)."""
        about = self.describe()
        for sock in socks:
            logger.info("%s", banner(listener_url(sock, self.config.tls), self.config,
                                     about["mode"], about["loop"], "1 process"))

    def describe(self) -> dict[str, str]:
        """What the banner says about this worker: the app's mode and the event loop."""
        if self.asgi_app is not None or isinstance(self.app, WSGIApp):
            from ..adapters.wsgi import default_threads  # imported already: a WSGI app runs

            threads = self.config.threads or default_threads()
            mode = (f"hybrid WSGI ({threads} threads) + ASGI" if self.asgi_app is not None
                    else f"WSGI ({threads} threads)")
        else:
            mode = "ASGI"
        loop = asyncio.get_running_loop()
        return {"mode": mode,
                "loop": "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"}

    async def _stop_accepting(self) -> None:
        """Close the listeners without dropping a connection accepted a moment ago.

        asyncio's selector loop accepts in the listener's callback but makes the
        connection's transport in a task one tick later, and that task fails on a
        closed server (``Server._attach`` asserts it is open, on every Python from
        3.10 to 3.13): the accepted connection was then closed unanswered, whenever
        it was garbage-collected. A rolling restart under load lost a request now
        and then that way (a reset in the client's TLS handshake). So the listeners
        are unwatched first (no more accepts), the accepted connections get their
        transports on the next tick, and only then do the servers close. uvloop
        makes the transport in the accept callback itself: nothing waits.
        """
        loop = asyncio.get_running_loop()
        if isinstance(loop, BaseSelectorEventLoop):
            for server in self.servers:
                for sock in server.sockets:
                    loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)  # behind the accept tasks already scheduled
        for server in self.servers:
            server.close()

    async def shutdown(self) -> None:
        """Stop accepting, finish in-flight requests, close the rest, run lifespan shutdown."""
        ctx = self.ctx
        ctx.shutting_down = True
        if self._notifier is not None:
            self._notifier.stop()
        await self._stop_accepting()
        # asyncio gives a connection it accepted just before the close its protocol
        # a loop tick later, and connection_made one more tick later: let them
        # happen, so the wait below sees those connections (or TLS handshakes).
        for _ in range(3):
            await asyncio.sleep(0)
        for conn in list(ctx.connections):
            conn.shutdown()
        timeout = self.config.timeout_graceful_shutdown
        if ctx.tasks and not self._force_exit:
            logger.info("Waiting for %d in-flight request(s), up to %gs "
                        "(--timeout-graceful-shutdown; Ctrl-C again to force)",
                        len(ctx.tasks), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        handshakes = self._handshakes
        while (ctx.tasks or any(not c.is_idle() or c.awaiting_first_request
                                for c in ctx.connections)
               or (handshakes is not None and handshakes.in_progress())) \
                and loop.time() < deadline and not self._force_exit:
            await asyncio.sleep(0.05)
            for conn in list(ctx.connections):
                conn.shutdown()
        if ctx.tasks:
            if not self._force_exit:
                logger.warning("Graceful shutdown timed out after %gs: cancelling %d request(s)",
                               timeout, len(ctx.tasks))
            self._abort_requests(f"--timeout-graceful-shutdown ({timeout:g}s) expired"
                                 if not self._force_exit else "closed by a second signal")
            await asyncio.gather(*ctx.tasks, return_exceptions=True)
        for conn in list(ctx.connections):
            conn.close_now()
        for server in self.servers:
            await server.wait_closed()
        ctx.stop_date_timer()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.handler.shutdown()  # WSGI: stop the idle pool threads
        await self.lifespan.shutdown()
        remove_unix_paths(self.config.addresses)
        if self.aborted:
            logger.warning("Shutdown complete; %d request(s) were aborted", len(self.aborted))
        else:
            logger.info("Shutdown complete")


def run(app: Any, config: Config) -> int:
    """One worker, in this process: load the app (or hybrid pair), serve; the exit code.

    The single-process path of :func:`bivio.process.main.serve`, and what each
    supervised worker runs. Raises :class:`bivio.process.loader.LoadError`.
    """
    try:
        # Before the app is imported: a bad certificate or key fails fast. Built
        # in every worker, so a SIGHUP rolling restart serves renewed files.
        ssl_context = build_ssl_context(config) if config.tls else None
    except StartupError as exc:
        logger.error("%s", exc)
        return exc.code
    asgi_app = None
    if config.asgi_app is not None:
        loaded, asgi_app = load_pair(app, config.asgi_app, factory=config.factory,
                                     app_dir=config.app_dir, interface=config.interface,
                                     django=config.django)
    else:
        loaded = load_app(app, factory=config.factory, app_dir=config.app_dir,
                          interface=config.interface)
    server = None
    try:
        setup_loop(config.loop)
        server = Server(loaded, config, asgi_app, ssl_context)
        asyncio.run(server.serve())
    except StartupError as exc:
        logger.error("%s", exc)
        return exc.code
    except KeyboardInterrupt:
        pass
    return exits.ABORTED if server is not None and server.aborted else exits.OK
