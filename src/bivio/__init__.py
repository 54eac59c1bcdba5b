"""bivio: a Python application server for WSGI and ASGI applications, or both at once."""

from __future__ import annotations

from typing import Any

from . import compiled

if compiled.disabled():  # before any compiled module can be imported
    compiled.prefer_source()

from .core.version import __version__  # noqa: E402

__all__ = ["__version__", "run"]


def run(app: Any = None, **options: Any) -> int:
    """Serve ``app`` (a WSGI or ASGI app object, or a ``"module:attr"`` string) until stopped.

    ``options`` take the CLI flags' names in snake_case (``port=8001``,
    ``log_level="debug"``, ``limit_request_body=1_000_000``). Invalid values
    raise :class:`bivio.core.config.ConfigError`; an app that cannot be loaded raises
    :class:`bivio.process.loader.LoadError`. Returns the process exit code (0 after a
    clean shutdown). Hybrid mode: ``run("mysite.wsgi:application",
    asgi_app="mysite.asgi:application", asgi_path=["/events/"])``, or
    ``run(django="mysite")``.
    """
    from .process.main import serve

    return serve(app, options)
