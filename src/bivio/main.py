"""Glue between the front doors (CLI, :func:`bivio.run`) and a running server."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .config import Config, ConfigError
from .loader import load_app
from .logs import logger, setup_logging
from .server import Server, StartupError, setup_loop


def serve(app: Any, options: dict[str, Any], config: Config | None = None) -> int:
    """Validate options, load the app, run one worker; return the exit code."""
    config = config or Config.from_options(options)
    setup_logging(config.log_level, config.access_log)
    if config.django is not None:
        from .dispatch import django_targets

        if app is None:
            app = django_targets(config.django)[0]
        # Before anything imports Django; workers inherit it (and set it again, harmlessly).
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{config.django}.settings")
    elif app is None:
        raise ConfigError("no application given: pass MODULE:ATTR (or --django PROJECT)")
    if config.workers is not None or config.reload or config.limit_max_requests is not None:
        # A supervisor parent that never imports the app; each worker process it
        # starts comes back through this function with those options cleared.
        from .supervisor import supervise

        return supervise(app, config)
    asgi_app = None
    if config.asgi_app is not None:
        from .dispatch import load_pair

        loaded, asgi_app = load_pair(app, config.asgi_app, factory=config.factory,
                                     app_dir=config.app_dir, interface=config.interface,
                                     django=config.django)
    else:
        loaded = load_app(app, factory=config.factory, app_dir=config.app_dir,
                          interface=config.interface)
    try:
        setup_loop(config.loop)
        asyncio.run(Server(loaded, config, asgi_app).serve())
    except StartupError as exc:
        logger.error("%s", exc)
        return exc.code
    except KeyboardInterrupt:
        pass
    return 0
