"""Views that say which handler served them: Django's WSGIRequest or ASGIRequest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import ensure_csrf_cookie


def which(request: HttpRequest) -> HttpResponse:
    """A sync page: under hybrid mode it runs on the WSGI thread pool."""
    return HttpResponse(f"{type(request).__name__} {request.META.get('SCRIPT_NAME', '')!s}|"
                        f"{request.path}")


async def which_async(request: HttpRequest) -> HttpResponse:
    """An async view under /events/: hybrid mode runs it through Django's ASGI handler."""
    await asyncio.sleep(0)
    return HttpResponse(f"{type(request).__name__} {request.META.get('SCRIPT_NAME', '')!s}|"
                        f"{request.path}")


async def ticks(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events: the kind of long response hybrid mode keeps off the pool."""

    async def events() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: tick {i} {type(request).__name__}\n\n".encode()
            await asyncio.sleep(0.01)

    return StreamingHttpResponse(events(), content_type="text/event-stream")


@ensure_csrf_cookie
def form(request: HttpRequest) -> HttpResponse:
    """GET: a page that sets the CSRF cookie; POST: accepted only with the token."""
    if request.method == "POST":
        return HttpResponse(f"posted {request.POST.get('name', '')} "
                            f"via {type(request).__name__}")
    return HttpResponse("form")


def whoami(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.user.get_username() if request.user.is_authenticated else "-")
