"""URLs of the example; WebSocket routes are in asgi.py (they are not Django views)."""

from django.contrib import admin
from django.urls import path, re_path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("sync/", views.sync_view, name="sync"),
    path("async/", views.async_view, name="async"),
    path("notes/", views.notes, name="notes"),
    path("stream/", views.stream, name="stream"),
    re_path(r"^chat/(?P<room>[\w-]{1,50})/$", views.chat, name="chat"),
    path("admin/", admin.site.urls),
]
