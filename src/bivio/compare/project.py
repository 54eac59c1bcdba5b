"""What ``bivio compare`` learns from the Django project itself, to explain the numbers.

The inspection runs in a child Python (``python -m bivio.compare.project``):
importing a project's settings, URLconf and ASGI app sets Django up for the
whole process, and an ASGI app that fails to import must not take the
comparison down with it. The child prints one JSON document after a marker
line (a project may print or log anything while it starts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "@@bivio-compare-inspection@@"
MAX_DEFAULT_PATHS = 6
"""Default paths are the URLconf's argument-free GET patterns; more than this many
would stretch the minute the comparison is meant to take."""


class ProjectError(Exception):
    """The project cannot be compared as given (one line that says what to change)."""


@dataclass
class ProjectInfo:
    """The facts the verdict and the reports quote."""

    project: str
    paths: list[str] = field(default_factory=list)
    views: list[dict[str, Any]] = field(default_factory=list)
    middleware: list[dict[str, Any]] = field(default_factory=list)
    databases: list[dict[str, Any]] = field(default_factory=list)
    websocket_routes: list[str] = field(default_factory=list)
    asgi_kind: str = ""
    asgi_error: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    localhost_allowed: bool = True
    debug: bool = False

    @property
    def async_paths(self) -> list[str]:
        return [v["path"] for v in self.views if v["async"] and v["path"] is not None]

    @property
    def needs_asgi(self) -> bool:
        """WebSocket routes rule out pure WSGI: it cannot speak WebSocket at all."""
        return bool(self.websocket_routes)

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "default_paths": self.paths, "views": self.views,
                "middleware": self.middleware, "databases": self.databases,
                "websocket_routes": self.websocket_routes, "asgi_kind": self.asgi_kind,
                "asgi_error": self.asgi_error, "allowed_hosts": self.allowed_hosts,
                "localhost_allowed": self.localhost_allowed, "debug": self.debug}

    def notes(self) -> list[str]:
        """Plain sentences about the project, for the terminal and the HTML page."""
        out = []
        sync = [v for v in self.views if not v["async"]]
        asyncs = [v for v in self.views if v["async"]]
        named = ", ".join(v["route"] for v in asyncs[:5]) or "none"
        out.append(f"views: {len(sync)} sync, {len(asyncs)} async ({named}); under ASGI "
                   "Django runs each sync view through sync_to_async, on one thread per "
                   "worker by default (thread_sensitive)")
        sync_only = [m["name"] for m in self.middleware if not m["async_capable"]]
        hooks = [m["name"] for m in self.middleware if m["async_capable"] and m["mixin_hooks"]]
        if sync_only:
            out.append(f"middleware: {len(self.middleware)} entries; sync-only (Django adapts "
                       f"the chain around each under ASGI): {', '.join(sync_only)}")
        else:
            out.append(f"middleware: {len(self.middleware)} entries, none sync-only")
        if hooks:
            out.append(f"middleware whose process_request/process_response hooks run through "
                       f"sync_to_async under ASGI: {len(hooks)}")
        for db in self.databases:
            age = db["conn_max_age"]
            if age == 0:
                reuse = "a new database connection per request in every mode"
            else:
                reuse = ("kept per thread: under WSGI by each of bivio's threads; under ASGI by "
                         "Django's sync thread for sync views, while async ORM calls move "
                         "between threads and reuse them less")
            kind = db["engine"].rsplit(".", 1)[-1]
            out.append(f"database {db['alias']} ({kind}): CONN_MAX_AGE={age}: {reuse}")
        if self.websocket_routes:
            out.append(f"WebSocket routes ({self.asgi_kind}): {', '.join(self.websocket_routes)}: "
                       "these need ASGI, so pure WSGI is ruled out")
        elif self.asgi_error is not None:
            out.append(f"the ASGI app does not import ({self.asgi_error}): whether the project "
                       "has WebSocket routes is unknown")
        else:
            out.append("no WebSocket routes found: pure WSGI can serve everything")
        return out


def inspect_project(project: str, app_dir: str, env: dict[str, str], cwd: str,
                    timeout: float = 120.0) -> ProjectInfo:
    """Inspect ``project`` in a child Python; raise :class:`ProjectError` with one line."""
    argv = [sys.executable, "-m", "bivio.compare.project", project, app_dir]
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProjectError(f"inspecting {project} took over {timeout:g} s "
                           "(does importing its settings or URLconf block?)") from None
    head, sep, tail = done.stdout.rpartition(MARKER)
    if not sep:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ProjectError(f"inspecting {project} failed: {last}")
    data = json.loads(tail)
    if data.get("error"):
        raise ProjectError(data["error"])
    return ProjectInfo(**{k: v for k, v in data.items() if k != "error"})


# -- the child's side -----------------------------------------------------------------------------


def _route_text(pattern: Any) -> str | None:
    """The literal path of an argument-free pattern, or None if it takes arguments."""
    from django.urls.resolvers import RegexPattern, RoutePattern

    if isinstance(pattern, RoutePattern):
        return None if pattern.converters else str(pattern._route)
    if isinstance(pattern, RegexPattern):
        if pattern.regex.groups:
            return None
        text = pattern._regex.lstrip("^").rstrip("$").replace("\\/", "/")
        if any(ch in text for ch in ".*+?[](){}|\\"):
            return None
        return text
    return None


def _walk(patterns: list[Any], prefix: str | None, shown: str, depth: int,
          out: list[dict[str, Any]]) -> None:
    from asgiref.sync import iscoroutinefunction
    from django.urls import URLPattern, URLResolver

    for entry in patterns:
        text = _route_text(entry.pattern)
        path = None if prefix is None or text is None else prefix + text
        route = shown + str(entry.pattern)
        if isinstance(entry, URLResolver):
            _walk(entry.url_patterns, path, route, depth + 1, out)
        elif isinstance(entry, URLPattern):
            callback = entry.callback
            view_class = getattr(callback, "view_class", None)
            is_async = bool(getattr(view_class, "view_is_async", False)) or \
                iscoroutinefunction(callback)
            name = getattr(view_class or callback, "__qualname__", repr(callback))
            module = getattr(view_class or callback, "__module__", "")
            out.append({"route": _readable("/" + route.replace("^", "").replace("$", "")),
                        "path": None if path is None else "/" + path,
                        "view": f"{module}.{name}", "async": is_async,
                        "depth": depth if text else max(depth - 1, 0)})


def _readable(route: str) -> str:
    """``/ws/chat/(?P<room>[\\w-]{1,50})/`` -> ``/ws/chat/<room>/``: what a person reads."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", route)


