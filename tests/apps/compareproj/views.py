"""One sync view, one async view, one that always fails and one that takes an argument
(so it is not among the default paths)."""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, HttpResponse, JsonResponse


def sync_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"view": "sync"})


async def async_view(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0)
    return JsonResponse({"view": "async"})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("this view fails in every mode")


def item(request: HttpRequest, n: int) -> JsonResponse:
    return JsonResponse({"item": n})
