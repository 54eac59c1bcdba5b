"""--loop-warn: a blocked event loop is logged with its stack and the request, once per stall."""

from __future__ import annotations

import httpx
import pytest
from conftest import ROOT

APP = "tests.apps.blocking:app"
TIMEOUT = 30.0
BLOCKED = "Event loop blocked for"
CAME_BACK = "Event loop came back after"


def sleep_line() -> str:
    """The stack line naming the app's time.sleep call: its file and line number."""
    path = (ROOT / "tests" / "apps" / "blocking.py").resolve()
    number = next(i for i, line in enumerate(path.read_text().splitlines(), 1)
                  if "time.sleep(" in line)
    return f'File "{path}", line {number}, in blocking_view'


def stopped_output(server) -> str:
    """Everything the server logged, once it has exited (nothing more can come)."""
    server.stop()
    return server.output


@pytest.mark.parametrize("loop", ["asyncio", "auto"])  # auto: uvloop when installed
def test_blocking_view_logged_once_with_its_line_and_request(serve, loop):
    server = serve(APP, "--loop-warn", "0.2", "--loop", loop)
    for _ in range(3):  # normal requests: no warning
        assert httpx.get(server.url + "/", timeout=TIMEOUT).text == "fast"
    assert httpx.get(server.url + "/block?x=1", timeout=TIMEOUT).text == "slept"
    # The end of the stall is logged after its start: wait for it, then count.
    assert server.wait_for_output(CAME_BACK, timeout=TIMEOUT), server.output
    output = stopped_output(server)
    warnings = [line for line in output.splitlines() if BLOCKED in line]
    assert len(warnings) == 1, output
    assert "WARNING" in warnings[0]
    assert "serving GET /block" in warnings[0] and "x=1" not in warnings[0], output
    assert output.count(sleep_line()) == 1, output
    assert "time.sleep(1.0)" in output
    # The loop thread's stack at that moment, from the handler's Task inward: the sleep
    # call is its last frame.
    after = output.split(warnings[0] + "\n", 1)[1].splitlines()
    stack = after[:next(i for i, line in enumerate(after) if not line.startswith(" "))]
    assert stack[0].strip().startswith("File") and stack[-2].strip() == sleep_line(), stack
    assert stack[-1].strip() == "time.sleep(1.0)  # the mistake --loop-warn points at"
    assert not any("asyncio" in line for line in stack), stack  # not the loop's own frames
    came_back = next(line for line in output.splitlines() if CAME_BACK in line)
    assert "serving GET /block" in came_back
    seconds = float(came_back.split(CAME_BACK, 1)[1].split("s", 1)[0])
    assert 0.5 < seconds < 5.0, came_back  # the 1 s sleep, give or take a check interval


def test_on_by_default(serve):
    server = serve(APP)
    assert httpx.get(server.url + "/block", timeout=TIMEOUT).text == "slept"
    output = stopped_output(server)
    assert output.count(BLOCKED) == 1, output
    assert "(--loop-warn 0.25)" in output
    assert sleep_line() in output


def test_zero_turns_it_off(serve):
    server = serve(APP, "--loop-warn", "0")
    assert httpx.get(server.url + "/block", timeout=TIMEOUT).text == "slept"
    output = stopped_output(server)
    assert BLOCKED not in output and CAME_BACK not in output, output
