"""Exit codes of the ``bivio`` command, defined once (README "Exit codes")."""

from __future__ import annotations

OK = 0
"""A clean shutdown."""
LOAD_ERROR = 1
"""The application could not be imported, or the socket could not be bound."""
USAGE = 2
"""An invalid option (one line on stderr says which)."""
STARTUP_FAILED = 3
"""The application's lifespan startup failed."""
WORKER_FAILED = 4
"""A supervised worker died while starting, for a reason other than 1 or 3."""
ABORTED = 5
"""Shutdown cut requests off: a second SIGTERM/SIGINT, or --timeout-graceful-shutdown
expired with requests still running (each one is logged)."""
