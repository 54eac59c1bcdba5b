"""The ``bivio`` command: flags are generated from :data:`bivio.core.config.OPTIONS`.

Exit codes are :mod:`bivio.core.exits` (a worker failing with 1 or 3 makes
the supervisor exit with that same code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .core import exits
from .core.config import OPTIONS, Config, ConfigError
from .process.loader import LoadError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage dump: the user needs the reason."""
        self.exit(exits.USAGE, f"bivio: error: {message} (see bivio --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bivio",
        description="Serve a WSGI or ASGI application (or both: --asgi-app, --django). "
                    "Every flag can also be set as BIVIO_<FLAG> in the environment "
                    "(e.g. BIVIO_PORT=8001, BIVIO_ACCESS_LOG=false).",
    )
    parser.add_argument("app", metavar="MODULE:ATTR", nargs="?", default=None,
                        help="the application, e.g. myproject.asgi:application (with "
                             "--asgi-app: the WSGI one; optional with --django)")
    parser.add_argument("--version", action="version", version=f"bivio {__version__}")
    for option in OPTIONS:
        help_text = option.help
        if option.default not in (None, (), "") and option.kind != "bool":
            help_text += f" [default: {option.default}]"
        help_text += f" [env: {option.env}]"
        if option.kind == "bool":
            parser.add_argument(option.flag, dest=option.name, default=None,
                                action=argparse.BooleanOptionalAction,
                                help=help_text + f" [default: {option.default}]")
        elif option.kind == "list":
            parser.add_argument(option.flag, dest=option.name, default=None, action="append",
                                metavar=option.metavar or "VALUE", help=help_text)
        elif option.kind == "choice":
            parser.add_argument(option.flag, dest=option.name, default=None,
                                metavar="{" + ",".join(option.choices) + "}", help=help_text)
        else:
            parser.add_argument(option.flag, dest=option.name, default=None,
                                metavar=option.metavar or option.kind.upper(), help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    from .process.main import serve

    parser = build_parser()
    args = vars(parser.parse_args(argv))
    app = args.pop("app")
    try:
        config = Config.from_options(args)
    except ConfigError as exc:
        parser.error(str(exc))
    if app is None and config.django is None:
        parser.error("the following arguments are required: MODULE:ATTR")
    try:
        code = serve(app, {}, config)
    except LoadError as exc:
        print(f"bivio: error: {exc}", file=sys.stderr)
        code = exits.LOAD_ERROR
    sys.exit(code)
