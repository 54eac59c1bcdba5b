"""Django for HTTP, Channels for WebSockets; ``COMPAREPROJ_BREAK_ASGI=1`` makes this module
fail to import, as an ASGI app with a missing dependency does."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.compareproj.settings")

if os.environ.get("COMPAREPROJ_BREAK_ASGI") == "1":
    raise ImportError("No module named 'missing_realtime_dependency'")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import EchoConsumer  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": URLRouter([path("ws/echo/", EchoConsumer.as_asgi())]),
})
