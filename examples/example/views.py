"""The example's pages. Each one shows something a mode does (or cannot do).

``interface`` tells the page which handler Django runs under: ASGIRequest
under ``example.asgi:application``, WSGIRequest under ``example.wsgi``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render

from .forms import NoteForm
from .models import Note

STREAM_LINES = 5
STREAM_PAUSE = 0.2  # seconds between lines, so a browser shows them arriving


def interface(request: HttpRequest) -> str:
    return "asgi" if isinstance(request, ASGIRequest) else "wsgi"


def index(request: HttpRequest) -> HttpResponse:
    """A plain sync view with a database query."""
    return render(request, "example/index.html", {
        "interface": interface(request), "pid": os.getpid(), "notes": Note.objects.count(),
    })


def sync_view(request: HttpRequest) -> JsonResponse:
    """Sync: under WSGI it runs on bivio's thread pool, under ASGI on Django's sync thread."""
    return JsonResponse({"view": "sync", "interface": interface(request),
                         "thread": threading.current_thread().name, "pid": os.getpid()})


async def async_view(request: HttpRequest) -> JsonResponse:
    """Async: on the event loop under ASGI; Django runs it in a loop of its own under WSGI."""
    await asyncio.sleep(0)
    return JsonResponse({"view": "async", "interface": interface(request),
                         "thread": threading.current_thread().name, "pid": os.getpid()})


def notes(request: HttpRequest) -> HttpResponse:
    """A form with CSRF protection: POST without the token gets Django's 403."""
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            form.save()
            return redirect("notes")
    else:
        form = NoteForm()
    return render(request, "example/notes.html",
                  {"form": form, "notes": Note.objects.all()[:20]})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """A response sent line by line: an async iterator under ASGI, a sync one under WSGI.

    Django consumes a sync iterator under ASGI in a thread and buffers it whole,
    so the async form is what actually streams there.
    """
    if isinstance(request, ASGIRequest):
        return StreamingHttpResponse(_lines_async(), content_type="text/plain; charset=utf-8")
    return StreamingHttpResponse(_lines_sync(), content_type="text/plain; charset=utf-8")


async def _lines_async() -> AsyncIterator[str]:
    for n in range(1, STREAM_LINES + 1):
        yield f"line {n} of {STREAM_LINES}\n"
        if n < STREAM_LINES:
            await asyncio.sleep(STREAM_PAUSE)


def _lines_sync() -> Iterator[str]:
    for n in range(1, STREAM_LINES + 1):
        yield f"line {n} of {STREAM_LINES}\n"
        if n < STREAM_LINES:
            time.sleep(STREAM_PAUSE)


def chat(request: HttpRequest, room: str) -> HttpResponse:
    """The chat page; its script connects to ws://HOST/ws/chat/ROOM/.

    The page does not decide whether WebSockets work: under hybrid mode it is served
    through WSGI while the WebSocket goes to the ASGI app, and a proxy in front may or
    may not pass the upgrade. The script tries, and says why when it cannot.
    """
    return render(request, "example/chat.html", {"room": room})
