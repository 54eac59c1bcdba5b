"""Glue between the front doors (CLI, :func:`bivio.run`) and a running server."""

from __future__ import annotations

import os
from typing import Any

from ..core.config import Config, ConfigError
from ..core.logs import setup_logging
from .loader import django_targets
from .server import run


def serve(app: Any, options: dict[str, Any], config: Config | None = None) -> int:
    """Validate options, then run one worker here or a supervisor of several; the exit code."""
    config = config or Config.from_options(options)
    setup_logging(config.log_level, config.access_log)
    if config.django is not None:
        if app is None:
            app = django_targets(config.django)[0]
        # Before anything imports Django; workers inherit it (and set it again, harmlessly).
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{config.django}.settings")
    elif app is None:
        raise ConfigError("no application given: pass MODULE:ATTR (or --django PROJECT)")
    if config.needs_supervisor():
        # A supervisor parent that never imports the app; each worker process it
        # starts runs bivio.process.server.run with those options cleared. Imported
        # here: a single process never pays for it.
        from .supervisor import supervise

        return supervise(app, config)
    return run(app, config)
