"""A minimal Django project measured as ASGI and as WSGI by every server."""
