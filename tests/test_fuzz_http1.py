"""The short fuzzing run of the HTTP/1.1 request path (issue 13, item 5), in ``make test``.

The harness and the four invariants are in ``tests/fuzz_http1.py``; ``make fuzz`` drives
the same properties over 10**6 inputs (``scripts/fuzz.py``). Here each property runs a
fixed, derandomized set of inputs (the same every run, so CI is reproducible), about
2,000 in all, in a few seconds.

Bugs the fuzzer found are kept here as reproducers (``test_found_*``): each failed
before its fix. A bug found and not fixed yet goes into ``KNOWN_ISSUES`` in the
harness (the runs then count it instead of failing) with a strict-xfail reproducer here.

The ``test_sabotage_*`` tests break the server on purpose (monkeypatched for one test,
nothing in src/ changes) and check that the harness notices, invariant by invariant:
a fuzzer whose checks cannot fail proves nothing. Compiled (bivio.compiled), the
connection and the stream are extension types, whose methods cannot be replaced: a
connection's are overridden in a subclass the harness builds instead; the stream's
(made by the connection itself) only in the pure-Python variant.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import fuzz_http1
import pytest
from fuzz_http1 import (
    APPS,
    CORPUS,
    STRATEGIES,
    TAPE_SIZE,
    Case,
    Violation,
    check,
    requests_case,
    websocket_case,
)
from hypothesis import HealthCheck, Phase, given, settings

import bivio.protocols.http1 as http1
from bivio.compiled import is_compiled

SHORT = settings(deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
                 suppress_health_check=list(HealthCheck))


# -- the properties --------------------------------------------------------------------------


@settings(SHORT, max_examples=800)
@given(STRATEGIES["requests"])
def test_fuzz_grammar_requests(case: Case) -> None:
    """Pipelines of grammar requests (framing, limits, odd heads), mutated, split."""
    check(case)


@settings(SHORT, max_examples=400)
@given(STRATEGIES["llhttp"])
def test_fuzz_llhttp_corpus(case: Case) -> None:
    """llhttp's own request cases (tests/data/llhttp-requests.json), mutated, split."""
    check(case)


@settings(SHORT, max_examples=800)
@given(STRATEGIES["websocket"])
def test_fuzz_websocket_upgrades(case: Case) -> None:
    """Upgrade requests, valid or not, followed by masked and unmasked frames."""
    check(case)


@pytest.mark.parametrize("handler", ["echo", "noread", "stream", "ws"])
def test_llhttp_corpus_unmutated(handler: str) -> None:
    """Every llhttp case as is, in one read, under each handler."""
    for data in CORPUS:
        check(Case(data, handler=handler))


def test_generators_reach_the_apps() -> None:
    """The grammar must produce requests the apps answer, and WebSockets that open: a
    generator that only ever makes 400s would fuzz the parser's front door and no more."""
    rng = random.Random(0)
    answered = switched = 0
    for _ in range(200):
        outcome = check(requests_case(rng.randbytes(TAPE_SIZE)))
        answered += any(tag is not None for _, tag in outcome.finals)
        switched += check(websocket_case(rng.randbytes(TAPE_SIZE))).switched
    assert answered >= 60, answered
    assert switched >= 15, switched


