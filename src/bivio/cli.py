"""The ``bivio`` command: flags are generated from :data:`bivio.core.config.OPTIONS`.

``bivio --help`` shows them in the groups of :data:`bivio.core.config.GROUPS`
(the README's flag tables use the same groups, in the same order), each flag
with its help, then ``[default: ...]`` and ``[env: ...]``.

Exit codes are :mod:`bivio.core.exits` (a worker failing with 1 or 3 makes
the supervisor exit with that same code).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .core import configfile, exits
from .core.config import _FALSE, _TRUE, GROUPS, OPTIONS, ConfigError, Option
from .process.loader import LoadError

OTHER_GROUP = "Other"
"""The last group of ``--help``: ``--version`` and ``--help`` themselves."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage dump: the user needs the reason."""
        self.exit(exits.USAGE, f"bivio: error: {message} (see bivio --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Two columns; a line breaks only between words, never inside a flag's name."""

    def __init__(self, prog: str) -> None:
        width = min(max(shutil.get_terminal_size().columns - 2, 60), 110)
        super().__init__(prog, max_help_position=32, width=width)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return _wrap(text, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line for line in _wrap(text, width - len(indent)))


_TAG = re.compile(r"\[(\w+): ")


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` (unless one word is longer), broken only at spaces
    and never inside a ``[default: ...]`` / ``[env: ...]`` tag."""
    glued = _TAG.sub(lambda m: f"[{m[1]}:\0", " ".join(text.split()))
    return [line.replace("\0", " ") for line in
            textwrap.wrap(glued, width, break_on_hyphens=False, break_long_words=False)]


def help_text(option: Option) -> str:
    """An option's line in ``--help``: what it does, then its tags, always in this order."""
    text = option.help
    if option.kind == "bool" and option.default is not None:
        text += f" [default: {'on' if option.default else 'off'}]"
    elif option.default not in (None, (), "") and option.kind != "bool":
        default = option.default
        text += f" [default: {default:g}]" if isinstance(default, float) else \
            f" [default: {default}]"
    return text + f" [env: {option.env}]"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bivio",
        usage="bivio [OPTIONS] MODULE:ATTR",
        add_help=False,
        formatter_class=_HelpFormatter,
        description="Serve a WSGI or ASGI application (or both: --asgi-app, --django). "
                    "Every flag can also be set as BIVIO_<FLAG> in the environment "
                    "(e.g. BIVIO_PORT=8001, BIVIO_ACCESS_LOG=false). uvicorn's flags "
                    "and gunicorn's everyday ones (-w, -b/--bind, --access-logfile, "
                    "--error-logfile, --pid) are accepted. WSGI, ASGI or hybrid for your "
                    "project? Measure it: bivio compare --help.",
    )
    parser.add_argument("app", metavar="MODULE:ATTR", nargs="?", default=None,
                        help="the application, e.g. myproject.asgi:application (with "
                             "--asgi-app: the WSGI one; optional with --django)")
    groups = {title: parser.add_argument_group(title) for title in GROUPS}
    for option in OPTIONS:
        _add(groups[option.group], option)
    other = parser.add_argument_group(OTHER_GROUP)
    other.add_argument("--version", action="version", version=f"bivio {__version__}",
                       help="Print the version and exit.")
    other.add_argument("-h", "--help", action="help", help="List the flags and exit.")
    return parser


def _add(group: argparse._ArgumentGroup, option: Option) -> None:
    flags = [option.short, option.flag] if option.short else [option.flag]
    text = help_text(option)
    if option.kind == "bool":
        group.add_argument(*flags, dest=option.name, default=None,
                           action=argparse.BooleanOptionalAction, help=text)
    elif option.kind == "list":
        group.add_argument(*flags, dest=option.name, default=None, action="append",
                           metavar=option.metavar or "VALUE", help=text)
    elif option.kind == "choice":
        refused = dict(option.refused)
        shown = [c for c in option.choices if c not in refused]
        group.add_argument(*flags, dest=option.name, default=None,
                           metavar="{" + ",".join(shown) + "}", help=text)
    else:
        group.add_argument(*flags, dest=option.name, default=None,
                           metavar=option.metavar or option.kind.upper(), help=text)


_BOOL_VALUE_FLAGS = {o.flag: o for o in OPTIONS if o.bool_value}


def uvicorn_spellings(argv: Sequence[str]) -> list[str]:
    """Rewrite uvicorn's ``--ws-per-message-deflate true|false`` (a flag taking a value)
    as bivio's ``--ws-per-message-deflate`` / ``--no-ws-per-message-deflate``."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        option = _BOOL_VALUE_FLAGS.get(flag)
        if option is not None:
            if not eq and i + 1 < len(args) and args[i + 1].lower() in _TRUE | _FALSE:
                value, eq = args[i + 1], "="
                i += 1
            if eq and value.lower() in _TRUE | _FALSE:
                arg = flag if value.lower() in _TRUE else "--no-" + flag[2:]
        out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> NoReturn:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv[:1]) == ["compare"]:  # a subcommand with flags of its own (docs/asgi-or-wsgi.md)
        from .compare import main as compare

        compare(argv[1:])
    from .process.main import serve

    parser = build_parser()
    args = vars(parser.parse_args(uvicorn_spellings(argv)))
    app = args.pop("app")
    try:
        config, where = configfile.load(args)
    except ConfigError as exc:
        parser.error(str(exc))
    if config.print_config:
        sys.stdout.write(configfile.describe(config, where))
        sys.exit(exits.OK)
    if app is None and config.django is None:
        parser.error("the following arguments are required: MODULE:ATTR")
    try:
        code = serve(app, {}, config)
    except ConfigError as exc:  # a file an option names cannot be used (--log-config, --pid)
        parser.error(str(exc))
    except LoadError as exc:
        print(f"bivio: error: {exc}", file=sys.stderr)
        code = exits.LOAD_ERROR
    sys.exit(code)
