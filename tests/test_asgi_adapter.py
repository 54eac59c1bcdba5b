"""The ASGI HTTP adapter (bivio.adapters.asgi) over an in-memory stream, no sockets."""

from __future__ import annotations

import asyncio
import copy
from types import MappingProxyType
from typing import Any

import pytest
from fakes import FakeStream

from bivio.adapters.asgi import ASGIHandler
from bivio.core.stream import ClientDisconnected


def run(handler: ASGIHandler, stream: FakeStream) -> None:
    asyncio.run(handler(stream))


def capture_scope(**handler_kwargs: Any) -> tuple[ASGIHandler, list[dict[str, Any]]]:
    """A handler whose app records its scope and answers 204."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    return ASGIHandler(app, **handler_kwargs), scopes


async def ok(send: Any, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


# -- the scope ---------------------------------------------------------------------------


def test_http_scope_fields() -> None:
    handler, scopes = capture_scope()
    stream = FakeStream("POST", b"/caf%C3%A9/a%20b", b"x=1&y=%20",
                        headers=[(b"host", b"example.org"), (b"x-custom", b"v")],
                        body=b"", http_version="1.0", scheme="https",
                        client=("10.0.0.1", 4321), server=("10.0.0.2", 443))
    run(handler, stream)
    (scope,) = scopes
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.0"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "https"
    assert scope["path"] == "/café/a b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%20b"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert scope["headers"] == [(b"host", b"example.org"), (b"x-custom", b"v")]
    assert scope["client"] == ("10.0.0.1", 4321)
    assert scope["server"] == ("10.0.0.2", 443)
    assert set(scope["extensions"]) == {
        "http.response.pathsend", "http.response.trailers", "http.response.early_hint"}
    assert stream.status == 204
    assert stream.interface == "asgi"


@pytest.mark.parametrize(("raw", "path", "raw_out"), [
    (b"/x/y", "/app/x/y", b"/app/x/y"),  # the proxy stripped the prefix
    (b"/app/x/y", "/app/x/y", b"/app/x/y"),  # the proxy kept it: not doubled
    (b"/app", "/app", b"/app"),
    (b"/apple", "/app/apple", b"/app/apple"),  # not a segment of /app: stripped case
])
def test_root_path_stripped_or_kept_by_the_proxy(raw: bytes, path: str, raw_out: bytes) -> None:
    handler, scopes = capture_scope(root_path="/app")
    run(handler, FakeStream(path=raw))
    (scope,) = scopes
    assert scope["root_path"] == "/app"
    assert scope["path"] == path
    assert scope["raw_path"] == raw_out


def test_state_is_a_copy_per_request() -> None:
    shared = {"db": object()}
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope["state"]))
        scope["state"]["request_only"] = True  # a middleware writing into state
        await ok(send)

    handler = ASGIHandler(app, state=shared)
    run(handler, FakeStream())
    run(handler, FakeStream())
    assert seen[0] == seen[1] == {"db": shared["db"]}  # what lifespan put there, each time
    assert seen[0]["db"] is shared["db"]  # a shallow copy: same objects
    assert shared == {"db": shared["db"]}  # the lifespan state itself is untouched


def test_scope_dicts_are_not_shared_between_scopes() -> None:
    """Regression: ``asgi`` and ``extensions`` were module-level dicts shared by every scope."""
    handler = ASGIHandler(None)
    first = handler.scope(FakeStream())
    first["extensions"]["x"] = 1
    first["extensions"]["http.response.trailers"]["y"] = 1
    first["asgi"]["z"] = 1
    second = handler.scope(FakeStream())
    assert "x" not in second["extensions"]
    assert second["extensions"]["http.response.trailers"] == {}
    assert second["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert first["extensions"] is not second["extensions"]


def test_middleware_writing_into_the_scope_does_not_change_the_next_request() -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(copy.deepcopy((scope["extensions"], scope["asgi"])))
        scope["extensions"]["x"] = 1
        scope["extensions"]["http.response.early_hint"]["y"] = 1
        scope["asgi"]["z"] = 1
        await ok(send)

    handler = ASGIHandler(app)
    run(handler, FakeStream())
    run(handler, FakeStream())
    first, second = seen
    assert second == first
    assert "x" not in second[0] and second[0]["http.response.early_hint"] == {}
    assert "z" not in second[1]


# -- receive() ---------------------------------------------------------------------------


def test_receive_yields_body_chunks_then_disconnect_after_the_response() -> None:
    stream = FakeStream("POST", body_length=None)
    stream.feed(b"ab")
    messages: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        messages.append(await receive())
        stream.feed(b"cd")
        stream.feed(b"ef")
        stream.end()
        messages.append(await receive())
        await ok(send, b"".join(m["body"] for m in messages))
        messages.append(await receive())  # returns: the response is complete

    run(ASGIHandler(app), stream)
    assert messages == [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cdef", "more_body": False},
        {"type": "http.disconnect"},
    ]
    assert stream.status == 200 and bytes(stream.body) == b"abcdef"
    assert not stream.aborted and not stream.closes_after


def test_request_without_a_body_is_one_empty_message() -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        messages.append(await receive())
        await ok(send)

    stream = FakeStream("GET")
    run(ASGIHandler(app), stream)
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]


def test_receive_returns_disconnect_when_the_client_leaves_after_the_body(errors: Any) -> None:
    stream = FakeStream("POST", body=b"data")
    messages: list[dict[str, Any]] = []

    async def main() -> None:
        body_read = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            messages.append(await receive())
            body_read.set()
            messages.append(await receive())  # waits for the client to leave

        task = asyncio.create_task(ASGIHandler(app)(stream))
        await body_read.wait()
        assert not task.done()
        stream.disconnect()
        await task

    asyncio.run(main())
    assert messages == [{"type": "http.request", "body": b"data", "more_body": False},
                        {"type": "http.disconnect"}]
    assert stream.status is None  # nobody to answer: no 500 written
    assert errors() == []  # the client left: nothing to log


def test_receive_returns_disconnect_when_the_client_leaves_mid_body(errors: Any) -> None:
    stream = FakeStream("POST", body_length=10)
    stream.feed(b"abc")
    messages: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        messages.append(await receive())
        stream.disconnect()
        messages.append(await receive())
        messages.append(await receive())  # still disconnect, never blocks

    run(ASGIHandler(app), stream)
    assert messages == [{"type": "http.request", "body": b"abc", "more_body": True},
                        {"type": "http.disconnect"}, {"type": "http.disconnect"}]
    assert stream.status is None and errors() == []


# -- send(): the response state machine -------------------------------------------------


def test_response_with_streamed_body() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201,
                    "headers": [[b"x-a", b"1"], (bytearray(b"x-b"), b"2")]})
        await send({"type": "http.response.body", "body": b"one ", "more_body": True})
        assert not stream.response_complete
        await send({"type": "http.response.body", "body": b"two"})
        assert stream.response_complete
        await send({"type": "http.response.body", "body": b"ignored"})  # after the end

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.status == 201
    assert stream.response_headers == [(b"x-a", b"1"), (b"x-b", b"2")]
    assert bytes(stream.body) == b"one two"
    assert not stream.aborted and not stream.closes_after


START = {"type": "http.response.start", "status": 200}


@pytest.mark.parametrize(("messages", "error"), [
    ([{"type": "http.response.body", "body": b"x"}], "before 'http.response.start'"),
    ([{"type": "http.response.trailers", "headers": []}], "without trailers=True"),
    ([{"type": "http.response.pathsend", "path": "/dev/null"}], "must follow"),
    ([{"type": "websocket.send", "text": "x"}], "unexpected ASGI message type"),
])
def test_send_errors_before_the_response_give_500(messages: list[dict[str, Any]], error: str,
                                                  errors: Any) -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            for message in messages:
                await send(message)
        except RuntimeError as exc:
            raised.append(exc)
            raise

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert len(raised) == 1 and error in str(raised[0])
    assert stream.status == 500
    assert stream.closes_after
    assert bytes(stream.body) == b"Internal Server Error"
    assert stream.header(b"content-type") == b"text/plain; charset=utf-8"
    assert not stream.aborted
    assert [r.exc_info[1] for r in errors()] == raised


@pytest.mark.parametrize(("messages", "error"), [
    ([START, START], "sent twice"),
    ([START, {"type": "http.response.trailers", "headers": []}], "without trailers=True"),
    ([START, {"type": "http.response.foo"}], "unexpected ASGI message type"),
    ([START, {"type": "http.response.body", "body": b"x", "more_body": True}, START],
     "sent twice"),
])
def test_send_errors_after_the_response_started_abort(messages: list[dict[str, Any]],
                                                      error: str, errors: Any) -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            for message in messages:
                await send(message)
        except RuntimeError as exc:
            raised.append(exc)
            raise

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert len(raised) == 1 and error in str(raised[0])
    assert stream.status == 200  # what the app started; no 500 on top of it
    assert stream.aborted
    assert len(errors()) == 1


def test_app_returning_without_a_response_gives_500(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.status == 500 and stream.closes_after and not stream.aborted
    assert ["returned without starting a response" in r.getMessage() for r in errors()] == [True]


def test_app_returning_with_an_unfinished_body_aborts(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.status == 200 and bytes(stream.body) == b"part"
    assert stream.aborted
    assert ["without completing the response" in r.getMessage() for r in errors()] == [True]


def test_app_exception_gives_500_and_is_logged(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ZeroDivisionError("boom")

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.status == 500 and stream.closes_after
    assert bytes(stream.body) == b"Internal Server Error"
    (record,) = errors()
    assert record.getMessage() == "Exception in ASGI application"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ZeroDivisionError)


def test_app_exception_after_the_response_started_aborts(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        raise ZeroDivisionError("boom")

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.status == 200 and stream.aborted
    assert len(errors()) == 1


def test_send_after_the_client_left_raises_client_disconnected(errors: Any) -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        stream.disconnect()
        try:
            await send(START)
        except OSError as exc:  # ASGI spec 2.4: an OSError
            raised.append(exc)
            raise

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert len(raised) == 1 and isinstance(raised[0], ClientDisconnected)
    assert stream.status is None and errors() == []


def test_app_own_client_disconnected_is_an_app_error(errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ClientDisconnected("the app's own upstream socket")

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.status == 500 and len(errors()) == 1


def test_cancelled_app_aborts_the_stream() -> None:
    stream = FakeStream("POST", body_length=None)

    async def main() -> None:
        reading = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            reading.set()
            await receive()  # never completes: the body does not come

        task = asyncio.create_task(ASGIHandler(app)(stream))
        await reading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert stream.aborted and stream.status is None


class NowaitStream(FakeStream):
    """Sends without a coroutine as HTTP/1.1's stream does: the adapter's fast path."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sends_nowait = True
        self.nowait: list[str] = []

    def start_response_nowait(self, status: Any, headers: Any, trailers: bool = False) -> None:
        self.nowait.append("start")
        _complete(self.start_response(status, headers, trailers))

    def send_body_nowait(self, data: bytes, more: bool) -> None:
        self.nowait.append("body")
        _complete(self.send_body(data, more))


