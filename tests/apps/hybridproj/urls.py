from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("page/", views.which),
    path("form/", views.form),
    path("whoami/", views.whoami),
    path("events/which/", views.which_async),
    path("events/ticks/", views.ticks),
    path("eventsx/", views.which_async),  # an async view *outside* the prefix: WSGI serves it
]