# -- bugs the fuzzer found: reproducers ------------------------------------------------------


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Known issues fail like any other violation."""
    monkeypatch.setattr(fuzz_http1, "TOLERATE_KNOWN", False)


@pytest.mark.parametrize("handler", ["noread", "stream"])
def test_found_send_after_server_answered(strict: None, handler: str) -> None:
    """A broken chunked body in the same read as the head: the server answers 400 while
    the app has not answered yet (here it yields once first, as an app awaiting anything
    does; on Python < 3.12 the task has not even started); its start_response (noread)
    or 103 (stream) must then see ClientDisconnected, which the adapter swallows, not
    RuntimeError, which it logs as an app error."""
    app = APPS[handler]

    async def yielding(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)
        await app(scope, receive, send)

    check(Case(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
               handler=handler), apps={handler: yielding})


@pytest.mark.parametrize("framing", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
def test_found_expect_continue_without_body_clock(strict: None, framing: bytes) -> None:
    """The app starts its response (stream: a 103, then http.response.start), then reads;
    no 100 Continue goes out, the client sends nothing: --timeout-request-body must still
    end it (408 or a close), but no timer is left and the connection stays open."""
    check(Case(b"POST / HTTP/1.1\r\nHost: a\r\n" + framing
               + b"\r\nExpect: 100-continue\r\n\r\n", handler="stream", ending="silent"))


# -- sabotage: the checks can fail ---------------------------------------------------------------

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


needs_pure_stream = pytest.mark.skipif(
    is_compiled(http1), reason="compiled: H1Stream is an extension type, its methods cannot be "
    "patched (and the connection makes its streams itself); runs with BIVIO_NO_EXTENSIONS=1")


def sabotage(monkeypatch: pytest.MonkeyPatch, name: str, method: Any) -> None:
    """The harness's connections get ``method`` as ``name``: through a subclass, so that
    it works on the compiled extension type too (the loop and Cython's ``cpdef`` dispatch
    both find a subclass's override)."""
    sabotaged = type("SabotagedH1Connection", (http1.H1Connection,), {name: method})
    monkeypatch.setattr(fuzz_http1, "H1Connection", sabotaged)


def expect_violation(invariant: int, case: Case) -> Violation:
    with pytest.raises(Violation) as info:
        check(case)
    assert info.value.invariant == invariant, str(info.value)
    return info.value


@needs_pure_stream
def test_sabotage_a_second_response_breaks_invariant_2(monkeypatch: pytest.MonkeyPatch) -> None:
    finish = http1.H1Stream._finish

    def finish_twice(self: Any) -> None:
        self.conn.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        finish(self)

    monkeypatch.setattr(http1.H1Stream, "_finish", finish_twice)
    expect_violation(2, Case(GET))


@needs_pure_stream
def test_sabotage_found_by_the_fuzzer_and_shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same breakage, only for pipelined requests: the property has to find it."""
    finish = http1.H1Stream._finish

    def finish_twice_when_pipelined(self: Any) -> None:
        if self.conn._pending:
            self.conn.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        finish(self)

    monkeypatch.setattr(http1.H1Stream, "_finish", finish_twice_when_pipelined)
    @settings(SHORT, max_examples=800, phases=[Phase.generate])
    @given(STRATEGIES["requests"])
    def fuzz(case: Case) -> None:
        check(case)

    with pytest.raises(Violation) as info:
        fuzz()
    assert info.value.invariant == 2


def test_sabotage_data_received_raising_breaks_invariant_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data_received = http1.H1Connection.data_received

    def fragile(self: Any, data: bytes) -> None:
        if b"\x00" in data:
            raise KeyError("boom")
        data_received(self, data)

    sabotage(monkeypatch, "data_received", fragile)
    check(Case(GET))
    expect_violation(1, Case(GET + b"\x00"))


def test_sabotage_a_failing_timer_breaks_invariant_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any) -> None:
        raise ValueError("keep-alive timer failed")

    sabotage(monkeypatch, "_on_idle_timeout", broken)
    check(Case(GET, ending="eof"))
    violation = expect_violation(1, Case(GET, ending="silent"))
    assert "keep-alive timer failed" in str(violation)


def test_sabotage_ignoring_eof_breaks_invariant_3(monkeypatch: pytest.MonkeyPatch) -> None:
    sabotage(monkeypatch, "eof_received", lambda self: True)
    expect_violation(3, Case(GET))


def test_sabotage_no_timeouts_break_invariant_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that stops mid-head must be dropped: without the header timeout it is not."""
    sabotage(monkeypatch, "_set_timer", lambda self, delay, callback: None)
    expect_violation(3, Case(b"GET / HTTP/1.1\r\nHo", ending="silent"))


def test_sabotage_a_lost_request_breaks_invariant_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipelined request that is never started leaves reading paused for good."""
    sabotage(monkeypatch, "_start",
             lambda self, stream: None if self._served else
             (setattr(self, "_served", True), self.ctx.start_handler(stream),
              setattr(self, "_current", stream)))
    check(Case(GET))
    expect_violation(3, Case(GET + GET))


def test_sabotage_an_oversized_answer_breaks_invariant_4(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = http1.plain_response
    monkeypatch.setattr(http1, "plain_response", lambda text: plain(text * 100_000))
    expect_violation(4, Case(b"G\r\n"))
