"""Server log and access log.

Two loggers: ``bivio.error`` (the server log: startup, errors, tracebacks) and
``bivio.access`` (one line per request). Both go to stderr by default; users
who configure :mod:`logging` themselves can route them anywhere.

Access log line format (documented in docs/logging.md)::

    127.0.0.1:51234 - "GET /path?q=1 HTTP/1.1" 200 13 0.41ms
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import ResponseInfo

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

logger = logging.getLogger("bivio.error")
access_logger = logging.getLogger("bivio.access")

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}


def setup_logging(level: str, access_log: bool) -> None:
    """Attach a stderr handler unless the user already configured these loggers."""
    fmt = logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s",
                            "%Y-%m-%d %H:%M:%S")
    for log in (logger, access_logger):
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(fmt)
            log.addHandler(handler)
        log.propagate = False
    logger.setLevel(_LEVELS[level])
    access_logger.setLevel(_LEVELS[level] if access_log else logging.CRITICAL + 1)


def access_enabled() -> bool:
    return access_logger.isEnabledFor(logging.INFO)


def log_response(info: ResponseInfo) -> None:
    """The access log, as a per-response hook (:meth:`ServerContext.record`)."""
    client = info.client
    who = f"{client[0]}:{client[1]}" if client else "-"
    access_logger.info('%s - "%s %s HTTP/%s" %d %d %.2fms', who, info.method, info.target,
                       info.http_version, info.status, info.sent, info.duration * 1000.0)
