"""URL paths: the one root-path rule, hybrid mode's prefixes and ``--static`` mounts.

Every layer that looks at a request path (the ASGI scope, the WSGI environ,
the hybrid dispatcher, the static-files handler) and every option that names
one (``--root-path``, ``--asgi-path``, ``--static``) goes through this module,
so they all agree on what "under a prefix" means: whole path segments,
compared on the percent-decoded path.

Errors are :class:`PathError` (a :class:`ValueError`) with one line for the
user; :mod:`bivio.core.config` turns them into option errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, unquote, unquote_to_bytes

P = TypeVar("P", str, bytes)


class PathError(ValueError):
    """A path option bivio cannot use; the message is one line for the user."""


# -- the root path (--root-path) --------------------------------------------------------


def strip_root(path: P, root: P) -> P | None:
    """``path`` without the mount point ``root``, or None when it is not under it.

    A proxy that serves the app under ``/app`` either strips the prefix
    (the request says ``/x``) or keeps it (``/app/x``). Both reach the app the
    same way: the part below the root. ``root`` has no trailing slash; an
    empty root is no root and returns None.
    """
    if not root or not path.startswith(root):
        return None
    n = len(root)
    if len(path) == n or path[n:n + 1] in ("/", b"/"):
        return path[n:]
    return None


def app_path(raw_path: bytes, root: str) -> str:
    """The percent-decoded path below ``root`` as latin-1 text (WSGI ``PATH_INFO``)."""
    path = (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode("latin-1")
    if not root:
        return path
    below = strip_root(path, root)
    return path if below is None else below


def scope_paths(raw_path: bytes, root: str) -> tuple[str, bytes]:
    """``path`` and ``raw_path`` for an ASGI scope mounted at ``root`` (``--root-path``).

    Both include the root path (the ASGI spec, and what Starlette and Django
    expect). A path the proxy stripped gets the root prepended; one where the
    proxy kept it is not prefixed twice (the WSGI environ splits the same
    path into ``SCRIPT_NAME`` and ``PATH_INFO`` by the same rule).
    """
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    if not root or strip_root(path, root) is not None:
        return path, raw_path
    return root + path, root.encode("latin-1") + raw_path


# -- hybrid mode's --asgi-path prefixes --------------------------------------------------


def normalize_prefix(prefix: str) -> bytes:
    """``/events/`` -> ``b"/events"``: the form :func:`under_prefix` compares with.

    A prefix must start with ``/``; a trailing slash is dropped so that both
    spellings mean the same thing. ``/`` alone would send everything to the
    ASGI app, which is what serving the ASGI app alone already does, so it is
    refused rather than silently making the WSGI app unreachable.
    """
    if not prefix.startswith("/"):
        raise PathError(f"--asgi-path: must start with '/', got {prefix!r}")
    trimmed = prefix.rstrip("/")
    if not trimmed:
        raise PathError("--asgi-path: '/' would send every request to the ASGI app; "
                        "serve the ASGI app alone instead")
    if any(c in trimmed for c in "?#\r\n\0 "):
        raise PathError(f"--asgi-path: not a path prefix: {prefix!r}")
    try:
        return trimmed.encode("latin-1")
    except UnicodeEncodeError:
        # Non-ASCII paths arrive percent-encoded and are compared decoded as UTF-8.
        return trimmed.encode("utf-8")


def under_prefix(path: bytes, prefixes: tuple[bytes, ...]) -> bool:
    """True if ``path`` is one of ``prefixes`` or lies below one (segment boundary)."""
    return any(strip_root(path, prefix) is not None for prefix in prefixes)


# -- --static mounts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """One ``--static`` mount: ``prefix`` (bytes, ends with ``/``) served from ``root``."""

    prefix: bytes
    root: str


def parse_mount(spec: str) -> Mount:
    """Parse ``URL_PREFIX=DIRECTORY``; the directory must exist (checked once, at start)."""
    prefix, sep, directory = spec.partition("=")
    if not sep or not prefix or not directory:
        raise PathError(f"--static: expected URL_PREFIX=DIRECTORY, got {spec!r}")
    if not prefix.startswith("/"):
        raise PathError(f"--static: URL prefix must start with '/', got {prefix!r}")
    if any(c in prefix for c in "?#\\\0") or "/../" in prefix + "/" or "/./" in prefix + "/":
        raise PathError(f"--static: invalid URL prefix {prefix!r}")
    root = os.path.realpath(directory)
    if not os.path.isdir(root):
        raise PathError(f"--static: {directory!r} is not a directory")
    if not prefix.endswith("/"):
        prefix += "/"
    return Mount(quote(prefix, safe="/:@!$&'()*+,;=-._~%").encode("ascii"), root)


def normalize_mounts(specs: Iterable[str]) -> tuple[str, ...]:
    """Validate ``--static`` values; directories made absolute so workers agree on them."""
    return tuple(f"{m.prefix.decode('ascii')}={m.root}" for m in map(parse_mount, specs))


def parse_mounts(specs: Iterable[str]) -> tuple[Mount, ...]:
    """All mounts, longest prefix first so ``/static/admin/`` wins over ``/static/``."""
    mounts = [parse_mount(s) for s in specs]
    return tuple(sorted(mounts, key=lambda m: len(m.prefix), reverse=True))
