"""Import ``MODULE:ATTR`` and decide what kind of application it is.

Errors are :class:`LoadError` with one line for the user: the CLI prints it and
exits 1 instead of showing a traceback of bivio's own frames.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]


class LoadError(Exception):
    """The app could not be loaded; ``str(error)`` is the one-line reason."""


def import_from_string(target: str, app_dir: str | None = ".") -> Any:
    module_name, sep, attrs = target.partition(":")
    if not sep or not module_name or not attrs:
        raise LoadError(f'app must be given as "MODULE:ATTRIBUTE", got {target!r}')
    if app_dir is not None:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise LoadError(f"could not import module {module_name!r}: no such module") from None
        raise LoadError(f"error while importing {module_name!r}: {_last_line(exc)}") from exc
    except BaseException as exc:  # the module itself raised: show where
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise LoadError(f"error while importing {module_name!r}: {_last_line(exc)}") from exc
    obj: Any = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attrs!r}") from None
    return obj


def _last_line(exc: BaseException) -> str:
    # importlib's own frames say nothing useful; a SyntaxError names its file itself.
    frames = [] if isinstance(exc, SyntaxError) else [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen ")
    ]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}{where}"  # one line, whatever the message


def _is_coroutine_callable(obj: Any) -> bool:
    if inspect.isclass(obj):
        return False
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - we need the bound method itself
    return inspect.iscoroutinefunction(call)


def detect_interface(app: Any) -> str:
    """Return ``"asgi3"``, ``"asgi2"`` or ``"wsgi"``, or raise :class:`LoadError`.

    The decision reads only the signature (nothing is called): a coroutine
    callable is ASGI 3 (scope, receive, send). A plain callable taking exactly two
    positional arguments is WSGI (environ, start_response): Django's
    ``WSGIHandler``, a Flask app, a function, or a class whose instances are the
    response iterable. One argument (or a class taking one) is ASGI 2. Three
    arguments, ``*args`` or an unreadable signature count as ASGI 3, as uvicorn
    does: middlewares often hide the signature. ``--interface`` overrides this
    guess; docs/wsgi.md shows what a wrong one looks like.
    """
    if not callable(app):
        raise LoadError(f"{type(app).__name__} object is not an ASGI application (not callable)")
    coroutine = _is_coroutine_callable(app)
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return "asgi3"
    params = [
        p for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    var_positional = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    if coroutine:
        # A coroutine function can only be ASGI 3: it must accept (scope, receive, send).
        required = [p for p in params if p.default is p.empty]
        if (len(params) >= 3 or var_positional) and len(required) <= 3:
            return "asgi3"
    elif len(params) == 2 and not var_positional:
        return "wsgi"
    elif inspect.isclass(app) or len(params) == 1:
        return "asgi2"
    elif len(params) == 3 or var_positional:
        return "asgi3"
    raise LoadError(
        f"{getattr(app, '__qualname__', type(app).__name__)} is not an ASGI application: "
        f"it takes {len(params)} positional arguments (ASGI 3 takes scope, receive, send; "
        f"WSGI takes environ, start_response)"
    )


class ASGI2Adapter:
    """Run a legacy double-callable app as an ASGI 3 one."""

    def __init__(self, app: Callable[[dict], Any]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)


class WSGIApp:
    """A loaded WSGI application: the server serves it through :mod:`bivio.wsgi`."""

    __slots__ = ("app",)

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app


def load_app(target: Any, *, factory: bool = False, app_dir: str | None = ".",
             interface: str = "auto") -> ASGIApp | WSGIApp:
    """Load ``target`` (a ``MODULE:ATTR`` string or an app object).

    Returns an ASGI 3 app, or a :class:`WSGIApp` wrapping a WSGI one.
    ``interface`` is ``--interface``: ``auto`` detects, anything else is trusted.
    """
    app = import_from_string(target, app_dir) if isinstance(target, str) else target
    if factory:
        if not callable(app):
            raise LoadError("--factory: the target is not callable")
        try:
            app = app()
        except Exception as exc:
            raise LoadError(f"the app factory raised {_last_line(exc)}") from exc
        if asyncio.iscoroutine(app):
            app.close()
            raise LoadError("--factory: the factory is a coroutine function; it must be sync")
    if interface == "auto":
        interface = detect_interface(app)
    elif not callable(app):
        raise LoadError(f"{type(app).__name__} object is not an application (not callable)")
    if interface == "wsgi":
        return WSGIApp(app)
    return ASGI2Adapter(app) if interface == "asgi2" else app


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
