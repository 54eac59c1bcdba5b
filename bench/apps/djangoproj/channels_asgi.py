"""The project's ASGI entry point once it has a WebSocket, as Channels' tutorial writes it.

Served alone (pure ASGI: pages, async views and the WebSocket) and as hybrid
mode's ``--asgi-app`` beside ``wsgi.py`` (pages on WSGI). A separate file so the
plain ``asgi.py`` scenarios keep measuring Django's handler without the router.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.djangoproj.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from .consumers import EchoConsumer  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": EchoConsumer.as_asgi()})
