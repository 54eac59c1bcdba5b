"""Stream handlers: app interfaces (ASGI, WSGI, lifespan), static files, hybrid dispatch.

They see requests only through the stream contract (:mod:`bivio.core.stream`)
and never import :mod:`bivio.protocols`: nothing here knows Content-Length,
chunking, keep-alive or frames.
"""
