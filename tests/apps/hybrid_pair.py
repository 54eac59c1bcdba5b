"""A Flask app and a Starlette app served together in hybrid mode (tests/e2e/test_hybrid.py).

Each endpoint reports what its server handed it (a WSGI environ or an ASGI
scope), so a test can tell which of the two apps answered.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator

from flask import Flask, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

flask_app = Flask(__name__)


@flask_app.route("/slow")
def flask_slow() -> str:
    """In flight until the file ``$BIVIO_TEST_GATE`` exists (a test stops the server under it)."""
    print("slow request started", flush=True)
    gate = os.environ.get("BIVIO_TEST_GATE")
    deadline = time.monotonic() + 60
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "slow done"


@flask_app.route("/", defaults={"rest": ""})
@flask_app.route("/<path:rest>")
def flask_any(rest: str) -> str:
    env = request.environ
    return f"flask {env['SCRIPT_NAME']}|{env['PATH_INFO']} wsgi={env['wsgi.version']}"


async def live(request: Request) -> PlainTextResponse:
    scope = request.scope
    return PlainTextResponse(f"starlette {scope['root_path']}|{scope['path']} "
                             f"asgi={scope['asgi']['version']} "
                             f"started={request.state.started}")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"starlette echo: {text}")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, bool]]:
    print("hybrid pair lifespan startup", flush=True)
    yield {"started": True}
    print("hybrid pair lifespan shutdown", flush=True)


starlette_app = Starlette(
    routes=[Route("/live/{rest:path}", live), Route("/live", live),
            WebSocketRoute("/ws", echo), WebSocketRoute("/anything/ws", echo)],
    lifespan=lifespan,
)
