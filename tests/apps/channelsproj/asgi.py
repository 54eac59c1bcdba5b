"""The ASGI entry point: Django for HTTP, the chat consumer for WebSockets."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.channelsproj.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import ChatConsumer  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": URLRouter([path("ws/chat/<str:room>/", ChatConsumer.as_asgi())]),
})
