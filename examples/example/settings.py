"""Settings for the example, driven by environment variables so tests and ``make run`` agree.

``EXAMPLE_DB_PATH``      SQLite file (default: examples/db.sqlite3); tests use a temp dir.
``EXAMPLE_STATIC_ROOT``  where collectstatic writes (default: examples/staticfiles);
                         bivio serves it with ``--static /static/=<this>``.
``REDIS_URL``            redis://host:port/db for the chat's channel layer; unset: in memory
                         (one worker only; apps.py says so at startup).
``EXAMPLE_DEBUG``        1 for Django's debug pages (off by default, as in production, so
                         the hashed static names of the manifest storage are in use).
``EXAMPLE_SECRET_KEY``   the secret key (a development-only default otherwise).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent  # examples/

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "bivio-example-development-only-not-secret")
DEBUG = os.environ.get("EXAMPLE_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", *filter(
    None, os.environ.get("EXAMPLE_ALLOWED_HOSTS", "").split(","))]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "example.apps.ExampleConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"
ASGI_APPLICATION = "example.asgi.application"

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

DATABASES = {"default": {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.environ.get("EXAMPLE_DB_PATH", str(BASE_DIR / "db.sqlite3")),
}}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Static files: collectstatic copies them to STATIC_ROOT with content hashes in
# their names (and .gz siblings, see storage.py); bivio answers /static/ from there
# with --static /static/=STATIC_ROOT, before Django is asked.
STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("EXAMPLE_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "example.storage.GzipManifestStaticFilesStorage"},
}

# The chat's channel layer: Redis reaches every worker and every instance; the
# in-memory layer only the consumers of one process.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                  "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(message)s",
                             "datefmt": "%Y-%m-%d %H:%M:%S"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"example": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
