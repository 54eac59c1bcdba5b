"""The server's TLS context, built from the ``--ssl-*`` options (docs/tls.md).

:func:`build_ssl_context` reads the certificate, key and CA files and returns
the :class:`ssl.SSLContext` the listener serves with. Every worker builds its
own at start-up, so a SIGHUP rolling restart serves renewed files; the
supervisor builds one first only to check them. Whatever is wrong with the
files or options is a :class:`~bivio.process.errors.StartupError` with one line
naming the flag and the file (exit code 1).

:class:`Handshakes` lets a worker's graceful shutdown see the connections
still in their TLS handshake.
"""

from __future__ import annotations

import asyncio
import gc
import re
import ssl
import weakref
from collections.abc import Callable
from typing import Any

from ..core.config import Config
from .errors import StartupError

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----",
                       re.DOTALL)
_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----")
_ALPN = {"auto": ["h2", "http/1.1"], "h1": ["http/1.1"], "h2": ["h2"]}
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
              "required": ssl.CERT_REQUIRED}
_MIN_VERSION = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class _NoPassword(Exception):
    """OpenSSL asked for the key's password and none was given (instead of prompting)."""


def _fail(message: str) -> StartupError:
    return StartupError(message)


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise _fail(f"{flag} {path}: is a directory, not a file") from None
    except OSError as exc:
        raise _fail(f"{flag} {path}: {exc.strerror or exc}") from None


def _first_certificate(flag: str, path: str, data: bytes) -> str:
    """The first certificate in ``data`` as PEM text (the one a client is sent)."""
    match = _PEM_CERT.search(data)
    if match is None:
        raise _fail(f"{flag} {path}: no PEM certificate in it")
    try:
        der = ssl.PEM_cert_to_DER_cert(match.group(0).decode("ascii"))
        # Parse it for real (a throwaway store): a corrupt certificate is named here.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)
    except (ValueError, UnicodeDecodeError, ssl.SSLError):
        raise _fail(f"{flag} {path}: the first certificate in it is not valid") from None
    return ssl.DER_cert_to_PEM_cert(der)


def served_certificate(config: Config) -> str:
    """PEM of the certificate bivio sends (the first one in ``--ssl-certfile``).

    The ASGI ``tls`` extension's ``server_cert``.
    """
    assert config.ssl_certfile is not None
    return _first_certificate("--ssl-certfile", config.ssl_certfile,
                              _read("--ssl-certfile", config.ssl_certfile))


def build_ssl_context(config: Config) -> ssl.SSLContext:
    """The listener's TLS context; :class:`StartupError` (one line) when it cannot be built."""
    certfile = config.ssl_certfile
    if certfile is None:
        raise _fail("TLS needs --ssl-certfile")
    cert_data = _read("--ssl-certfile", certfile)
    _first_certificate("--ssl-certfile", certfile, cert_data)
    if config.ssl_keyfile is not None:
        key_flag, key_path = "--ssl-keyfile", config.ssl_keyfile
        key_data = _read(key_flag, key_path)
    else:
        key_flag, key_path, key_data = "--ssl-certfile", certfile, cert_data
    key_kind = _PEM_KEY.search(key_data)
    if key_kind is None:
        if config.ssl_keyfile is None:
            raise _fail(f"--ssl-certfile {certfile}: no private key in it: give --ssl-keyfile")
        raise _fail(f"--ssl-keyfile {key_path}: no PEM private key in it")
    encrypted = (key_kind.group(1) == b"ENCRYPTED " or b"Proc-Type: 4,ENCRYPTED" in key_data)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _MIN_VERSION[config.ssl_min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION  # CRIME; already OpenSSL's default
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)  # client renegotiation floods
    password = config.ssl_keyfile_password

    def no_password() -> bytes:
        raise _NoPassword  # never OpenSSL's prompt on the terminal

    try:
        ctx.load_cert_chain(certfile, config.ssl_keyfile,
                            password if password is not None else no_password)
    except _NoPassword:
        raise _fail(f"{key_flag} {key_path}: the key is encrypted: give its password with "
                    "--ssl-keyfile-password (or BIVIO_SSL_KEYFILE_PASSWORD)") from None
    except OSError as exc:  # ssl.SSLError included; a file changed under us included
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise _fail(f"{key_flag} {key_path}: the key does not match the certificate "
                        f"in --ssl-certfile {certfile}") from None
        if encrypted and password is not None:
            raise _fail(f"{key_flag} {key_path}: could not decrypt the key: wrong "
                        "--ssl-keyfile-password") from None
        raise _fail(f"{key_flag} {key_path}: the certificate or key could not be loaded "
                    f"({_reason(exc)})") from None

    if config.ssl_ciphers is not None:
        try:
            ctx.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise _fail(f"--ssl-ciphers {config.ssl_ciphers}: no cipher can be selected "
                        "from this list") from None
    if config.ssl_ca_certs is not None:
        _read("--ssl-ca-certs", config.ssl_ca_certs)
        try:
            ctx.load_verify_locations(cafile=config.ssl_ca_certs)
        except OSError as exc:
            raise _fail(f"--ssl-ca-certs {config.ssl_ca_certs}: no usable CA certificate in "
                        f"it ({_reason(exc)})") from None
    ctx.verify_mode = _CERT_REQS[config.ssl_cert_reqs]
    ctx.set_alpn_protocols(_ALPN[config.http])
    return ctx


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).replace("_", " ").lower()
    return exc.strerror or str(exc)


