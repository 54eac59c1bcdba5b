"""The example's app config: says at startup which channel layer the chat uses."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger("example")


class ExampleConfig(AppConfig):
    name = "example"
    verbose_name = "bivio example"

    def ready(self) -> None:
        # Said once per serving process, so a user running --workers without Redis
        # learns why a chat message reaches only part of the room. Not by management
        # commands (make run's migrate and collectstatic), which serve no chat.
        if Path(sys.argv[0]).name == "manage.py" and sys.argv[1:2] != ["runserver"]:
            return
        if settings.REDIS_URL:
            where = urlsplit(settings.REDIS_URL)
            logger.info("chat: Redis channel layer at %s:%s: messages reach every worker "
                        "and every instance", where.hostname, where.port or 6379)
        else:
            logger.warning("chat: REDIS_URL is not set: in-memory channel layer, chat messages "
                           "reach only clients of this one worker process (set REDIS_URL for "
                           "--workers or several instances)")
