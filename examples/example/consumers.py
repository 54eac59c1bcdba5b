"""The chat: one Channels group per room, broadcast through the channel layer.

With the Redis layer the group spans every worker and every bivio instance
sharing that Redis; each message carries the sender's worker pid so the page
(and the tests) can see a message crossing processes.
"""

from __future__ import annotations

import os
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

MAX_MESSAGE = 1000


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = "chat_" + self.scope["url_route"]["kwargs"]["room"]
        user = self.scope.get("user")
        self.username = user.username if user is not None and user.is_authenticated \
            else "anonymous"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        layer = type(self.channel_layer).__name__
        await self.send_json({"type": "welcome", "worker": os.getpid(), "layer": layer})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        text = content.get("message") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"type": "error", "error": "send {\"message\": \"text\"}"})
            return
        await self.channel_layer.group_send(self.group, {
            "type": "chat.message", "message": text[:MAX_MESSAGE],
            "user": self.username, "worker": os.getpid(),
        })

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "message", "message": event["message"],
                              "user": event["user"], "from_worker": event["worker"],
                              "worker": os.getpid()})
