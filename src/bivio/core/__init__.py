"""The core every layer shares: options, logs, exit codes, the stream contract, the worker context.

Layers, bottom to top (``tests/test_layers.py`` enforces the direction):

- ``bivio.core``: config, logs, exit codes, header and path rules, the
  stream contract (:mod:`~bivio.core.stream`) and the per-worker context
  (:mod:`~bivio.core.context`). Imports nothing else of bivio.
- ``bivio.protocols`` (bytes <-> streams: HTTP/1.1, WebSocket framing) and
  ``bivio.adapters`` (streams <-> applications: ASGI, WSGI, lifespan, static
  files, hybrid dispatch). Each imports only the core, never the other.
- ``bivio.process``: app loading, the worker's server, the supervisor.
- ``bivio`` itself: ``run()``, the CLI, ``python -m bivio``.
"""