def _websocket_routes(app: Any) -> tuple[str, list[str]]:
    """The WebSocket routes of a Channels router (unwrapping its middleware)."""
    mapping = getattr(app, "application_mapping", None)
    if not isinstance(mapping, dict):
        return "not a Channels ProtocolTypeRouter", []
    if "websocket" not in mapping:
        return "Channels, HTTP only", []
    routes: list[str] = []
    inner = mapping["websocket"]
    for _ in range(20):
        found = getattr(inner, "routes", None)
        if found is not None:
            routes = [_readable("/" + str(r.pattern).lstrip("^").rstrip("$")) for r in found]
            break
        nxt = getattr(inner, "inner", None) or getattr(inner, "application", None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    return "Channels", routes or ["(a websocket handler)"]


def probe(project: str, app_dir: str) -> dict[str, Any]:
    """Everything :class:`ProjectInfo` holds, or ``{"error": one line}``."""
    import importlib
    import importlib.util

    where = Path(app_dir).resolve()
    sys.path.insert(0, str(where))
    try:
        found = importlib.util.find_spec(project)
    except (ImportError, ValueError):
        found = None
    if found is None:
        return {"error": f"--django {project}: no package {project!r} in {where}: run bivio "
                         "compare from the directory with manage.py (or pass --app-dir DIR), "
                         "with the name of the package that holds settings.py"}
    try:
        has_settings = importlib.util.find_spec(f"{project}.settings") is not None
    except ImportError:
        has_settings = False
    if not has_settings and "DJANGO_SETTINGS_MODULE" not in os.environ:
        return {"error": f"--django {project}: {project} has no settings module: name the "
                         "package that holds settings.py (or set DJANGO_SETTINGS_MODULE)"}
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{project}.settings")
    import django

    try:
        django.setup()
    except Exception as exc:  # noqa: BLE001 - any failure of the user's settings, in one line
        return {"error": f"--django {project}: Django cannot start: {type(exc).__name__}: {exc}"}
    from django.conf import settings
    from django.http.request import validate_host
    from django.urls import get_resolver
    from django.utils.module_loading import import_string

    views: list[dict[str, Any]] = []
    try:
        _walk(get_resolver().url_patterns, "", "", 0, views)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"--django {project}: the URLconf does not load: "
                         f"{type(exc).__name__}: {exc}"}
    candidates = sorted((v for v in views if v["path"] is not None),
                        key=lambda v: v["depth"])
    paths: list[str] = []
    for view in candidates:
        if view["depth"] == 0 and view["path"] not in paths:
            paths.append(view["path"])
    middleware = []
    for name in settings.MIDDLEWARE:
        try:
            obj = import_string(name)
        except ImportError:
            middleware.append({"name": name, "async_capable": False, "mixin_hooks": False})
            continue
        hooks = any(hasattr(obj, h) for h in ("process_request", "process_response"))
        middleware.append({"name": name,
                           "async_capable": bool(getattr(obj, "async_capable", False)),
                           "mixin_hooks": hooks})
    databases = [{"alias": alias, "engine": str(db.get("ENGINE", "")),
                  "conn_max_age": db.get("CONN_MAX_AGE", 0) or 0,
                  "pool": bool((db.get("OPTIONS") or {}).get("pool"))}
                 for alias, db in settings.DATABASES.items()]
    kind, ws_routes, asgi_error = "", [], None
    try:
        module = importlib.import_module(f"{project}.asgi")
        kind, ws_routes = _websocket_routes(module.application)
    except Exception as exc:  # noqa: BLE001 - reported, and the ASGI mode fails on its own
        asgi_error = f"{type(exc).__name__}: {exc}"
    hosts = list(settings.ALLOWED_HOSTS)
    effective = hosts or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return {"project": project, "paths": paths[:MAX_DEFAULT_PATHS],
            "views": [{k: v for k, v in view.items() if k != "depth"} for view in views],
            "middleware": middleware, "databases": databases, "websocket_routes": ws_routes,
            "asgi_kind": kind, "asgi_error": asgi_error, "allowed_hosts": hosts,
            "localhost_allowed": validate_host("127.0.0.1", effective),
            "debug": bool(settings.DEBUG)}


if __name__ == "__main__":
    result = probe(sys.argv[1], sys.argv[2])
    sys.stdout.write("\n" + MARKER + json.dumps(result, default=str) + "\n")
