"""The WSGI entry point, as ``django-admin startproject`` writes it (served in
tests/e2e/test_wsgi_django.py); its settings add the WSGI-only views."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoproj.wsgi_settings")

application = get_wsgi_application()
