"""Processes: loading the app, one worker's server, the supervisor of several workers.

The top layer below the entry points (:mod:`bivio.cli`, :func:`bivio.run`):
it composes handlers and protocols; nothing below imports it.
"""
