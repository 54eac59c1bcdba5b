"""HTTP routes: one page, to show HTTP and WebSocket share the ASGI application."""

from django.http import HttpResponse
from django.urls import path


def index(request):
    return HttpResponse("channels project over http")


urlpatterns = [path("", index)]
