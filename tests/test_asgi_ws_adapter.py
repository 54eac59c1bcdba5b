"""The ASGI WebSocket adapter (bivio.adapters.asgi_ws) through ASGIHandler, no sockets."""

from __future__ import annotations

import asyncio
import copy
from types import MappingProxyType
from typing import Any

import pytest
from fakes import FakeStream, FakeWebSocket

from bivio.adapters.asgi import ASGIHandler
from bivio.core.stream import ClientDisconnected


class NowaitFakeWebSocket(FakeWebSocket):
    """With the fast paths of protocols.websocket.WebSocket: receive_nowait, send_nowait."""

    paused = False  # send_nowait() answers True: the adapter then awaits wait_sent()
    waits = 0

    def receive_nowait(self) -> str | bytes | None:
        return self._incoming.popleft() if self._incoming else None

    def send_nowait(self, data: str | bytes) -> bool:
        if self.closed is not None or self._client_closed is not None:
            raise ClientDisconnected("the WebSocket is closed")
        self.sent.append(data)
        return self.paused

    async def wait_sent(self) -> None:
        self.waits += 1


SESSION: type[FakeWebSocket] = FakeWebSocket


@pytest.fixture(autouse=True, params=[FakeWebSocket, NowaitFakeWebSocket],
                ids=["coroutines", "nowait"])
def session_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every test twice: a session with coroutines only, and one with the fast paths."""
    monkeypatch.setitem(globals(), "SESSION", request.param)
    return request.param


def upgrade(path: bytes = b"/ws", subprotocols: list[str] | None = None, **kwargs: Any
            ) -> tuple[FakeStream, FakeWebSocket]:
    ws = SESSION(subprotocols=subprotocols, handshake_error=kwargs.pop("error", None))
    return FakeStream(path=path, upgrade="websocket", websocket=ws, **kwargs), ws


def run(app: Any, stream: FakeStream, **handler_kwargs: Any) -> None:
    asyncio.run(ASGIHandler(app, **handler_kwargs)(stream))


async def accept(receive: Any, send: Any, **extra: Any) -> None:
    assert await receive() == {"type": "websocket.connect"}
    await send({"type": "websocket.accept", **extra})


# -- the scope ---------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "ws_scheme"), [("http", "ws"), ("https", "wss")])
def test_websocket_scope(scheme: str, ws_scheme: str) -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await accept(receive, send)
        await send({"type": "websocket.close"})

    stream, ws = upgrade(b"/app/chat/caf%C3%A9", ["chat.v2", "chat.v1"], query=b"room=1",
                         scheme=scheme, headers=[(b"host", b"example.org")],
                         client=("10.0.0.1", 4321), server=("10.0.0.2", 8000))
    run(app, stream, root_path="/app", state={"k": "v"})
    (scope,) = scopes
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["scheme"] == ws_scheme
    assert scope["http_version"] == "1.1"
    assert scope["path"] == "/app/chat/café"  # the proxy kept the root path: not doubled
    assert scope["raw_path"] == b"/app/chat/caf%C3%A9"
    assert scope["root_path"] == "/app"
    assert scope["query_string"] == b"room=1"
    assert scope["headers"] == [(b"host", b"example.org")]
    assert scope["client"] == ("10.0.0.1", 4321) and scope["server"] == ("10.0.0.2", 8000)
    assert scope["subprotocols"] == ["chat.v2", "chat.v1"]
    assert scope["state"] == {"k": "v"}
    assert "websocket.http.response" in scope["extensions"]
    assert "method" not in scope
    assert stream.interface == "asgi"


def test_websocket_scope_dicts_are_not_shared_between_connections() -> None:
    """Regression: ``extensions`` and ``asgi`` were module-level dicts shared by every scope."""
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(copy.deepcopy((scope["extensions"], scope["asgi"], scope["state"])))
        scope["extensions"]["x"] = 1
        scope["extensions"]["websocket.http.response"]["y"] = 1
        scope["asgi"]["z"] = 1
        scope["state"]["w"] = 1
        await accept(receive, send)

    handler = ASGIHandler(app, state={"k": "v"})
    for _ in range(2):
        stream, _ws = upgrade()
        asyncio.run(handler(stream))
    first, second = seen
    assert second == first
    assert second == ({"websocket.http.response": {}},
                      {"version": "3.0", "spec_version": "2.4"}, {"k": "v"})


# -- the conversation ----------------------------------------------------------------------


def test_accept_receive_send_close() -> None:
    received: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send, subprotocol="chat.v1", headers=[(b"x-room", b"1")])
        for _ in range(2):
            message = await receive()
            received.append(message)
            if "text" in message:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})

    stream, ws = upgrade(subprotocols=["chat.v1"])
    ws.client_send("hello")
    ws.client_send(b"\x01\x02")
    run(app, stream)
    assert ws.accept_args == ("chat.v1", [(b"x-room", b"1")])
    assert received == [{"type": "websocket.receive", "text": "hello"},
                        {"type": "websocket.receive", "bytes": b"\x01\x02"}]
    assert ws.sent == ["HELLO", b"\x02\x01"]
    assert ws.closed == (4000, "done")
    assert stream.status is None  # no HTTP response: the session answered the handshake
    assert not ws.aborted and not stream.aborted


@pytest.mark.parametrize("message_type", [dict, MappingProxyType], ids=["dict", "mapping"])
def test_send_reads_any_mapping_alike(message_type: Any) -> None:
    """The fast path reads plain dicts directly (compiled: no method lookups); any other
    mapping takes the general path and is sent the same."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send)
        await send(message_type({"type": "websocket.send", "text": "hi"}))
        await send(message_type({"type": "websocket.send", "bytes": b"\x01"}))
        await send(message_type({"type": "websocket.close", "code": 4001}))

    stream, ws = upgrade()
    run(app, stream)
    assert ws.sent == ["hi", b"\x01"]
    assert ws.closed == (4001, "")
    assert not ws.aborted and not stream.aborted


