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
"""

from __future__ import annotations


class StreamBase:
    """The request head and the response's flags of one stream (see the module docstring).

    Subclasses must not declare these names again (in ``__slots__`` or as class
    attributes): a second descriptor would hide the field the adapters read.
    """

    __slots__ = (
        "method", "http_version", "scheme", "raw_path", "query_string", "headers",
        "client", "server", "tls", "body_length", "upgrade", "interface",
        "response_started", "response_complete", "disconnected",
    )
