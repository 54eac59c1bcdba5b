"""Settings; ``COMPAREPROJ_HOSTS`` (comma-separated) replaces ALLOWED_HOSTS, so a test can
make the project refuse 127.0.0.1 as a misconfigured production settings file would."""

from __future__ import annotations

import os

SECRET_KEY = "bivio-compare-tests-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = os.environ.get("COMPAREPROJ_HOSTS", "127.0.0.1,localhost").split(",")
ROOT_URLCONF = "tests.apps.compareproj.urls"
ASGI_APPLICATION = "tests.apps.compareproj.asgi.application"
WSGI_APPLICATION = "tests.apps.compareproj.wsgi.application"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels"]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "tests.apps.compareproj.middleware.stamp",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:",
                         "CONN_MAX_AGE": 60}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
USE_TZ = True
