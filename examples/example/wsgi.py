"""WSGI entry point: ``bivio example.wsgi:application --app-dir examples``.

Everything but the chat's WebSocket works here (WSGI has no WebSockets); the
chat page renders and says so.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

application = get_wsgi_application()
