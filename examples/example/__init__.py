"""bivio's bundled Django example: ``bivio example.asgi:application --app-dir examples``.

It shows what a Django project gets from bivio in each mode: sync and async
views, a CSRF-protected form, the admin and its static files (served by
``--static`` before Django), a streaming response, and a chat over WebSockets
through a Channels layer (Redis when ``REDIS_URL`` is set, else in memory).
"""
