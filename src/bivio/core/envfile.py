"""``--env-file``: read a dotenv file the way python-dotenv (uvicorn's choice) does.

Lines are ``KEY=VALUE``, optionally prefixed by ``export``; ``#`` starts a
comment (inside an unquoted value only after whitespace); blank lines are
skipped. Values may be single-quoted (``\\'`` and ``\\\\`` are the only
escapes) or double-quoted (``\\n``, ``\\t``, ``\\"`` ... escapes), and either
quoting may span several lines. ``${NAME}`` and ``${NAME:-default}`` expand
from the environment first, then from the lines above. A ``KEY`` without
``=`` sets nothing. Unlike python-dotenv, a line that cannot be parsed is an
error (with its line number), not a warning.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Mapping


class EnvFileError(ValueError):
    """The file cannot be read or parsed; one line for the user."""


_SPACE = r"[^\S\r\n]*"
_BINDING = re.compile(
    rf"""{_SPACE}(?:export[^\S\r\n]+)?
    (?:'(?P<qkey>[^']+)'|(?P<key>[^=\#\s]+))
    {_SPACE}(?:(?P<eq>={_SPACE})
        (?:'(?P<single>(?:\\.|[^'\\])*)'
          |"(?P<double>(?:\\.|[^"\\])*)"
          |(?P<plain>(?!['"])[^\r\n]*)))?
    {_SPACE}(?:\#[^\r\n]*)?{_SPACE}(?:\r\n|\n|\r|$)""",
    re.VERBOSE | re.DOTALL,
)
_BLANK = re.compile(r"\s*(?:#[^\r\n]*(?:\r\n|\n|\r|$))?", re.MULTILINE)
_SINGLE_ESCAPES = re.compile(r"\\[\\']")
_DOUBLE_ESCAPES = re.compile(r"\\[\\'\"abfnrtv]")
_VARIABLE = re.compile(r"\$\{(?P<name>[^}:]*)(?::-(?P<default>[^}]*))?\}")


def _unescape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda m: codecs.decode(m.group(0), "unicode-escape"), text)


def parse_env(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables ``text`` (a dotenv file's content) sets, expanded against ``environ``."""
    environ = os.environ if environ is None else environ
    text = text.removeprefix("\ufeff")
    values: dict[str, str] = {}
    pos = 0
    while True:
        pos = _skip_blank(text, pos)
        if pos >= len(text):
            return values
        match = _BINDING.match(text, pos)
        if match is None:
            line = text.count("\n", 0, pos) + 1
            shown = text[pos:].splitlines()[0].strip()
            raise EnvFileError(f"line {line}: expected KEY=VALUE, got {shown[:60]!r}")
        pos = match.end()
        key = match["qkey"] or match["key"]
        if match["eq"] is None:
            continue  # a bare KEY: python-dotenv sets nothing either
        if match["single"] is not None:
            value = _unescape(_SINGLE_ESCAPES, match["single"])
        elif match["double"] is not None:
            value = _unescape(_DOUBLE_ESCAPES, match["double"])
        elif len(match["eq"]) > 1 and match["plain"].startswith("#"):
            value = ""  # KEY= # a comment
        else:
            value = re.sub(r"\s+#.*", "", match["plain"]).rstrip()
        lookup = {**values, **environ}  # the environment wins, as in python-dotenv
        values[key] = _VARIABLE.sub(
            lambda m, env=lookup: env.get(m["name"], m["default"] or ""), value)


def _skip_blank(text: str, pos: int) -> int:
    while True:
        match = _BLANK.match(text, pos)
        if match is None or match.end() == pos:
            return pos
        pos = match.end()


def read_env_file(path: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """:func:`parse_env` on the file at ``path``; :class:`EnvFileError` names what is wrong."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EnvFileError(f"{path} is not UTF-8 text") from None
    try:
        return parse_env(text, environ)
    except EnvFileError as exc:
        raise EnvFileError(f"{path} {exc}") from None
