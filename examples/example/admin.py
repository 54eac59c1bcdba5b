"""The admin lists notes; its CSS and JS are what ``--static`` serves in the example."""

from django.contrib import admin

from .models import Note


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ("text", "created")