def _complete(coro: Any) -> None:
    """Run a fake stream's send coroutine, which never waits, to its end."""
    with pytest.raises(StopIteration):
        coro.send(None)


class _Message(dict):
    """A dict subclass: an app's own message type."""


@pytest.mark.parametrize("message_type", [dict, _Message, MappingProxyType],
                         ids=["dict", "dict-subclass", "mapping"])
@pytest.mark.parametrize("stream_type", [FakeStream, NowaitStream], ids=["coroutines", "nowait"])
def test_messages_of_any_mapping_type_are_read_alike(message_type: Any, stream_type: Any) -> None:
    """The fast path reads plain dicts directly (compiled: no method lookups); any other
    mapping takes the general path and gets the same response."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(message_type({"type": "http.response.start", "status": 201,
                                 "headers": [(b"x-a", b"1")]}))
        await send(message_type({"type": "http.response.body", "body": b"he",
                                 "more_body": True}))
        await send(message_type({"type": "http.response.body", "body": b"llo"}))

    stream = stream_type()
    run(ASGIHandler(app), stream)
    assert stream.status == 201 and stream.response_headers == [(b"x-a", b"1")]
    assert bytes(stream.body) == b"hello" and stream.response_complete
    if stream_type is NowaitStream:
        assert stream.nowait == (["start", "body", "body"] if message_type is dict else [])


# -- extensions --------------------------------------------------------------------------


def test_trailers_extension() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "http.response.trailers" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"trailer", b"x-checksum")]})
        await send({"type": "http.response.body", "body": b"data"})
        assert not stream.response_complete  # the trailers are still to come
        await send({"type": "http.response.trailers",
                    "headers": [(b"x-checksum", b"abc")]})

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.announced_trailers
    assert bytes(stream.body) == b"data"
    assert stream.trailers == [(b"x-checksum", b"abc")]
    assert stream.response_complete and not stream.aborted


def test_trailers_over_several_messages_are_all_sent() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"data"})
        await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")],
                    "more_trailers": True})
        assert not stream.response_complete
        await send({"type": "http.response.trailers", "headers": [(b"x-b", b"2")]})

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.trailers == [(b"x-a", b"1"), (b"x-b", b"2")]
    assert stream.response_complete and not stream.aborted


def test_early_hint_sends_103_with_link_headers() -> None:
    links = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "http.response.early_hint" in scope["extensions"]
        await send({"type": "http.response.early_hint", "links": links})
        await ok(send)
        await send({"type": "http.response.early_hint", "links": links})  # too late: ignored

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.informational == [(103, [(b"link", links[0]), (b"link", links[1])])]
    assert stream.status == 200 and bytes(stream.body) == b"ok"


def test_pathsend_sends_the_file(tmp_path: Any) -> None:
    target = tmp_path / "report.bin"
    target.write_bytes(b"\x00file contents\xff" * 100)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % target.stat().st_size)]})
        await send({"type": "http.response.pathsend", "path": str(target)})

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.status == 200
    assert bytes(stream.body) == target.read_bytes()
    assert stream.response_complete and not stream.aborted


def test_pathsend_of_a_missing_file_is_an_app_error(tmp_path: Any, errors: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.pathsend", "path": str(tmp_path / "missing")})

    stream = FakeStream()
    run(ASGIHandler(app), stream)
    assert stream.aborted and isinstance(errors()[0].exc_info[1], FileNotFoundError)
