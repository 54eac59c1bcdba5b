"""The optional compiled hot path: which modules, whether they are compiled, and the switch.

A few hot modules (the streams' common fields, the HTTP/1.1 and WebSocket
protocols, write flow control, the server context, the header validator, the
ASGI adapter with its scope builder and WebSocket part, the WSGI adapter) are
plain Python that Cython can compile in pure-Python mode: the ``.pxd`` file
beside each ``.py`` declares its classes as extension types with typed
attributes (a module of functions only has one too, saying so: compiled, its
calls skip the interpreter's frames), and ``setup.py`` builds them when Cython
and a C compiler are there (``pip install`` falls back to the ``.py`` files
otherwise). The ``.py`` files are the one source and run unchanged without
compiling.

``BIVIO_NO_EXTENSIONS=1`` in the environment: at build time nothing is compiled;
at run time the ``.py`` files are imported even where compiled modules exist
(a finder placed first on ``sys.meta_path`` by :func:`prefer_source`), so one
install runs the test suite both ways and a suspected compiler issue can be
ruled out without reinstalling. This module imports nothing of bivio's.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: The modules compiled when possible, in build order (setup.py reads this list).
MODULES = (
    "bivio.core.streambase",
    "bivio.protocols.flow",
    "bivio.core.headers",
    "bivio.core.context",
    "bivio.protocols.http1",
    "bivio.protocols.websocket",
    "bivio.adapters.asgi_scope",
    "bivio.adapters.asgi_ws",
    "bivio.adapters.asgi",
    "bivio.adapters.wsgi",
)

ENV = "BIVIO_NO_EXTENSIONS"


def disabled(environ: dict[str, str] | None = None) -> bool:
    """True when ``BIVIO_NO_EXTENSIONS`` asks for the pure-Python modules."""
    value = (os.environ if environ is None else environ).get(ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no")


def is_compiled(module: ModuleType) -> bool:
    """Was ``module`` loaded from an extension (a compiled ``.so``/``.pyd``)?"""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def status() -> str:
    """``"compiled"``, ``"pure Python"`` or ``"partly compiled"``: for the banner and the tests."""
    states = {is_compiled(importlib.import_module(name)) for name in MODULES}
    if states == {True}:
        return "compiled"
    return "pure Python" if states == {False} else "partly compiled"


class _SourceFirst:
    """A meta path finder: the listed modules from their ``.py`` file, never an extension."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name not in MODULES or not path:
            return None
        filename = name.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, filename)
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(name, source)
        return None


def prefer_source() -> None:
    """Import the pure-Python modules from now on (called by ``bivio/__init__.py``)."""
    if not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())  # type: ignore[arg-type]
