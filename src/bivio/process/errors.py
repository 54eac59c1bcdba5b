"""The process layer's one start-up error, shared by the server, the supervisor and TLS."""

from __future__ import annotations


class StartupError(Exception):
    """The server could not start (bind, TLS files, lifespan); one line for the user."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
