"""One sync and one async view: the cost measured is the server plus Django itself."""

from django.http import HttpResponse

BODY = "Hello from Django!"


def sync_view(request):
    return HttpResponse(BODY, content_type="text/plain")


async def async_view(request):
    return HttpResponse(BODY, content_type="text/plain")
