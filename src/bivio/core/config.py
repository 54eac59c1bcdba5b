"""The one place options are defined, parsed and validated.

Every option is declared once in :data:`OPTIONS`. The CLI builds its flags
from that table, ``BIVIO_*`` environment variables are read through it, and
:func:`bivio.run` validates keyword arguments with it. The result is a frozen
:class:`Config`; nothing else in bivio parses options.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .addresses import Address, AddressError, parse_address, parse_addresses
from .envfile import EnvFileError, read_env_file
from .headers import valid_name, valid_value
from .paths import PathError, normalize_mounts, normalize_prefix

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(ValueError):
    """An option has a value bivio cannot use; the message is one line for the user."""


@dataclass(frozen=True)
class Option:
    """One option: its name (``snake_case``), type, default, help text and group.

    ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``list`` (repeatable
    string) or ``choice``. The CLI flag is ``--name-with-dashes`` (plus ``short``,
    e.g. ``-w``); booleans also get ``--no-name``; the environment variable is
    ``BIVIO_NAME``. ``group`` is the section of ``bivio --help`` and of the
    README's flag tables it belongs to (one of :data:`GROUPS`, in that order).
    ``refused`` lists values that are recognised (uvicorn's) but refused, each
    with the one-line reason and what to use instead. ``bool_value``: a boolean
    that also takes ``true``/``false`` after the flag, as uvicorn's
    ``--ws-per-message-deflate true`` does.
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    group: str = ""
    short: str | None = None
    refused: tuple[tuple[str, str], ...] = ()
    bool_value: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "BIVIO_" + self.name.upper()


GROUPS: tuple[str, ...] = (
    "Binding",
    "TLS",
    "HTTP/2",
    "Application and hybrid mode",
    "Behind a proxy",
    "Logging and metrics",
    "Limits and timeouts",
    "Response headers",
    "Workers and reload",
    "WebSockets",
    "Static files",
    "Configuration",
)
"""The option groups, in the order ``bivio --help`` and the README show them."""

_BIND, _TLS, _H2, _APP, _PROXY, _LOG, _LIMIT, _HEADERS, _WORKERS, _WS, _STATIC = GROUPS[:11]
_CONF = "Configuration"

OPTIONS: tuple[Option, ...] = (
    # -- Binding
    Option("host", "str", "127.0.0.1", "Bind socket to this host.", metavar="HOST",
           group=_BIND),
    Option("port", "int", 8000, "Bind socket to this port (0 picks a free one).",
           minimum=0, maximum=65535, group=_BIND),
    Option("uds", "str", None, "Bind to a UNIX domain socket at this path.", metavar="PATH",
           group=_BIND),
    Option("fd", "int", None, "Serve on an already bound socket: this file descriptor.",
           minimum=0, group=_BIND),
    Option("bind", "list", (),
           "Listen on this address: HOST:PORT, HOST, [IPv6]:PORT, unix:PATH or fd://N "
           "(gunicorn's spelling). Repeatable: every one is served, e.g. -b 0.0.0.0:8000 "
           "-b [::]:8000. Instead of --host/--port/--uds/--fd.", metavar="ADDRESS",
           group=_BIND, short="-b"),
    Option("backlog", "int", 2048, "Maximum number of pending connections.", minimum=1,
           group=_BIND),
    # -- TLS
    Option("ssl_certfile", "str", None,
           "Serve HTTPS: the server certificate (PEM; may hold the chain and the key).",
           metavar="PATH", group=_TLS),
    Option("ssl_keyfile", "str", None, "The certificate's private key (PEM).", metavar="PATH",
           group=_TLS),
    Option("ssl_keyfile_password", "str", None, "Password of an encrypted --ssl-keyfile.",
           metavar="PASSWORD", group=_TLS),
    Option("ssl_ca_certs", "str", None,
           "CA certificates (PEM) that client certificates are verified against.",
           metavar="PATH", group=_TLS),
    Option("ssl_cert_reqs", "choice", "none",
           "Client certificates: none, optional or required (uvicorn's 0, 1, 2 work too).",
           choices=("none", "optional", "required", "0", "1", "2"), group=_TLS),
    Option("ssl_ciphers", "str", None,
           "OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's). "
           "Default: OpenSSL's secure default.", metavar="CIPHERS", group=_TLS),
    Option("ssl_min_version", "choice", "1.2", "Oldest TLS version accepted.",
           choices=("1.2", "1.3"), group=_TLS),
    Option("ssl_version", "int", None,
           "uvicorn's ssl module protocol number: 17 (PROTOCOL_TLS_SERVER, uvicorn's default) "
           "or 2 (PROTOCOL_TLS) mean what bivio does, TLS 1.2 and 1.3; other values are "
           "refused (use --ssl-min-version).", group=_TLS),
    Option("timeout_tls_handshake", "float", 10.0,
           "Drop a client that has not finished its TLS handshake within this many seconds.",
           minimum=0.1, group=_TLS),
    # -- HTTP/2
    Option("http", "choice", "auto",
           "HTTP versions: auto (HTTP/1.1 and HTTP/2: ALPN over TLS, prior knowledge or "
           "Upgrade: h2c in cleartext), h1 (HTTP/1.1 only) or h2 (HTTP/2 only). uvicorn's "
           "httptools and zttp mean h1 (HTTP/1.1, parsed by httptools), or auto with --http2.",
           choices=("auto", "h1", "h2", "httptools", "zttp", "h11"), group=_H2,
           refused=(("h11", "bivio has no h11 implementation (its HTTP/1.1 parser is "
                             "httptools): use --http h1 for HTTP/1.1 only, or leave --http "
                             "out"),)),
    Option("http2", "bool", None,
           "uvicorn's HTTP/2 switch: --http2 serves HTTP/2 too (as --http auto does), "
           "--no-http2 serves HTTP/1.1 only (--http h1). Default: as --http says.",
           group=_H2),
    Option("h2_max_concurrent_streams", "int", 100,
           "HTTP/2: streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).",
           minimum=1, group=_H2),
    Option("h2_initial_window_size", "int", 1024 * 1024,
           "HTTP/2: bytes of request body a stream may send before the app reads "
           "(SETTINGS_INITIAL_WINDOW_SIZE); the connection's window is 4 times this.",
           minimum=65535, maximum=2**31 - 1, group=_H2),
    Option("h2_max_frame_size", "int", 16384,
           "HTTP/2: largest frame payload the client may send (SETTINGS_MAX_FRAME_SIZE).",
           minimum=16384, maximum=2**24 - 1, group=_H2),
    Option("h2_max_header_list_size", "int", 65536,
           "HTTP/2: largest decoded request header list in bytes (HPACK bombs); larger "
           "closes the connection.", minimum=1024, group=_H2),
    Option("h2_max_requests", "int", 10000,
           "HTTP/2: streams one connection may open in its life; then GOAWAY and the client "
           "reconnects.", minimum=1, group=_H2),
    Option("h2_max_control_frames", "int", 1000,
           "HTTP/2 flood limit: frames that carry no request (PING, SETTINGS, PRIORITY, "
           "WINDOW_UPDATE, RST_STREAM, empty DATA, unknown) a connection may send beyond "
           "what its requests and responses earn back; more gets GOAWAY ENHANCE_YOUR_CALM.",
           minimum=10, group=_H2),
    Option("h2_max_reset_streams", "int", 200,
           "HTTP/2 rapid-reset limit: streams a client may reset before their response "
           "completed, beyond the responses it let complete; more gets GOAWAY "
           "ENHANCE_YOUR_CALM.", minimum=1, group=_H2),
    Option("h2_ping_interval", "float", 20.0,
           "HTTP/2: PING a connection that has streams in progress every this many seconds "
           "(0: never); no answer within --h2-ping-timeout closes it.", minimum=0.0,
           group=_H2),
    Option("h2_ping_timeout", "float", 20.0,
           "HTTP/2: close a connection whose PING gets no answer within this many seconds.",
           minimum=0.1, group=_H2),
    # -- Application and hybrid mode
    Option("app_dir", "str", ".",
           "Put this directory first on sys.path before importing the app.", metavar="DIR",
           group=_APP),
    Option("factory", "bool", False, "Treat MODULE:ATTR as a factory that returns the app.",
           group=_APP),
    Option("interface", "choice", "auto",
           "Application interface: auto (detect), asgi3, asgi2 or wsgi.",
           choices=("auto", "asgi3", "asgi2", "wsgi"), group=_APP),
    Option("asgi_app", "str", None,
           "Hybrid mode: also serve this ASGI app (MODULE:ATTR) in the same worker; it gets "
           "WebSocket upgrades and --asgi-path requests, the WSGI app gets the rest.",
           metavar="MODULE:ATTR", group=_APP),
    Option("asgi_path", "list", (),
           "Hybrid mode: send requests under this path prefix to --asgi-app (repeatable; "
           "whole segments: /events matches /events/x, not /eventsx).", metavar="PREFIX",
           group=_APP),
    Option("django", "str", None,
           "Hybrid mode for a Django project: serve PROJECT.wsgi:application and "
           "PROJECT.asgi:application; sets DJANGO_SETTINGS_MODULE to PROJECT.settings "
           "if unset. MODULE:ATTR becomes optional.", metavar="PROJECT", group=_APP),
    Option("threads", "int", None,
           "WSGI thread pool size per worker. Default: min(32, CPUs + 4).", minimum=1,
           group=_APP),
    Option("wsgi_body", "choice", "buffer",
           "WSGI request bodies: buffer (read whole on the event loop, in memory then a "
           "temporary file, before a thread runs the app) or stream (the app reads "
           "wsgi.input from the socket, holding its thread while the client sends).",
           choices=("buffer", "stream"), group=_APP),
    Option("wsgi_response_buffer", "int", 64 * 1024 * 1024,
           "WSGI responses: bytes of a response the app thread may write to a temporary "
           "file when the client stops reading, so the thread is freed when the app is done "
           "rather than when the client has read (0: the thread waits for the client).",
           metavar="BYTES", minimum=0, group=_APP),
    Option("wsgi_spool_max", "int", 1024 * 1024 * 1024,
           "WSGI responses: bytes all the response spools of a worker may hold on disk "
           "together; beyond it a thread waits for its client instead of spooling more "
           "(0: no spool at all).", metavar="BYTES", minimum=0, group=_APP),
    Option("lifespan", "choice", "auto", "ASGI lifespan protocol.",
           choices=("auto", "on", "off"), group=_APP),
    Option("loop", "choice", "auto", "Event loop: auto (uvloop when installed), asyncio, uvloop.",
           choices=("auto", "asyncio", "uvloop", "zuvloop"), group=_APP,
           refused=(("zuvloop", "bivio does not run on zuvloop: use uvloop (auto picks it "
                                "when installed) or asyncio"),)),
    Option("env_file", "str", None,
           "Load environment variables from this dotenv file (KEY=VALUE lines) before "
           "anything else; variables already set win. BIVIO_* lines in it count.",
           metavar="PATH", group=_APP),
    Option("reset_contextvars", "bool", False,
           "Run each request in a fresh contextvars.Context, hiding context variables set "
           "before bivio started serving.", group=_APP),
    # -- Behind a proxy
    Option("proxy_headers", "bool", True,
           "Trust X-Forwarded-For / X-Forwarded-Proto from --forwarded-allow-ips.",
           group=_PROXY),
    Option("forwarded_allow_ips", "str", None,
           "Comma-separated IPs or networks trusted for proxy headers ('*' for all). "
           "Default: $FORWARDED_ALLOW_IPS or 127.0.0.1.", metavar="IPS", group=_PROXY),
    Option("proxy_protocol", "choice", "off",
           "Expect a PROXY protocol header (HAProxy's send-proxy: v1, send-proxy-v2: v2, "
           "auto: either) first on every connection, from --forwarded-allow-ips only; "
           "it gives the client address. Not with --ssl-certfile.",
           choices=("off", "v1", "v2", "auto"), group=_PROXY),
    Option("root_path", "str", "",
           "Mount point of the app (ASGI root_path), when a proxy serves it under a prefix.",
           metavar="PATH", group=_PROXY),
    # -- Logging
    Option("log_level", "choice", "info", "Server log level.", choices=LOG_LEVELS,
           group=_LOG),
    Option("access_log", "bool", True, "Log one line per request.", group=_LOG),
    Option("log_config", "str", None,
           "Configure logging from this file first: .json or .yaml (logging.config."
           "dictConfig) or .ini (fileConfig). bivio's loggers: bivio.error, bivio.access.",
           metavar="PATH", group=_LOG),
    Option("use_colors", "bool", False, "Colour the level names of log lines.", group=_LOG),
    Option("access_logfile", "str", None,
           "gunicorn's: write the access log to this file instead of stderr ('-': stdout).",
           metavar="FILE", group=_LOG),
    Option("error_logfile", "str", None,
           "gunicorn's: write the server log to this file instead of stderr ('-': stderr).",
           metavar="FILE", group=_LOG),
    Option("log_format", "choice", "text",
           "Format of the server and access log lines: text, or json (one JSON object a "
           "line: time, level, logger, message; the request's fields on access lines).",
           choices=("text", "json"), group=_LOG),
    Option("metrics", "str", None,
           "Serve Prometheus metrics on this HOST:PORT (GET /metrics), summed over every "
           "worker by the supervisor (which --metrics implies). Default: off.",
           metavar="HOST:PORT", group=_LOG),
    # -- Limits and timeouts
    Option("timeout_keep_alive", "float", 5.0,
           "Close a keep-alive connection idle for this many seconds.", minimum=0.0,
           group=_LIMIT),
    Option("timeout_request_header", "float", 10.0,
           "A client must send a whole request head within this many seconds (slowloris).",
           minimum=0.0, group=_LIMIT),
    Option("timeout_request_body", "float", 30.0,
           "A request body that makes no progress for this many seconds gets 408 and the "
           "connection closes (0: never). The clock stops while bivio itself stops reading.",
           minimum=0.0, group=_LIMIT),
    Option("timeout_send", "float", 60.0,
           "Drop a client that reads none of a response (or WebSocket messages) for this many "
           "seconds while the write buffer is full (0: never).",
           minimum=0.0, group=_LIMIT),
    Option("timeout_graceful_shutdown", "float", 30.0,
           "On shutdown, wait this long for in-flight requests before closing them.",
           minimum=0.0, group=_LIMIT),
    Option("limit_concurrency", "int", None,
           "Answer 503 once this many requests are in flight.", minimum=1, group=_LIMIT),
    Option("limit_request_line", "int", 8190,
           "Longest request target (the URL of the request line) in bytes; longer gets 414.",
           minimum=64, group=_LIMIT),
    Option("limit_request_fields", "int", 100,
           "Most header fields in a request; more gets 431.", minimum=1, group=_LIMIT),
    Option("limit_request_field_size", "int", 8190,
           "Longest header field (name + value) in bytes; longer gets 431.", minimum=64,
           group=_LIMIT),
    Option("limit_request_body", "int", 100 * 1024 * 1024,
           "Largest request body in bytes; larger gets 413 (0: no limit).", minimum=0,
           group=_LIMIT),
    Option("h11_max_incomplete_event_size", "int", None,
           "uvicorn's cap on an HTTP/1.1 request head still being received, in bytes; "
           "larger gets 431. Default: what the --limit-request-* flags allow.",
           metavar="BYTES", minimum=1, group=_LIMIT),
    # -- Response headers
    Option("header", "list", (), "Add a default response header NAME:VALUE (repeatable).",
           metavar="NAME:VALUE", group=_HEADERS),
    Option("server_header", "bool", True, "Send 'server: bivio'.", group=_HEADERS),
    Option("date_header", "bool", True, "Send the Date header.", group=_HEADERS),
    # -- Workers and reload
    Option("workers", "int", None,
           "Run this many worker processes under a supervisor (also $WEB_CONCURRENCY). "
           "Default: one process, no supervisor.", minimum=1, group=_WORKERS, short="-w"),
    Option("timeout_worker_healthcheck", "float", 30.0,
           "Kill and replace a worker whose event loop has been blocked this many seconds.",
           minimum=0.1, group=_WORKERS),
    Option("loop_warn", "float", 0.25,
           "Log the stack and the request when the event loop has been blocked this many "
           "seconds (once per stall; 0: off).", metavar="SECONDS", minimum=0.0,
           group=_WORKERS),
    Option("limit_max_requests", "int", None,
           "Replace a worker gracefully after it has served about this many requests.",
           minimum=1, group=_WORKERS),
    Option("limit_max_requests_jitter", "int", 0,
           "Add a random 0..N to each worker's --limit-max-requests so they do not "
           "all restart at once.", minimum=0, group=_WORKERS),
    Option("reload", "bool", False, "Restart the worker when code changes (development).",
           group=_WORKERS),
    Option("reload_dir", "list", (),
           "Watch this directory for --reload (repeatable). Default: --app-dir.",
           metavar="DIR", group=_WORKERS),
    Option("reload_include", "list", (),
           "Also reload on files matching this glob (repeatable; *.py always).",
           metavar="GLOB", group=_WORKERS),
    Option("reload_exclude", "list", (),
           "Ignore files or directories matching this glob for --reload (repeatable).",
           metavar="GLOB", group=_WORKERS),
    Option("reload_delay", "float", 0.05,
           "--reload: wait until files have stopped changing for this many seconds, so a "
           "save that touches several files reloads once.", minimum=0.01, group=_WORKERS),
    Option("pid", "str", None,
           "Write the process id of bivio (the supervisor's with workers) to this file; "
           "removed on exit.", metavar="FILE", group=_WORKERS),
    # -- WebSockets
    Option("ws", "choice", "auto",
           "WebSocket support for ASGI apps: auto (on) or none (upgrades are plain HTTP); "
           "uvicorn's websockets, websockets-sansio and wsproto mean auto.",
           choices=("auto", "none", "websockets", "websockets-sansio", "wsproto"), group=_WS),
    Option("ws_max_size", "int", 16 * 1024 * 1024,
           "Largest incoming WebSocket message in bytes; larger closes with 1009.", minimum=1,
           group=_WS),
    Option("ws_max_queue", "int", 16,
           "Incoming WebSocket messages held for an app that does not receive them before "
           "bivio stops reading the socket (it resumes at a quarter of this).", minimum=1,
           group=_WS),
    Option("ws_ping_interval", "float", 20.0,
           "Send a WebSocket keepalive ping every this many seconds (0: never).", minimum=0.0,
           group=_WS),
    Option("ws_ping_timeout", "float", 20.0,
           "Close a WebSocket (1011) whose ping gets no pong within this many seconds "
           "(0: wait forever).", minimum=0.0, group=_WS),
    Option("ws_per_message_deflate", "bool", True,
           "Offer WebSocket permessage-deflate compression (uvicorn's '--ws-per-message-deflate "
           "false' works too).", group=_WS, bool_value=True),
    # -- Static files
    Option("static", "list", (),
           "Serve files under URL_PREFIX from DIRECTORY before any app (repeatable; "
           "e.g. /static/=/srv/mysite/static).", metavar="URL_PREFIX=DIRECTORY",
           group=_STATIC),
    # -- Configuration
    Option("config", "str", None,
           "Read options from this TOML file (keys: the option names, dashes or "
           "underscores). Default: ./bivio.toml, else [tool.bivio] in ./pyproject.toml.",
           metavar="FILE", group=_CONF),
    Option("print_config", "bool", False,
           "Print the effective settings and where each came from (default, file, "
           "environment variable, command line), then exit.", group=_CONF),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def convert(option: Option, value: Any, label: str | None = None) -> Any:
    """Turn a CLI string, environment string or Python value into the option's type.

    ``label`` starts an error message: the flag, or the environment variable the
    value came from (``BIVIO_PORT: expected an integer, got 'x'``).
    """
    if value is None:
        return None
    label = label or option.flag
    if option.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    if option.kind == "list":
        if isinstance(value, str):
            return tuple(v for v in (s.strip() for s in value.split(";")) if v)
        return tuple(str(v) for v in value)
    if option.kind == "choice":
        text = str(value).lower()
        refused = dict(option.refused)
        if text in refused:  # uvicorn's value that cannot apply: say why and what to use
            raise ConfigError(f"{label}{' ' if label.startswith('-') else '='}{text}: "
                              f"{refused[text]}")
        if text not in option.choices:
            expected = ", ".join(c for c in option.choices if c not in refused)
            raise ConfigError(f"{label}: expected one of {expected}, got {value!r}")
        return text
    if option.kind in ("int", "float"):
        cast: Callable[[Any], Any] = int if option.kind == "int" else float
        if isinstance(value, bool):
            raise ConfigError(f"{label}: expected a number, got {value!r}")
        try:
            number = cast(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{label}: expected {'an integer' if cast is int else 'a number'}, "
                              f"got {value!r}") from None
        if number != number:  # NaN compares false with every bound
            raise ConfigError(f"{label}: expected a number, got {value!r}")
        if option.minimum is not None and number < option.minimum:
            raise ConfigError(f"{label}: must be at least {option.minimum:g}, got {value!r}")
        if option.maximum is not None and number > option.maximum:
            raise ConfigError(f"{label}: must be at most {option.maximum:g}, got {value!r}")
        return number
    return str(value)


def _env_label(exc: ConfigError, options: Mapping[str, Any] | None, env: Mapping[str, str],
               name: str, fallback: str) -> str:
    """``exc``'s message with the flag replaced by the variable the value came from
    (``BIVIO_NAME``, else ``fallback``), when no explicit option set it."""
    option = OPTIONS_BY_NAME[name]
    message = str(exc)
    if (options or {}).get(name) is not None or not message.startswith(option.flag + ":"):
        return message
    variable = option.env if option.env in env else fallback
    return variable + message[len(option.flag):]


def _file_values(file: Mapping[str, Any], options: Mapping[str, Any],
                 env: Mapping[str, str]) -> dict[str, Any]:
    """A config file's options, the lowest layer. Its address options that would clash
    with an address given above it step aside: ``bind`` above drops the file's
    host/port/uds/fd/bind; host/port/uds/fd above drop the file's ``bind``, and uds/fd
    above drop the file's uds/fd."""
    values = {k: v for k, v in file.items() if v is not None}

    def above(name: str) -> bool:
        return options.get(name) is not None or OPTIONS_BY_NAME[name].env in env

    drop: set[str] = set()
    if above("bind"):
        drop.update(("host", "port", "uds", "fd", "bind"))
    if any(above(n) for n in ("host", "port", "uds", "fd")):
        drop.add("bind")
    if above("uds") or above("fd"):
        drop.update(("uds", "fd"))
    for name in drop:
        values.pop(name, None)
    return values


def parse_header(text: str) -> tuple[bytes, bytes]:
    """``NAME:VALUE`` (``--header``), checked by the same rule as every response header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    try:
        bname = name.lower().encode("latin-1")
        bvalue = value.strip().encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"--header: not latin-1: {text!r}") from None
    if not sep or not valid_name(bname):
        raise ConfigError(f"--header: expected NAME:VALUE, got {text!r}")
    if not valid_value(bvalue):
        raise ConfigError(f"--header: control characters in value of {name!r}")
    return bname, bvalue


def parse_networks(text: str) -> tuple[Any, ...]:
    """Parse ``--forwarded-allow-ips``; ``*`` trusts every peer (returned as ``("*",)``)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if "*" in items:
        return ("*",)
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            if item.startswith("unix:"):
                networks.append(item)  # a UNIX socket peer, matched literally
                continue
            raise ConfigError(
                f"--forwarded-allow-ips: {item!r} is not an IP address or network"
            ) from None
    return tuple(networks)


def _check_hybrid(values: dict[str, Any]) -> None:
    """Validate the hybrid-mode options; ``--django`` supplies ``--asgi-app``'s default."""
    project = values.get("django")
    if project is not None:
        if not all(part.isidentifier() for part in project.split(".")):
            raise ConfigError(f"--django: expected a package name such as mysite, got {project!r}")
        if values.get("asgi_app") is None:
            values["asgi_app"] = f"{project}.asgi:application"
    if values.get("asgi_path") and values.get("asgi_app") is None:
        raise ConfigError("--asgi-path: needs --asgi-app (or --django) to send requests to")
    if values.get("asgi_app") is not None and values.get("interface", "auto") not in (
            "auto", "wsgi"):
        raise ConfigError("--interface: in hybrid mode (--asgi-app) MODULE:ATTR is the WSGI "
                          f"app, so it cannot be {values['interface']}")
    for prefix in values.get("asgi_path", ()):
        try:
            normalize_prefix(prefix)
        except PathError as exc:
            raise ConfigError(str(exc)) from None


_CERT_REQS = {"0": "none", "1": "optional", "2": "required"}


def _check_tls(values: dict[str, Any]) -> None:
    """The TLS options that make sense only together (the files are read at start-up)."""
    if "ssl_cert_reqs" in values:
        values["ssl_cert_reqs"] = _CERT_REQS.get(values["ssl_cert_reqs"], values["ssl_cert_reqs"])
    if values.get("ssl_certfile") is None:
        for name in ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs", "ssl_ciphers"):
            if values.get(name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')}: needs --ssl-certfile")
    if values.get("ssl_cert_reqs", "none") != "none" and values.get("ssl_ca_certs") is None:
        raise ConfigError("--ssl-cert-reqs: needs --ssl-ca-certs to verify client certificates")
    if values.get("proxy_protocol", "off") != "off" and values.get("ssl_certfile") is not None:
        raise ConfigError("--proxy-protocol: not with --ssl-certfile (the header comes before "
                          "the TLS handshake); terminate TLS at the proxy, or use "
                          "X-Forwarded-For / Forwarded")



def _env_file_values(path: str, env: Mapping[str, str]) -> dict[str, str]:
    try:
        return read_env_file(path, env)
    except EnvFileError as exc:
        raise ConfigError(f"--env-file: {exc}") from None


def parse_bind(address: str) -> dict[str, Any]:
    """gunicorn's ``--bind``: ``HOST:PORT``, ``HOST``, ``[IPv6]:PORT``, ``unix:PATH``, ``fd://N``.

    Returns the bivio options it stands for (``host``/``port``, ``uds`` or ``fd``):
    what a single ``--bind`` sets, so ``--print-config`` and the code that reads
    ``host``/``port`` see the address it names.
    """
    try:
        return _address_options(parse_address(address))
    except AddressError as exc:
        raise ConfigError(str(exc)) from None


def _address_options(address: Address) -> dict[str, Any]:
    if address.kind == "unix":
        return {"uds": address.path}
    if address.kind == "fd":
        return {"fd": address.fd}
    return {"host": address.host, "port": address.port}


_ADDRESS_FLAGS = ("host", "port", "uds", "fd")


def _set_aside(options: Mapping[str, Any]) -> set[str]:
    """The address options of a lower layer that an address given in ``options`` (a
    higher layer) replaces rather than clashes with: ``--bind`` replaces every lower
    address option; ``--host/--port/--uds/--fd`` replace a lower ``bind`` (and
    ``--uds``/``--fd`` a lower ``uds``/``fd``)."""
    given = {n for n in (*_ADDRESS_FLAGS, "bind") if options.get(n) is not None}
    drop: set[str] = set()
    if "bind" in given:
        drop.update((*_ADDRESS_FLAGS, "bind"))
    if given & set(_ADDRESS_FLAGS):
        drop.add("bind")
    if given & {"uds", "fd"}:
        drop.update(("uds", "fd"))
    return drop


def metrics_address(address: str) -> tuple[str, int]:
    """``--metrics HOST:PORT`` (``[IPv6]:PORT`` for IPv6) as the address to bind.

    The port is required: the metrics listener never shares the app's.
    """
    text = address.strip()
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        ok = bool(bracket) and port.startswith(":")
        port = port[1:]
    else:
        host, ok, port = text.rpartition(":")
        ok = bool(ok) and ":" not in host
    if not ok or not host or not port:
        raise ConfigError(f"--metrics: expected HOST:PORT or [IPv6]:PORT, got {address!r}")
    return host, convert(OPTIONS_BY_NAME["port"], port, "--metrics port")


def _check_metrics(values: dict[str, Any]) -> None:
    if values.get("metrics") is not None:
        metrics_address(values["metrics"])


_SSL_VERSIONS = (2, 17)  # ssl.PROTOCOL_TLS and ssl.PROTOCOL_TLS_SERVER: "negotiate"


def _check_compat(values: dict[str, Any]) -> tuple[str, ...]:
    """uvicorn's and gunicorn's spellings, resolved to bivio's own options.

    Returns notes for the start-up log where a value's meaning is bivio's
    nearest (``--http httptools``: HTTP/1.1 only, as with uvicorn).
    """
    notes: list[str] = []
    http, http2 = values.get("http", "auto"), values.get("http2")
    if http in ("httptools", "zttp"):
        values["http"] = "auto" if http2 else "h1"
        if not http2:
            notes.append(f"--http {http}: serving HTTP/1.1 only, as uvicorn does (bivio's "
                         "HTTP/1.1 parser is httptools); leave --http out to serve HTTP/2 too")
    elif http2 is True and http == "h1":
        raise ConfigError("--http2: --http h1 serves HTTP/1.1 only; give one of them")
    elif http2 is False:
        if http == "h2":
            raise ConfigError("--no-http2: --http h2 serves HTTP/2 only; give one of them")
        values["http"] = "h1"
    version = values.get("ssl_version")
    if version is not None and version not in _SSL_VERSIONS:
        raise ConfigError(f"--ssl-version: {version} cannot apply: bivio negotiates TLS 1.2 "
                          "or 1.3 (uvicorn's default 17, PROTOCOL_TLS_SERVER); set the oldest "
                          "version with --ssl-min-version 1.2|1.3")
    binds = values.get("bind", ())
    if binds:
        given = [n for n in _ADDRESS_FLAGS if n in values]
        if given:
            raise ConfigError(f"--bind and --{given[0]}: choose one (--bind lists every "
                              "address: --bind 0.0.0.0:8000 --bind [::]:8000)")
        try:
            addresses = parse_addresses(binds)
        except AddressError as exc:
            raise ConfigError(str(exc)) from None
        if len(addresses) == 1:  # host/port (or uds, fd) say where the one listener is
            values.update(_address_options(addresses[0]))
    return tuple(notes)

@dataclass(frozen=True)
class Config:
    """Validated, immutable server settings. Build with :meth:`from_options`."""

    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    bind: tuple[str, ...] = ()
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str = "none"
    ssl_ciphers: str | None = None
    ssl_min_version: str = "1.2"
    ssl_version: int | None = None
    timeout_tls_handshake: float = 10.0
    http: str = "auto"
    http2: bool | None = None
    app_dir: str = "."
    factory: bool = False
    interface: str = "auto"
    asgi_app: str | None = None
    asgi_path: tuple[str, ...] = ()
    django: str | None = None
    threads: int | None = None
    wsgi_body: str = "buffer"
    wsgi_response_buffer: int = 64 * 1024 * 1024
    wsgi_spool_max: int = 1024 * 1024 * 1024
    root_path: str = ""
    proxy_headers: bool = True
    forwarded_allow_ips: str | None = None
    proxy_protocol: str = "off"
    log_level: str = "info"
    access_log: bool = True
    log_config: str | None = None
    use_colors: bool = False
    access_logfile: str | None = None
    error_logfile: str | None = None
    log_format: str = "text"
    metrics: str | None = None
    timeout_keep_alive: float = 5.0
    timeout_request_header: float = 10.0
    timeout_request_body: float = 30.0
    timeout_send: float = 60.0
    timeout_graceful_shutdown: float = 30.0
    limit_concurrency: int | None = None
    backlog: int = 2048
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    limit_request_body: int = 100 * 1024 * 1024
    h11_max_incomplete_event_size: int | None = None
    h2_max_concurrent_streams: int = 100
    h2_initial_window_size: int = 1024 * 1024
    h2_max_frame_size: int = 16384
    h2_max_header_list_size: int = 65536
    h2_max_requests: int = 10000
    h2_max_control_frames: int = 1000
    h2_max_reset_streams: int = 200
    h2_ping_interval: float = 20.0
    h2_ping_timeout: float = 20.0
    lifespan: str = "auto"
    loop: str = "auto"
    env_file: str | None = None
    reset_contextvars: bool = False
    workers: int | None = None
    timeout_worker_healthcheck: float = 30.0
    loop_warn: float = 0.25
    limit_max_requests: int | None = None
    limit_max_requests_jitter: int = 0
    reload: bool = False
    reload_dir: tuple[str, ...] = ()
    reload_include: tuple[str, ...] = ()
    reload_exclude: tuple[str, ...] = ()
    reload_delay: float = 0.05
    pid: str | None = None
    header: tuple[str, ...] = ()
    server_header: bool = True
    date_header: bool = True
    ws: str = "auto"
    ws_max_size: int = 16 * 1024 * 1024
    ws_max_queue: int = 16
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_per_message_deflate: bool = True
    static: tuple[str, ...] = ()
    config: str | None = None
    print_config: bool = False
    # Derived once here so the hot path never re-parses them.
    extra_headers: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)
    trusted_proxies: tuple[Any, ...] = field(default=(), repr=False)
    # What the start-up log says about uvicorn spellings bivio resolved (--http httptools).
    notes: tuple[str, ...] = field(default=(), repr=False)
    # Not an option: True in a worker started by the supervisor (--workers,
    # --limit-max-requests, --reload), where another process may run the same app
    # at the same time (WSGI's ``wsgi.multiprocess``). The worker's own options
    # have ``workers`` cleared, so this cannot be derived from them.
    multiprocess: bool = field(default=False, repr=False)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
        file: Mapping[str, Any] | None = None,
    ) -> Config:
        """Merge defaults < config file < ``BIVIO_*`` environment < explicit options,
        and validate.

        ``options`` holds only what the user set explicitly (``None`` values are
        ignored); unknown names raise :class:`ConfigError`. ``file``: the options of
        a config file, already converted (:func:`bivio.core.configfile.read_config_file`).
        """
        env = os.environ if env is None else env
        env_file = ((options or {}).get("env_file") or env.get("BIVIO_ENV_FILE")
                    or (file or {}).get("env_file"))
        if env_file:  # its variables count as environment; those already set win
            env = {**_env_file_values(env_file, env), **env}
        values: dict[str, Any] = _file_values(file or {}, options or {}, env)
        set_aside = _set_aside(options or {})  # an address above replaces the env's
        for option in OPTIONS:
            # An explicit option wins: its variable is not even read.
            if option.env in env and (options or {}).get(option.name) is None \
                    and option.name not in set_aside:
                values[option.name] = convert(option, env[option.env], option.env)
        for name, value in (options or {}).items():
            option = OPTIONS_BY_NAME.get(name)
            if option is None:
                raise ConfigError(f"unknown option {name!r}")
            if value is not None:
                values[name] = convert(option, value)
        allow = values.get("forwarded_allow_ips")
        if allow is None:
            allow = env.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
            values["forwarded_allow_ips"] = allow
        try:
            values["trusted_proxies"] = parse_networks(allow)
        except ConfigError as exc:
            raise ConfigError(_env_label(exc, options, env, "forwarded_allow_ips",
                                         "FORWARDED_ALLOW_IPS")) from None
        if values.get("workers") is None and env.get("WEB_CONCURRENCY"):
            # The platforms' convention (Heroku, Render, gunicorn, uvicorn); BIVIO_WORKERS wins.
            values["workers"] = convert(OPTIONS_BY_NAME["workers"], env["WEB_CONCURRENCY"],
                                        "WEB_CONCURRENCY")
        values["extra_headers"] = tuple(parse_header(h) for h in values.get("header", ()))
        if "root_path" in values:
            root = values["root_path"].rstrip("/")
            if root and not root.startswith("/"):
                raise ConfigError(f"--root-path: must start with '/', got {values['root_path']!r}")
            values["root_path"] = root
        _check_hybrid(values)
        if values.get("static"):
            try:
                values["static"] = normalize_mounts(values["static"])
            except PathError as exc:
                raise ConfigError(str(exc)) from None
        if values.get("uds") is not None and values.get("fd") is not None:
            raise ConfigError("--uds and --fd: choose one")
        _check_tls(values)
        _check_metrics(values)
        values["notes"] = _check_compat(values)
        return cls(**values)

    def needs_supervisor(self) -> bool:
        """Whether these options ask for the supervisor (else: one process).

        A supervised worker's own options have these cleared, so it takes the
        single-process path.
        """
        return (self.workers is not None or self.reload or self.limit_max_requests is not None
                or self.metrics is not None)  # the supervisor serves the metrics

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Every listener to serve, in order: the ``--bind`` list, else ``--fd``, else
        ``--uds``, else ``--host:--port`` (uvicorn's precedence). Validated by
        :meth:`from_options`; computed on demand (at start-up only) so that a
        ``dataclasses.replace`` of ``bind``/``fd`` (systemd activation, a worker's
        inherited sockets) can never leave a stale copy."""
        if self.bind:
            return parse_addresses(self.bind)
        if self.fd is not None:
            return (Address("fd", fd=self.fd),)
        if self.uds is not None:
            return (Address("unix", path=self.uds),)
        return (Address("tcp", host=self.host, port=self.port),)

    @property
    def tls(self) -> bool:
        """Whether the listener speaks TLS (``--ssl-certfile``)."""
        return self.ssl_certfile is not None

    def is_trusted_proxy(self, host: str | None) -> bool:
        """Whether to apply the proxy headers of this peer (``--proxy-headers`` on)."""
        return self.proxy_headers and self.is_allowed_proxy(host)

    def is_allowed_proxy(self, host: str | None) -> bool:
        """Whether ``host`` is in ``--forwarded-allow-ips`` (``unix:`` for a UNIX socket)."""
        if host is None:
            return False
        if self.trusted_proxies == ("*",):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.trusted_proxies
        return any(
            not isinstance(net, str) and address in net for net in self.trusted_proxies
        )


CONFIG_FIELDS = frozenset(f.name for f in fields(Config))
