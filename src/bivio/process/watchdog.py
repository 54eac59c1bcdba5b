"""``--loop-warn``: say where the event loop is stuck, and for which request.

One blocking call in an ``async def`` view (``time.sleep``, a synchronous
database driver, a long computation) stalls every connection of the worker.
The watchdog makes it visible without costing the hot path anything:

- on the loop, a timer callback stamps :func:`time.monotonic` every
  ``interval`` (a quarter of ``--loop-warn``); no per-request work at all;
- a daemon thread wakes every ``interval`` and looks at the stamp's age. The
  timer was due ``interval`` after the stamp, so the loop is late by
  ``age - interval``; once that reaches ``--loop-warn`` the thread samples the
  loop thread's stack (``sys._current_frames()``), finds the Task the loop is
  running (:data:`asyncio.tasks._current_tasks`, read defensively) and the
  stream it answers (``ServerContext.tasks``), and logs one warning on
  ``bivio.error``. It logs once per stall, and once more when the loop comes
  back, with how long it was away.

``ctx.loop_stalls`` counts the stalls (for metrics). The supervisor's
``--timeout-worker-healthcheck`` still kills a worker blocked for long; this
only logs.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..core.logs import logger

if TYPE_CHECKING:
    from ..core.context import ServerContext
    from ..core.stream import Stream


def check_interval(threshold: float) -> float:
    """How often the loop stamps and the thread looks: a quarter of the threshold."""
    return max(threshold / 4, 0.005)


class LoopWatchdog:
    """Watch one worker's event loop; :meth:`start` on the loop, :meth:`stop` before it ends."""

    def __init__(self, ctx: ServerContext, threshold: float) -> None:
        self.ctx = ctx
        self.threshold = threshold
        self.interval = check_interval(threshold)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stamp = 0.0  # written by the loop, read by the thread (a float: atomic)
        self._timer: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled_since: float | None = None  # the stamp of the stall logged
        # --metrics: told how late each tick ran (the event-loop lag histogram).
        self.on_lag: Callable[[float], None] | None = None
        self._stall_request = "-"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start stamping on ``loop`` (call it from the loop's thread) and the watching thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="bivio-loop-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    # -- on the loop

    def _tick(self) -> None:
        now = time.monotonic()
        if self.on_lag is not None and self._stamp:
            self.on_lag(max(0.0, now - self._stamp - self.interval))
        self._stamp = now
        assert self._loop is not None
        self._timer = self._loop.call_later(self.interval, self._tick)

    # -- on the watchdog thread

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check(time.monotonic())
            except Exception:  # never let the watchdog die quietly, nor kill the worker
                logger.exception("Loop watchdog failed")

    def check(self, now: float) -> None:
        """Compare the loop's last stamp with ``now``: log a stall's start and end."""
        stamp = self._stamp
        if self._stalled_since is not None and stamp != self._stalled_since:
            # The timer due at stalled_since + interval ran at stamp.
            away = stamp - self._stalled_since - self.interval
            logger.warning("Event loop came back after %.2fs blocked (serving %s)",
                           away, self._stall_request)
            self._stalled_since = None
        if self._stalled_since is None and now - stamp - self.interval >= self.threshold:
            self._stalled_since = stamp
            self.ctx.loop_stalls += 1
            self._report(now - stamp - self.interval)

    def _report(self, late: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        task = self._current_task()
        stream = self._stream_of(task, frame)
        request = "-"
        if stream is not None:
            try:
                request = f"{stream.method} {stream.raw_path.decode('latin-1')}"
            except Exception:
                request = "-"
        self._stall_request = request
        where = "serving " + request if stream is not None else "outside any request"
        stack = _format_stack(frame, task)
        logger.warning("Event loop blocked for %.2fs (--loop-warn %g), %s; the loop thread "
                       "is at (most recent call last):\n%s", late, self.threshold, where,
                       stack)

    def _current_task(self) -> asyncio.Task[Any] | None:
        """The Task the loop is running (CPython keeps it per loop), or None."""
        try:
            current = getattr(asyncio.tasks, "_current_tasks", None)
            task = current.get(self._loop) if isinstance(current, dict) else None
        except Exception:
            return None
        return task if isinstance(task, asyncio.Task) else None

    def _stream_of(self, task: asyncio.Task[Any] | None,
                   frame: FrameType | None) -> Stream | None:
        """The stream ``task`` answers: ``ctx.tasks``, else (a Task started eagerly is
        registered only after its first step) ``ctx.eager_stream``, the handler
        coroutine's ``stream`` argument, or the outermost frame of the loop thread
        holding a ``stream`` (compiled code has no frames to look in)."""
        if task is not None:
            stream = self.ctx.tasks.get(task)
            if stream is not None:
                return stream
            stream = self.ctx.eager_stream
            if stream is not None:
                return stream
            coro_frame = getattr(task.get_coro(), "cr_frame", None)
            stream = _stream_local(coro_frame)
            if stream is not None:
                return stream
        found = None
        while frame is not None:  # innermost to outermost: keep the last found
            stream = _stream_local(frame)
            if stream is not None:
                found = stream
            frame = frame.f_back
        return found


def _stream_local(frame: FrameType | None) -> Any:
    """A frame's ``stream`` variable when it looks like a stream (method and raw_path)."""
    if frame is None or "stream" not in frame.f_code.co_varnames:
        return None
    try:
        stream = frame.f_locals.get("stream")
    except Exception:
        return None
    if hasattr(stream, "method") and isinstance(getattr(stream, "raw_path", None), bytes):
        return stream
    return None


_LOOP_PACKAGES = ("asyncio", "uvloop")  # whose frames run the loop, not a request


def _format_stack(frame: FrameType | None, task: asyncio.Task[Any] | None) -> str:
    """The loop thread's stack, from the running Task's coroutine inward when it is on
    the stack (the event loop's own frames above it say nothing)."""
    if frame is None:
        return "  (no stack: the loop thread has ended)"
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    coro_frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    if coro_frame is not None and coro_frame in frames:
        frames = frames[:frames.index(coro_frame) + 1]
    else:
        # The Task's coroutine has no frame (compiled: bivio's optional compiled hot
        # path runs the ASGI handler's coroutine): start after the event loop's own
        # frames instead, the innermost of asyncio's or uvloop's (frames is innermost first).
        for i, f in enumerate(frames):
            if i and f.f_globals.get("__name__", "").partition(".")[0] in _LOOP_PACKAGES:
                frames = frames[:i]
                break
    summary = traceback.StackSummary.extract(
        ((f, f.f_lineno) for f in reversed(frames)), lookup_lines=True)
    return "".join(summary.format()).rstrip("\n")
