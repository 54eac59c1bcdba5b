"""A sync-only middleware (a plain function, no ``async_capable``), as many projects have:
under ASGI Django must adapt the chain around it."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def stamp(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[
        [HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Stamp"] = "compare"
        return response

    return middleware
