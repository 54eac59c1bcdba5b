"""The ASGI entry point: Django for HTTP, Channels (with the session user) for WebSockets."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.hybridproj.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import EchoConsumer  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AuthMiddlewareStack(URLRouter([path("ws/echo/", EchoConsumer.as_asgi())])),
})
