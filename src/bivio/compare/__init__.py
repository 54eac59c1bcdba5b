"""``bivio compare``: WSGI, ASGI or hybrid, measured on the user's own project.

The package sits at the top, beside :mod:`bivio.cli`: it starts bivio servers as
subprocesses and reads what they do from outside, so it may import anything
below it, and nothing below imports it.

    project   what the Django project is made of (inspected in a child Python)
    servers   start, watch and stop the bivio processes; their CPU and memory
    load      the built-in asyncio keep-alive load generator
    run       check that the modes answer alike, then measure them one by one
    verdict   the rule, the recommendation and the command to run it
    report    the terminal table, --json and --html
    command   the flags, and the order of it all
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``bivio compare ARGS``; imported lazily so ``bivio`` itself starts no slower."""
    from .command import main as command_main

    command_main(argv)