def test_messages_arriving_while_the_app_waits() -> None:
    received: list[dict[str, Any]] = []

    async def main() -> None:
        stream, ws = upgrade()
        accepted = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await accept(receive, send)
            accepted.set()
            while True:
                message = await receive()
                received.append(message)
                if message["type"] == "websocket.disconnect":
                    return

        task = asyncio.create_task(ASGIHandler(app)(stream))
        await accepted.wait()
        ws.client_send("one")
        ws.client_close(1001, "going away")
        await task
        assert ws.closed is None  # the client closed: nothing more to send

    asyncio.run(main())
    assert received == [{"type": "websocket.receive", "text": "one"},
                        {"type": "websocket.disconnect", "code": 1001, "reason": "going away"}]


def test_send_after_the_client_closed_raises_and_is_not_logged(errors: Any) -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send)
        assert (await receive())["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "late"})
        except OSError as exc:
            raised.append(exc)
            raise

    stream, ws = upgrade()
    ws.client_close(1000)
    run(app, stream)
    assert len(raised) == 1 and isinstance(raised[0], ClientDisconnected)
    assert ws.sent == [] and errors() == []


def test_receive_before_accept_waits_for_the_client_to_leave() -> None:
    received: list[dict[str, Any]] = []

    async def main() -> None:
        stream, _ws = upgrade()
        waiting = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            received.append(await receive())
            waiting.set()
            received.append(await receive())

        task = asyncio.create_task(ASGIHandler(app)(stream))
        await waiting.wait()
        assert not task.done()
        stream.disconnect()
        await task
        assert stream.status is None  # nobody left to answer

    asyncio.run(main())
    assert received == [{"type": "websocket.connect"},
                        {"type": "websocket.disconnect", "code": 1006, "reason": ""}]


# -- denials: the answer is HTTP ------------------------------------------------------------


def test_close_before_accept_is_403() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.close", "code": 1008})

    stream, ws = upgrade()
    run(app, stream)
    assert stream.status == 403 and stream.closes_after
    assert bytes(stream.body) == b"Forbidden"
    assert not ws.accepted and ws.closed is None


def test_handshake_error_is_answered_without_calling_the_app() -> None:
    called: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(True)

    stream, ws = upgrade(error=(426, "Unsupported WebSocket version"))
    run(app, stream)
    assert called == []
    assert stream.status == 426 and stream.closes_after
    assert bytes(stream.body) == b"Unsupported WebSocket version"
    assert not ws.accepted


def test_websocket_http_response_extension() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b"log in ",
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"first"})

    stream, ws = upgrade()
    run(app, stream)
    assert stream.status == 401
    assert stream.response_headers == [(b"www-authenticate", b"Bearer")]
    assert bytes(stream.body) == b"log in first"
    assert stream.response_complete and not stream.aborted
    assert not ws.accepted


