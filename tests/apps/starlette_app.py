"""A Starlette app using anyio task groups and BaseHTTPMiddleware (both need a real Task)."""

import asyncio

import anyio
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("hi")

async def ct(request):
    return PlainTextResponse(repr(asyncio.current_task() is not None))

async def tg(request):
    async with anyio.create_task_group() as g:
        g.start_soon(anyio.sleep, 0)
    return PlainTextResponse("tg ok")

async def gen():
    yield b"a"
    yield b"b"

async def stream(request):
    return StreamingResponse(gen())

class MW(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        r = await call_next(request)
        r.headers["x-mw"] = "1"
        return r

ROUTES = [Route("/", hello), Route("/ct", ct), Route("/tg", tg), Route("/s", stream)]
plain = Starlette(routes=ROUTES)
withmw = Starlette(routes=ROUTES)
withmw.add_middleware(MW)
