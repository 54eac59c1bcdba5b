"""An echo consumer that also says who the session belongs to (the login came
through the WSGI handler; the WebSocket is served by the ASGI one)."""

from __future__ import annotations

import json

from channels.generic.websocket import AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None:
            await self.send(bytes_data=bytes_data)
            return
        user = self.scope.get("user")
        await self.send(text_data=json.dumps({
            "echo": text_data,
            "type": self.scope["type"],
            "user": user.get_username() if user is not None and user.is_authenticated else "-",
        }))