class Handshakes:
    """The protocol factory of a TLS listener, which knows the handshakes in progress.

    The event loop creates the protocol when it accepts a connection but calls
    its ``connection_made`` (which registers it in ``ctx.connections``) only
    after the TLS handshake, so graceful shutdown cannot see a client in the
    middle of one. Closing such a connection would lose the request it is
    about to send (a rolling restart under load hits this every time), so
    shutdown waits for those too.

    The handshakes are watched through the context's ``sslobject_class`` (the
    documented hook; asyncio and uvloop both drive the handshake through
    ``wrap_bio`` and ``do_handshake``): one that succeeds or fails is done at
    once; one whose connection dropped or timed out is gone with its
    ``SSLObject`` (a weak set: uvloop frees it at once; asyncio leaves it in a
    reference cycle with the exception that ended the handshake, so a pending
    one makes shutdown run the garbage collector, at most once a second); the
    handshake timeout bounds the rest.
    """

    GAP = 1.0
    """Seconds an accepted connection may take to begin its handshake (a loop tick)."""

    def __init__(self, factory: Callable[[], Any], loop: asyncio.AbstractEventLoop,
                 ssl_context: ssl.SSLContext, timeout: float) -> None:
        self.factory = factory
        self.loop = loop
        self.timeout = timeout
        self.accepted = 0
        self.started = 0
        self.last_accept = 0.0
        self.active: weakref.WeakSet[Any] = weakref.WeakSet()
        self._next_gc = 0.0
        tracker = self

        class TrackedSSLObject(ssl_context.sslobject_class):  # type: ignore[name-defined,misc]
            _bivio_deadline: float | None = None

            def do_handshake(self) -> None:
                if self._bivio_deadline is None:
                    tracker._begin(self)
                try:
                    super().do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    raise
                except BaseException:
                    tracker.active.discard(self)
                    raise
                tracker.active.discard(self)

        ssl_context.sslobject_class = TrackedSSLObject

    def __call__(self) -> Any:
        self.accepted += 1
        self.last_accept = self.loop.time()
        return self.factory()

    def _begin(self, sslobj: Any) -> None:
        self.started += 1
        sslobj._bivio_deadline = self.loop.time() + self.timeout
        self.active.add(sslobj)

    def in_progress(self) -> bool:
        """Whether a connection accepted earlier may still finish its handshake."""
        now = self.loop.time()
        if self.accepted > self.started and now < self.last_accept + self.GAP:
            return True  # accepted, its handshake begins on the next loop tick
        if self._pending(now) and now >= self._next_gc:
            self._next_gc = now + 1.0
            gc.collect()  # frees the SSLObjects of connections that are gone (asyncio)
        return self._pending(now)

    def _pending(self, now: float) -> bool:
        return any(now < sslobj._bivio_deadline for sslobj in list(self.active))
