"""Every URL of the project, plus the WSGI tests' own views (tests/e2e/test_wsgi_django.py)."""

from django.urls import path

from . import wsgi_views
from .urls import urlpatterns as project_urls

urlpatterns = [
    *project_urls,
    path("wsgi/form/", wsgi_views.form_view),
    path("wsgi/cookies/", wsgi_views.cookies_view),
    path("wsgi/stream/", wsgi_views.stream_view),
    path("wsgi/download/", wsgi_views.download_view),
    path("wsgi/upload/", wsgi_views.upload_view),
]
