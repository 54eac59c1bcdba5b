"""Connection protocols: bytes in, streams (the contract in :mod:`bivio.core.stream`) out.

They parse, enforce limits and timeouts, and frame responses; they know
nothing of ASGI or WSGI and never import :mod:`bivio.adapters`.
"""
