"""Sync views for Django under WSGI: a CSRF-protected form, cookies, a streaming
response, a FileResponse download (Django hands it to wsgi.file_wrapper) and an
upload read in pieces."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_exempt

DOWNLOAD = Path(__file__).resolve().parent / "views.py"


def form_view(request):
    if request.method == "POST":  # CsrfViewMiddleware already checked the token
        return HttpResponse(f"hello {request.POST.get('name', '')}", content_type="text/plain")
    token = get_token(request)
    html = (f'<form method="post"><input type="hidden" name="csrfmiddlewaretoken" '
            f'value="{token}"><input name="name"></form>')
    return HttpResponse(html)


def cookies_view(request):
    response = JsonResponse({"cookies": request.COOKIES,
                             "thread": threading.current_thread().name})
    response.set_cookie("visited", "yes", httponly=True)
    response.set_cookie("count", str(int(request.COOKIES.get("count", "0")) + 1))
    return response


def stream_view(request):
    count = int(request.GET.get("count", "5"))

    def chunks():
        for i in range(count):
            yield f"chunk-{i};".encode()
    return StreamingHttpResponse(chunks(), content_type="text/plain")


def download_view(request):
    return FileResponse(open(DOWNLOAD, "rb"), as_attachment=True,  # noqa: SIM115
                        filename="views.py")


@csrf_exempt
def upload_view(request):
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = request.read(64 * 1024)
        if not chunk:
            break
        total += len(chunk)
        digest.update(chunk)
    return JsonResponse({"length": total, "sha256": digest.hexdigest(),
                         "content_length": request.META.get("CONTENT_LENGTH")})
