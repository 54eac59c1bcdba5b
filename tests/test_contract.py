"""Every implementation offers the whole contract it is handed in as.

The contract's Protocols (core/stream.py, core/context.py) are what the layers
promise each other; a member missing on one implementation would only show up
when that pairing first runs (an HTTP/2 stream under the WSGI adapter, say).
"""

from __future__ import annotations

import inspect

import pytest
from fakes import FakeStream, FakeWebSocket

from bivio.adapters.asgi import ASGIHandler
from bivio.adapters.dispatch import Dispatcher
from bivio.adapters.static import StaticFiles
from bivio.adapters.wsgi import WSGIHandler
from bivio.core.context import Connection, StreamHandler
from bivio.core.stream import ByteChannel, Stream, WebSocketSession
from bivio.core.streambase import StreamBase
from bivio.protocols.http1 import H1Connection, H1Stream
from bivio.protocols.http2 import H2Connection, H2Stream, _StreamChannel
from bivio.protocols.websocket import WebSocket


def members(protocol: type) -> set[str]:
    """Attributes and methods a Protocol declares (its own, not object's)."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {n for n, v in vars(protocol).items()
              if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    names |= {"__call__"} if "__call__" in vars(protocol) else set()
    return names


def offered(cls: type) -> set[str]:
    names = set(dir(cls))
    for klass in cls.__mro__:
        names |= set(getattr(klass, "__slots__", ()))
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def test_the_contracts_are_not_empty():
    assert {"body_length", "close_after_response", "abort", "open_websocket",
            "receive_body", "send_body", "interface"} <= members(Stream)
    assert {"pause_intake", "resume_intake", "shutdown", "close_now", "is_idle",
            "awaiting_first_request"} <= members(Connection)
    assert {"bind", "shutdown", "__call__"} <= members(StreamHandler)


@pytest.mark.parametrize(("implementation", "protocol"), [
    (H1Stream, Stream),
    (FakeStream, Stream),
    (H2Stream, Stream),
    (H1Connection, Connection),
    (H2Connection, Connection),
    (_StreamChannel, ByteChannel),
    (WebSocket, Connection),
    (WebSocket, WebSocketSession),
    (FakeWebSocket, WebSocketSession),
    (ASGIHandler, StreamHandler),
    (WSGIHandler, StreamHandler),
    (StaticFiles, StreamHandler),
    (Dispatcher, StreamHandler),
], ids=lambda c: c.__name__)
def test_implementation_offers_every_member(implementation, protocol):
    missing = members(protocol) - offered(implementation)
    if implementation is FakeStream or implementation is FakeWebSocket:
        # Instance attributes set in __init__: check on an instance.
        instance = implementation() if implementation is FakeWebSocket else FakeStream()
        missing = {m for m in missing if not hasattr(instance, m)}
    if implementation is WebSocket and missing:
        # subprotocols / handshake_error / accepted are set in __init__ (compiled, they
        # are declared attributes of the extension type: dir() lists them).
        source = inspect.getsource(WebSocket.__init__)
        missing = {m for m in missing if f"self.{m}" not in source}
    assert missing == set()


# -- the stream's fields: StreamBase -------------------------------------------------------

FIELDS = ("method", "http_version", "scheme", "raw_path", "query_string", "headers", "client",
          "server", "tls", "body_length", "upgrade", "interface", "response_started",
          "response_complete", "disconnected", "sends_nowait")


def test_the_base_holds_the_contracts_fields():
    # The adapters read these off StreamBase (compiled: C struct members); each is a
    # field of the contract, and no field of the contract is left to a subclass.
    declared = {name for name in Stream.__annotations__}
    assert set(FIELDS) == declared
    instance = FakeStream()
    for name in FIELDS:
        assert hasattr(instance, name), name


@pytest.mark.parametrize("implementation", [H1Stream, H2Stream, FakeStream],
                         ids=lambda c: c.__name__)
def test_every_stream_is_a_stream_base_and_hides_none_of_its_fields(implementation):
    # A subclass that names a field again (a slot, a class attribute) puts a second
    # descriptor in front of the base's: Python code would read one value, the compiled
    # adapters the other.
    assert issubclass(implementation, StreamBase)
    for klass in implementation.__mro__[:implementation.__mro__.index(StreamBase)]:
        assert set(FIELDS).isdisjoint(vars(klass)), klass.__name__


def test_a_field_set_on_a_stream_is_the_one_the_base_holds():
    stream = FakeStream(method="PUT")
    stream.interface = "wsgi"
    for name, value in (("method", "PUT"), ("interface", "wsgi")):
        assert getattr(stream, name) == value
        assert StreamBase.__dict__[name].__get__(stream, type(stream)) == value
