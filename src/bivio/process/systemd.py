"""systemd integration without libsystemd: socket activation and ``sd_notify``.

**Socket activation** (``sd_listen_fds``): when ``$LISTEN_PID`` is this
process and ``$LISTEN_FDS`` is at least 1, systemd (or
``systemd-socket-activate``) passed listening sockets from fd 3
(``SD_LISTEN_FDS_START``) on. bivio then serves every one of them (fd 3 as if
``--fd 3`` had been given; ``LISTEN_FDS=2`` as ``--bind fd://3 --bind fd://4``),
whatever address flags say (the socket unit is the deployment's word on where
to listen: a unit with ``ListenStream=0.0.0.0:80`` and ``ListenStream=[::]:80``
serves both), and removes the variables so that workers and the app's own
children never take them for theirs.

**Notifications** (``sd_notify``): datagrams to ``$NOTIFY_SOCKET`` (an
``AF_UNIX`` path, or the abstract namespace when it starts with ``@``):
``READY=1`` once serving, ``RELOADING=1`` during a SIGHUP rolling restart and
``READY=1`` after it, ``STOPPING=1`` at shutdown, and ``WATCHDOG=1`` every half
``$WATCHDOG_USEC`` while healthy. Without ``$NOTIFY_SOCKET`` :func:`notifier`
is ``None`` and nothing else happens.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

from ..core.config import OPTIONS_BY_NAME, Config
from ..core.logs import logger

LISTEN_FDS_START = 3
"""``SD_LISTEN_FDS_START``: the first descriptor systemd passes."""
ACTIVATION_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def listen_fds(environ: dict[str, str] | None = None, pid: int | None = None) -> list[int]:
    """The descriptors systemd passed to this process (``sd_listen_fds(1)``), or ``[]``.

    The variables are removed from ``environ`` (``os.environ`` by default) when
    they were meant for this process, and the descriptors made close-on-exec.
    """
    env = os.environ if environ is None else environ
    try:
        listen_pid = int(env.get("LISTEN_PID", ""))
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if listen_pid != (os.getpid() if pid is None else pid) or count < 1:
        return []
    for name in ACTIVATION_ENV:
        env.pop(name, None)
    fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + count))
    for fd in fds:
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass  # not open: bind_listeners says so
    return fds


def _given_addresses(config: Config) -> list[str]:
    """The address options set away from their defaults, as flags (for the warning)."""
    given = []
    for name in ("host", "port", "uds", "fd", "bind"):
        value = getattr(config, name)
        if value == OPTIONS_BY_NAME[name].default or value in (None, ()):
            continue
        if name == "fd" and value == LISTEN_FDS_START:
            continue  # --fd 3: the same socket, said explicitly
        shown = " ".join(value) if isinstance(value, tuple) else value
        given.append(f"--{name} {shown}")
    return given


def activate(config: Config, environ: dict[str, str] | None = None,
             pid: int | None = None) -> Config:
    """``config`` serving the socket systemd passed, when it passed one; else ``config``.

    Socket activation wins over ``--host/--port/--uds/--fd/--bind`` (logged as
    a warning naming what is ignored). Every socket passed is served: one as
    ``--fd 3``, several as ``--bind fd://3 --bind fd://4 ...``.
    """
    fds = listen_fds(environ, pid)
    if not fds:
        return config
    ignored = _given_addresses(config)
    served = f"fd {fds[0]}" if len(fds) == 1 else "fds " + ", ".join(str(fd) for fd in fds)
    if ignored:
        logger.warning("systemd socket activation: serving %s; ignoring %s", served,
                       ", ".join(ignored))
    else:
        logger.info("systemd socket activation: serving %s", served)
    if len(fds) == 1:
        return dataclasses.replace(config, fd=fds[0], uds=None, bind=())
    return dataclasses.replace(config, fd=None, uds=None,
                               bind=tuple(f"fd://{fd}" for fd in fds))


class Notifier:
    """Send ``sd_notify`` datagrams to one ``NOTIFY_SOCKET`` address."""

    def __init__(self, address: str, watchdog_usec: int | None = None) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # systemd reads at once; a stuck reader must not stall the event loop long.
        self.sock.settimeout(1.0)
        self.watchdog = watchdog_usec / 2e6 if watchdog_usec else None
        """Seconds between two ``WATCHDOG=1``, or ``None`` when systemd watches nothing."""
        self.last_ping = 0.0
        self.stopping = False

    def send(self, *fields: str) -> bool:
        try:
            self.sock.sendto("\n".join(fields).encode() + b"\n", self.address)
        except OSError as exc:
            logger.debug("sd_notify %s: %s", fields, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"MAINPID={os.getpid()}", f"STATUS={status}")

    def reloading(self, status: str = "Reloading") -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                  f"STATUS={status}")

    def stop(self, status: str = "Shutting down") -> None:
        if not self.stopping:
            self.stopping = True
            self.send("STOPPING=1", f"STATUS={status}")

    def ping(self) -> None:
        """``WATCHDOG=1``: the caller has checked that all is well."""
        self.last_ping = time.monotonic()
        self.send("WATCHDOG=1")

    def ping_due(self) -> bool:
        return self.watchdog is not None and time.monotonic() - self.last_ping >= self.watchdog


def from_environ(environ: dict[str, str] | None = None, pid: int | None = None) -> Notifier | None:
    """The notifier ``$NOTIFY_SOCKET`` asks for, with the watchdog when
    ``$WATCHDOG_USEC`` is set and ``$WATCHDOG_PID`` is this process or unset."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address or not address.startswith(("/", "@")):
        return None
    usec: int | None = None
    try:
        usec = int(env.get("WATCHDOG_USEC", "")) or None
        watchdog_pid = env.get("WATCHDOG_PID")
        if watchdog_pid and int(watchdog_pid) != (os.getpid() if pid is None else pid):
            usec = None
    except ValueError:
        usec = None
    return Notifier(address, usec)


_notifier: Notifier | None = None
_looked = False


def notifier() -> Notifier | None:
    """This process's notifier (read from the environment once), or ``None``."""
    global _notifier, _looked
    if not _looked:
        _looked = True
        _notifier = from_environ()
    return _notifier
