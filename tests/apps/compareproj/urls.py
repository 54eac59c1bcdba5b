"""/boom/ fails in every mode: among the default paths, it must be left out with one line."""

from django.urls import path

from . import views

urlpatterns = [
    path("sync/", views.sync_view),
    path("async/", views.async_view),
    path("boom/", views.boom),
    path("item/<int:n>/", views.item),
]