def test_unfinished_websocket_http_response_aborts() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 400})
        await send({"type": "websocket.http.response.body", "body": b"x", "more_body": True})

    stream, _ws = upgrade()
    run(app, stream)
    assert stream.status == 400 and stream.aborted


# -- errors ------------------------------------------------------------------------------


def test_app_raising_before_accept_gives_500(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        raise ZeroDivisionError("boom")

    stream, ws = upgrade()
    run(app, stream)
    assert stream.status == 500 and stream.closes_after
    assert not ws.accepted and ws.closed is None
    (record,) = errors()
    assert record.getMessage() == "Exception in ASGI application"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ZeroDivisionError)


def test_app_raising_after_accept_closes_with_1011(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send)
        raise ZeroDivisionError("boom")

    stream, ws = upgrade()
    run(app, stream)
    assert ws.closed == (1011, "Internal Error")
    assert stream.status is None  # nothing over HTTP once accepted
    assert len(errors()) == 1


def test_app_returning_without_closing_closes_with_1000(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send)
        await send({"type": "websocket.send", "text": "bye"})

    stream, ws = upgrade()
    run(app, stream)
    assert ws.sent == ["bye"]
    assert ws.closed == (1000, "")
    assert errors() == []


def test_app_returning_without_accepting_gives_500(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()

    stream, ws = upgrade()
    run(app, stream)
    assert stream.status == 500 and stream.closes_after and not ws.accepted
    assert ["without accepting" in r.getMessage() for r in errors()] == [True]


@pytest.mark.parametrize(("messages", "error"), [
    ([{"type": "websocket.send", "text": "x"}], "before 'websocket.accept'"),
    ([{"type": "websocket.http.response.body", "body": b"x"}], "without a response start"),
    ([{"type": "http.response.start", "status": 200}], "unexpected ASGI message type"),
])
def test_send_errors_before_accept_give_500(messages: list[dict[str, Any]], error: str,
                                            errors: Any) -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        try:
            for message in messages:
                await send(message)
        except RuntimeError as exc:
            raised.append(exc)
            raise

    stream, ws = upgrade()
    run(app, stream)
    assert len(raised) == 1 and error in str(raised[0])
    assert stream.status == 500 and stream.closes_after
    assert not ws.accepted and len(errors()) == 1


@pytest.mark.parametrize(("message", "error"), [
    ({"type": "websocket.accept"}, "after the handshake was answered"),
    ({"type": "websocket.http.response.start", "status": 403}, "after the handshake"),
])
def test_send_errors_after_accept_close_with_1011(message: dict[str, Any], error: str,
                                                  errors: Any) -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send)
        try:
            await send(message)
        except RuntimeError as exc:
            raised.append(exc)
            raise

    stream, ws = upgrade()
    run(app, stream)
    assert len(raised) == 1 and error in str(raised[0])
    assert ws.closed == (1011, "Internal Error")
    assert stream.status is None


def test_cancelled_app_aborts_the_session() -> None:
    async def main() -> tuple[FakeStream, FakeWebSocket]:
        stream, ws = upgrade()
        waiting = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await accept(receive, send)
            waiting.set()
            await receive()  # nothing comes

        task = asyncio.create_task(ASGIHandler(app)(stream))
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return stream, ws

    stream, ws = asyncio.run(main())
    assert ws.aborted and not stream.aborted


def test_close_without_a_code_is_1000_and_closing_twice_is_harmless(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send)
        await send({"type": "websocket.close"})
        await send({"type": "websocket.close", "code": 4001})
        assert (await receive())["type"] == "websocket.disconnect"

    stream, ws = upgrade()
    run(app, stream)
    assert ws.closed == (1000, "")
    assert errors() == []


def test_fast_path_errors_are_raised_where_the_app_awaits(session_kind: Any) -> None:
    """send() that needs no coroutine still raises at the await, as a coroutine would."""
    if session_kind is not NowaitFakeWebSocket:
        pytest.skip("the fast path only")
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await accept(receive, send)
        pending = send({"type": "websocket.send"})  # neither text nor bytes
        seen.append("called")
        with pytest.raises(ValueError, match="needs 'text' or 'bytes'"):
            await pending
        ws.paused = True
        await send({"type": "websocket.send", "bytes": bytearray(b"x")})
        seen.append(ws.waits)
        ws.client_close(1001)
        assert (await receive())["type"] == "websocket.disconnect"
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.send", "text": "late"})
        seen.append("done")

    stream, ws = upgrade()
    run(app, stream)
    assert seen == ["called", 1, "done"]
    assert ws.sent == [b"x"]
