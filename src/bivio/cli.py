"""The ``bivio`` command: flags are generated from :data:`bivio.config.OPTIONS`.

Exit codes: 0 clean shutdown, 1 the app could not be loaded or the socket not
bound, 2 invalid options, 3 application (lifespan) startup failed, 4 a
supervised worker died while starting for another reason (a worker failing
with 1 or 3 makes the supervisor exit with that same code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .config import OPTIONS, Config, ConfigError
from .loader import LoadError

EXIT_LOAD_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage dump: the user needs the reason."""
        self.exit(EXIT_USAGE, f"bivio: error: {message} (see bivio --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bivio",
        description="Serve an ASGI application over HTTP/1.1. "
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
    from .main import serve

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
        code = EXIT_LOAD_ERROR
    sys.exit(code)
