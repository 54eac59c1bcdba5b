from django.urls import path

from . import views

urlpatterns = [
    path("sync/", views.sync_view),
    path("async/", views.async_view),
    path("echo-json/", views.echo_json),
    path("headers/", views.headers_view),
    path("stream/", views.stream_view),
    path("stream-forever/", views.stream_forever),
    path("wait-forever/", views.wait_forever),
    path("meta/", views.meta_view),
    path("meta/<path:rest>", views.meta_view),
    path("boom/", views.boom_view),
    path("async-boom/", views.async_boom_view),
    path("upload/", views.upload_view),
]
