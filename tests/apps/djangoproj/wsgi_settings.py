"""The project's settings plus the views that only the WSGI tests use."""

from .settings import *  # noqa: F403

ROOT_URLCONF = "tests.apps.djangoproj.wsgi_urls"
