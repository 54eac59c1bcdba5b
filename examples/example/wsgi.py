"""WSGI entry point: ``bivio example.wsgi:application --app-dir examples``.

Everything but the chat's WebSocket works here (WSGI has no WebSockets); the
chat page's script finds that out, stops trying and says so. In hybrid mode
(``bivio --django example``) this app serves the pages and example.asgi the
WebSocket, so the chat works.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

application = get_wsgi_application()
