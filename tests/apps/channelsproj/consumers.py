"""A chat room consumer: messages go through the channel layer to every member."""

from __future__ import annotations

import json

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room = "room-" + self.scope["url_route"]["kwargs"]["room"]
        if self.room == "room-forbidden":
            await self.close()  # before accepting: the client gets 403
            return
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept(subprotocol=self.scope["subprotocols"][0]
                          if self.scope["subprotocols"] else None)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None:
            await self.send(bytes_data=bytes_data[::-1])
            return
        await self.channel_layer.group_send(
            self.room, {"type": "chat.message", "text": text_data}
        )

    async def chat_message(self, event: dict) -> None:
        await self.send(text_data=json.dumps({"room": self.room, "text": event["text"]}))
