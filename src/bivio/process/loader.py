"""Import ``MODULE:ATTR`` and decide what kind of application it is.

Errors are :class:`LoadError` with one line for the user: the CLI prints it and
exits 1 instead of showing a traceback of bivio's own frames. The traceback is
kept (``LoadError.details``) and logged at debug level (``--log-level debug``).

A Django app is made to resolve its URLconf (which imports every view) before
it counts as loaded: Django does that lazily on the first request, so a broken
``views.py`` would otherwise start a healthy-looking worker whose every answer
is a 500 (and, under ``--reload``, replace the worker that still worked).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..core.logs import logger

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]


log_tracebacks = True
"""Log a load error's details at debug level where it happens. A supervised worker
turns this off and hands the details to its supervisor, which logs them once."""


class LoadError(Exception):
    """The app could not be loaded; ``str(error)`` is the one-line reason.

    ``details``: the traceback (or what was searched) behind it, for debug logs.
    """

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


def _failure(message: str, details: str) -> LoadError:
    if log_tracebacks:
        logger.debug("%s\n%s", message, details.rstrip())
    return LoadError(message, details)


_IMPORTLIB = os.path.dirname(importlib.__file__) + os.sep


def _traceback(exc: BaseException) -> str:
    """The traceback without bivio's and importlib's frames (they say nothing useful)."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list([
        f for f in tb.stack
        if not (f.filename.startswith(("<frozen ", _IMPORTLIB)) or f.filename == __file__)
    ])
    return "".join(tb.format())


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
            searched = "searched sys.path:\n" + "".join(f"  {p!r}\n" for p in sys.path)
            raise _failure(f"could not import module {module_name!r}: no such module"
                           f"{app_dir_hint(module_name, app_dir)}", searched) from None
        raise _failure(f"error while importing {module_name!r}: {_last_line(exc)}",
                       _traceback(exc)) from exc
    except BaseException as exc:  # the module itself raised: show where
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _failure(f"error while importing {module_name!r}: {_last_line(exc)}",
                       _traceback(exc)) from exc
    obj: Any = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attrs!r}") from None
    return obj


_HINT_DEPTH = 3
_HINT_MAX_DIRS = 2000
_HINT_SKIP = {"__pycache__", "node_modules", "site-packages", "dist-packages"}


def app_dir_hint(module_name: str, app_dir: str | None, root: str | Path = ".") -> str:
    """``; examples/example/asgi.py exists: try --app-dir examples`` or ``""``.

    Looks below ``root`` (the working directory), nearest first, a few levels
    deep, for the file the module would be, skipping hidden directories and
    virtualenvs, and never the directory that was already searched.
    """
    parts = module_name.split(".")
    if not all(part.isidentifier() for part in parts):
        return ""
    base = Path(root)
    searched = Path(app_dir).resolve() if app_dir is not None else None
    queue: deque[tuple[Path, int]] = deque([(base, 0)])
    seen = 0
    while queue and seen < _HINT_MAX_DIRS:
        directory, depth = queue.popleft()
        seen += 1
        found = _module_path(directory, parts)
        if found is not None and directory.resolve() != searched:
            where = os.path.relpath(directory, base)
            return f"; {os.path.relpath(found, base)} exists: try --app-dir {where}"
        if depth >= _HINT_DEPTH:
            continue
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in children:
            if (entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
                    and entry.name not in _HINT_SKIP
                    and not os.path.exists(os.path.join(entry.path, "pyvenv.cfg"))):
                queue.append((Path(entry.path), depth + 1))
    return ""


def _module_path(directory: Path, parts: list[str]) -> Path | None:
    """The file that would be module ``a.b.c`` with ``directory`` on sys.path, if any."""
    path = directory.joinpath(*parts)
    if not all(directory.joinpath(*parts[:i]).is_dir() for i in range(1, len(parts))):
        return None
    for candidate in (path.with_name(path.name + ".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def check_django_urls() -> None:
    """Make a Django app resolve its URLconf now, importing its views; :class:`LoadError` if not.

    Does nothing unless Django is imported and set up (``settings`` configured,
    apps ready) with a ``ROOT_URLCONF``. ``manage.py runserver`` does the same
    (its system checks import the URLconf) before it serves.
    """
    if "django" not in sys.modules:
        return
    try:
        from django.apps import apps
        from django.conf import settings
        from django.urls import get_resolver

        if not (settings.configured and apps.ready):
            return
        urlconf = getattr(settings, "ROOT_URLCONF", None)
    except Exception:  # an old or half-set-up Django: leave it to the first request
        return
    if not urlconf:
        return
    try:
        get_resolver().url_patterns  # noqa: B018 - the property imports the URLconf and views
    except Exception as exc:
        raise _failure(f"Django URLconf {urlconf!r} does not load: {_last_line(exc)}",
                       _traceback(exc)) from exc


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
            raise _failure(f"the app factory raised {_last_line(exc)}", _traceback(exc)) from exc
        if asyncio.iscoroutine(app):
            app.close()
            raise LoadError("--factory: the factory is a coroutine function; it must be sync")
    if interface == "auto":
        interface = detect_interface(app)
    elif not callable(app):
        raise LoadError(f"{type(app).__name__} object is not an application (not callable)")
    check_django_urls()
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
        raise LoadError(f"{where}{exc}", exc.details) from exc
    if not isinstance(wsgi, WSGIApp):
        raise LoadError(f"hybrid mode: {_name(app)} is an ASGI application, but MODULE:ATTR "
                        f"must be the WSGI one (the ASGI app goes in --asgi-app)")
    try:
        asgi = load_app(asgi_target, app_dir=None)  # sys.path already has --app-dir
    except LoadError as exc:
        raise LoadError(f"{where or '--asgi-app: '}{exc}", exc.details) from exc
    if isinstance(asgi, WSGIApp):
        raise LoadError(f"--asgi-app: {asgi_target} is a WSGI application; --asgi-app takes "
                        f"the ASGI one (MODULE:ATTR is the WSGI app)")
    return wsgi, asgi


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
