"""Settings for the test Django project: no database, DEBUG off, any host."""

from __future__ import annotations

SECRET_KEY = "bivio-tests-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.apps.djangoproj.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
# The views read large uploads themselves; keep Django's limits out of the way.
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024
# Proxy headers are bivio's job: Django reads the scheme from the ASGI scope.
SECURE_PROXY_SSL_HEADER = None
