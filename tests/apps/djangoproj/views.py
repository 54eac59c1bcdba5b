"""Views exercising what Django's ASGI handler relies on from the server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

# The streaming views record their progress here so the tests can see when
# (and how) Django stopped them.
PROGRESS_ENV = "BIVIO_DJANGO_PROGRESS"


def _record(line: str) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def sync_view(request):
    on_loop_thread = threading.current_thread() is threading.main_thread()
    return HttpResponse(f"sync view, main thread: {on_loop_thread}", content_type="text/plain")


async def async_view(request):
    await asyncio.sleep(0)
    return HttpResponse("async view", content_type="text/plain")


@csrf_exempt
def echo_json(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    data = json.loads(request.body)
    return JsonResponse({"method": request.method, "content_type": request.content_type,
                         "received": data})


def headers_view(request):
    response = HttpResponse("headers", content_type="text/plain; charset=utf-8")
    response["X-Custom-Header"] = "Custom-Value"
    response["Cache-Control"] = "no-store"
    response.set_cookie("flavour", "oatmeal")
    return response


def _count(request, name: str, default: int) -> int:
    return int(request.GET.get(name, default))


def stream_view(request):
    count = _count(request, "count", 5)

    async def chunks():
        for i in range(count):
            await asyncio.sleep(0.01)
            yield f"chunk-{i};".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def stream_forever(request):
    """1000 chunks 20 ms apart: a client that leaves early must stop this."""
    count = _count(request, "count", 1000)

    async def chunks():
        _record("started")
        try:
            for i in range(count):
                _record(f"chunk {i}")
                yield b"x" * 100 + b"\n"
                await asyncio.sleep(0.02)
            _record("completed")
        except asyncio.CancelledError:
            _record("cancelled")
            raise
        except GeneratorExit:
            _record("closed")
            raise
        finally:
            _record("finally")

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def wait_forever(request):
    """A long poll that never answers: only a disconnect can stop it."""
    _record("waiting")
    try:
        for _ in range(600):
            await asyncio.sleep(0.1)
        _record("completed")
    except asyncio.CancelledError:
        _record("cancelled")
        raise
    finally:
        _record("finally")
    return HttpResponse("done waiting")


def meta_view(request, rest: str = ""):
    meta = request.META
    return JsonResponse({
        "path": request.path,
        "path_info": request.path_info,
        "script_name": meta.get("SCRIPT_NAME"),
        "full_path": request.get_full_path(),
        "rest": rest,
        "query_string": meta.get("QUERY_STRING"),
        "GET": {k: request.GET.getlist(k) for k in request.GET},
        "REMOTE_ADDR": meta.get("REMOTE_ADDR"),
        "REMOTE_PORT": meta.get("REMOTE_PORT"),
        "SERVER_NAME": meta.get("SERVER_NAME"),
        "SERVER_PORT": meta.get("SERVER_PORT"),
        "REQUEST_METHOD": meta.get("REQUEST_METHOD"),
        "HTTP_HOST": meta.get("HTTP_HOST"),
        "HTTP_X_CUSTOM": meta.get("HTTP_X_CUSTOM"),
        "scheme": request.scheme,
        "is_secure": request.is_secure(),
        "host": request.get_host(),
    })


def boom_view(request):
    raise RuntimeError("the view exploded")


async def async_boom_view(request):
    await asyncio.sleep(0)
    raise RuntimeError("the async view exploded")


@csrf_exempt
async def upload_view(request):
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = request.read(64 * 1024)
        if not chunk:
            break
        total += len(chunk)
        digest.update(chunk)
        await asyncio.sleep(0)
    return JsonResponse({"length": total, "sha256": digest.hexdigest(),
                         "content_length": request.META.get("CONTENT_LENGTH")})
