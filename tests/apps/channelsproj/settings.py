"""Settings for the Channels test project: the in-memory channel layer, no database."""

SECRET_KEY = "bivio-channels-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels"]
ROOT_URLCONF = "tests.apps.channelsproj.urls"
ASGI_APPLICATION = "tests.apps.channelsproj.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DATABASES: dict = {}
USE_TZ = True
