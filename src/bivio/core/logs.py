"""Server log and access log.

Two loggers: ``bivio.error`` (the server log: startup, errors, tracebacks) and
``bivio.access`` (one line per request). Both go to stderr by default; users
who configure :mod:`logging` themselves can route them anywhere.

Access log line format (documented in docs/logging.md)::

    127.0.0.1:51234 - "GET /path?q=1 HTTP/1.1" 200 13 0.41ms
"""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import sys
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from .config import Config, ConfigError

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


def setup_logging(level: str, access_log: bool, *, log_config: str | None = None,
                  use_colors: bool = False, access_logfile: str | None = None,
                  error_logfile: str | None = None, log_format: str = "text") -> None:
    """Attach bivio's handlers unless the user already configured these loggers.

    ``log_config`` (``--log-config``) is applied first; bivio then adds no
    handler of its own to a logger that file configured, or to any logger
    when the file configured only the root (the records propagate there).
    ``access_logfile`` / ``error_logfile`` (gunicorn's flags) send a logger to a
    file, ``-`` meaning stdout for the access log and stderr for the server log.
    ``log_format`` (``--log-format``) is ``text`` or ``json`` (:class:`JSONFormatter`:
    one object a line) for the handlers bivio adds.
    Raises :class:`bivio.core.config.ConfigError` for a file that cannot be used.
    """
    if log_config is not None:
        _apply_log_config(log_config)
    fmt: logging.Formatter
    if log_format == "json":
        fmt = JSONFormatter()
    elif use_colors:
        fmt = _ColorFormatter(_FORMAT, _DATEFMT)
    else:
        fmt = logging.Formatter(_FORMAT, _DATEFMT)
    for log, target, flag, dash in ((logger, error_logfile, "--error-logfile", sys.stderr),
                                    (access_logger, access_logfile, "--access-logfile",
                                     sys.stdout)):
        if target is not None:
            for old in [h for h in log.handlers if getattr(h, "_bivio", False)]:
                log.removeHandler(old)
                old.close()
            log.addHandler(_handler(target, flag, dash, fmt))
        elif not log.handlers and log_config is None:
            log.addHandler(_handler("-", flag, sys.stderr, fmt))
        if log.handlers:
            log.propagate = False
    logger.setLevel(_LEVELS[level])
    access_logger.setLevel(_LEVELS[level] if access_log else logging.CRITICAL + 1)



def configure_logging(config: Config) -> None:
    """:func:`setup_logging` with the logging options of ``config``."""
    setup_logging(config.log_level, config.access_log, log_config=config.log_config,
                  use_colors=config.use_colors, access_logfile=config.access_logfile,
                  error_logfile=config.error_logfile, log_format=config.log_format)

_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"
_COLORS = {"CRITICAL": "\x1b[1;31m", "ERROR": "\x1b[31m", "WARNING": "\x1b[33m",
           "INFO": "\x1b[32m", "DEBUG": "\x1b[36m", "TRACE": "\x1b[34m"}


class _ColorFormatter(logging.Formatter):
    """``--use-colors``: the level name in colour (ANSI), the rest as usual."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        color = _COLORS.get(record.levelname)
        if color is None:
            return super().formatMessage(record)
        plain = record.levelname
        record.levelname = f"{color}{plain}\x1b[0m"
        try:
            return super().formatMessage(record)
        finally:
            record.levelname = plain


class JSONFormatter(logging.Formatter):
    """``--log-format json``: one JSON object a line (stdlib only).

    Every line has ``time`` (ISO 8601, local time with its UTC offset, milliseconds),
    ``level``, ``logger``, ``process`` and ``message``; ``exception`` (the formatted
    traceback) when the record carries one. An access line (``bivio.access``) adds
    ``client``, ``method``, ``target``, ``path``, ``query``, ``http_version``,
    ``status``, ``bytes``, ``duration_ms``, ``protocol`` and ``interface``, and
    ``request_id`` when the client sent ``X-Request-ID``.
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).astimezone()
        data: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        info = getattr(record, "response", None)
        if info is not None:
            client = info.client
            path, _, query = info.target.partition("?")
            data.update(client=f"{client[0]}:{client[1]}" if client else None,
                        method=info.method, target=info.target, path=path, query=query,
                        http_version=info.http_version, status=info.status, bytes=info.sent,
                        duration_ms=round(info.duration * 1000.0, 3), protocol=info.protocol,
                        interface=info.interface)
            request_id = info.request_id()
            if request_id is not None:
                data["request_id"] = request_id
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def _handler(target: str, flag: str, dash: IO[str], fmt: logging.Formatter) -> logging.Handler:
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(dash)
    else:
        try:  # reopened when logrotate moves the file away
            handler = logging.handlers.WatchedFileHandler(target, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{flag}: cannot open {target}: {exc.strerror or exc}") from None
    handler.setFormatter(fmt)
    handler._bivio = True  # type: ignore[attr-defined]
    return handler


def _apply_log_config(path: str) -> None:
    """``--log-config``: .json / .yaml / .yml through dictConfig, anything else fileConfig."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as file:
                logging.config.dictConfig(json.load(file))
        elif path.endswith((".yaml", ".yml")):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise ConfigError(f"--log-config: {path} is YAML: install PyYAML, or use "
                                  ".json or .ini") from None
            with open(path, encoding="utf-8") as file:
                logging.config.dictConfig(yaml.safe_load(file))
        else:
            if not os.path.isfile(path):
                raise FileNotFoundError(2, "No such file or directory")
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(f"--log-config: cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # json, yaml, configparser and logging's own errors
        text = " ".join(str(exc).split())
        raise ConfigError(f"--log-config: {path}: {type(exc).__name__}: {text}") from None
    configured = [n for n in ("uvicorn.error", "uvicorn.access")
                  if logging.getLogger(n).handlers]
    if configured and not (logger.handlers or access_logger.handlers):
        logger.warning("--log-config %s configures %s; bivio logs to bivio.error and "
                       "bivio.access", path, " and ".join(configured))


def access_enabled() -> bool:
    return access_logger.isEnabledFor(logging.INFO)


def log_response(info: ResponseInfo) -> None:
    """The access log, as a per-response hook (:meth:`ServerContext.record`)."""
    client = info.client
    who = f"{client[0]}:{client[1]}" if client else "-"
    access_logger.info('%s - "%s %s HTTP/%s" %d %d %.2fms', who, info.method, info.target,
                       info.http_version, info.status, info.sent, info.duration * 1000.0,
                       extra={"response": info})
