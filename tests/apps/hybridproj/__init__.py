"""A Django project served in hybrid mode (tests/e2e/test_hybrid.py): admin, sessions
and CSRF on the WSGI handler, async views under /events/ and a Channels WebSocket on
the ASGI handler, one SQLite database file ($HYBRIDPROJ_DB) shared by both."""
