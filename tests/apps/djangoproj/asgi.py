"""The ASGI entry point, exactly as ``django-admin startproject`` writes it."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoproj.settings")

application = get_asgi_application()
