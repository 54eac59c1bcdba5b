"""Glue between the front doors (CLI, :func:`bivio.run`) and a running server."""

from __future__ import annotations

import os
from typing import Any

from ..core.config import Config, ConfigError
from ..core.envfile import read_env_file
from ..core.logs import configure_logging, logger
from .loader import django_targets
from .server import run
from .systemd import activate


def serve(app: Any, options: dict[str, Any], config: Config | None = None) -> int:
    """Validate options, then run one worker here or a supervisor of several; the exit code."""
    config = config or Config.from_options(options)
    configure_logging(config)
    if config.env_file is not None:
        # Already read (and checked) by Config: now for the app, and inherited by workers.
        logger.info("Loading environment from %s", config.env_file)
        for name, value in read_env_file(config.env_file).items():
            os.environ.setdefault(name, value)
    for note in config.notes:
        logger.info("%s", note)
    if config.django is not None:
        if app is None:
            app = django_targets(config.django)[0]
        # Before anything imports Django; workers inherit it (and set it again, harmlessly).
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{config.django}.settings")
    elif app is None:
        raise ConfigError("no application given: pass MODULE:ATTR (or --django PROJECT)")
    config = activate(config)  # systemd socket activation ($LISTEN_FDS): serve fd 3
    pid = _write_pid(config.pid) if config.pid is not None else None
    try:
        if config.needs_supervisor():
            # A supervisor parent that never imports the app; each worker process it
            # starts runs bivio.process.server.run with those options cleared. Imported
            # here: a single process never pays for it.
            from .supervisor import supervise

            return supervise(app, config)
        return run(app, config)
    finally:
        if pid is not None and config.pid is not None:
            _remove_pid(config.pid, pid)


def _write_pid(path: str) -> int:
    """``--pid FILE``: this process's id (the supervisor's, with workers), as gunicorn writes it."""
    pid = os.getpid()
    try:
        with open(path, "w", encoding="ascii") as file:
            file.write(f"{pid}\n")
    except OSError as exc:
        raise ConfigError(f"--pid: cannot write {path}: {exc.strerror or exc}") from None
    return pid


def _remove_pid(path: str, pid: int) -> None:
    """Remove the pid file, unless another process has written its own id there since."""
    try:
        with open(path, encoding="ascii") as file:
            if file.read().strip() != str(pid):
                return
        os.unlink(path)
    except OSError:
        pass
