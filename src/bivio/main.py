"""Glue between the front doors (CLI, :func:`bivio.run`) and a running server."""

from __future__ import annotations

import asyncio
from typing import Any

from .config import Config
from .loader import load_app
from .logs import logger, setup_logging
from .server import Server, StartupError, setup_loop


def serve(app: Any, options: dict[str, Any], config: Config | None = None) -> int:
    """Validate options, load the app, run one worker; return the exit code."""
    config = config or Config.from_options(options)
    setup_logging(config.log_level, config.access_log)
    if config.workers is not None or config.reload or config.limit_max_requests is not None:
        # A supervisor parent that never imports the app; each worker process it
        # starts comes back through this function with those options cleared.
        from .supervisor import supervise

        return supervise(app, config)
    loaded = load_app(app, factory=config.factory, app_dir=config.app_dir,
                      interface=config.interface)
    try:
        setup_loop(config.loop)
        asyncio.run(Server(loaded, config).serve())
    except StartupError as exc:
        logger.error("%s", exc)
        return exc.code
    except KeyboardInterrupt:
        pass
    return 0
