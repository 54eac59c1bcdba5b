"""The fields every stream has, in one base class for the protocols' streams.

The stream contract (:mod:`bivio.core.stream`) is attributes and methods on
whatever object a protocol makes per request. Adapters read the request head
and the response's flags of every request off that object: compiled, a read
of an object whose class they cannot name is a generic attribute lookup, about
150 instructions each, and a WSGI hello request made some twenty of them. So
the fields live here, in a class the protocols' streams derive from and the
adapters can name: compiled (``streambase.pxd``), it is an extension type
whose fields are C struct members the adapters read directly. Nothing else is
here: framing, waiting and sending stay the protocols' own.

What each field means is the contract's (see :mod:`bivio.core.stream`); a
stream sets them all when it is made. Uncompiled, the class is an empty base
with ``__slots__``.

The same holds for the two sends a stream may offer without a coroutine
(``sends_nowait``): declared here, an adapter's call goes straight to the
protocol's compiled method instead of through a lookup and a bound method.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any


class StreamBase:
    """The request head and the response's flags of one stream (see the module docstring).

    Subclasses must not declare these names again (in ``__slots__`` or as class
    attributes): a second descriptor would hide the field the adapters read.
    """

    __slots__ = (
        "method", "http_version", "scheme", "raw_path", "query_string", "headers",
        "client", "server", "tls", "body_length", "upgrade", "interface",
        "response_started", "response_complete", "disconnected", "sends_nowait",
    )

    # A stream whose ``sends_nowait`` is true overrides both; the others never see them
    # called (an adapter looks at the flag first).

    def start_response_nowait(self, status: int, headers: Any, trailers: bool = False) -> None:
        """``start_response()`` without a coroutine: it never waits."""
        raise NotImplementedError(f"{type(self).__name__} does not send without a coroutine")

    def send_body_nowait(self, data: bytes, more: bool) -> Awaitable[None] | None:
        """``send_body()`` as far as it goes at once: None when done, else what to await."""
        raise NotImplementedError(f"{type(self).__name__} does not send without a coroutine")
