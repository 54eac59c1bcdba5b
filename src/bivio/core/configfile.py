"""The config file: ``bivio.toml``, ``[tool.bivio]`` in ``pyproject.toml``, or ``--config``.

Its keys are the names of :data:`bivio.core.config.OPTIONS` (``log_level`` or
``log-level``: dashes and underscores both work); it is the lowest layer above
the defaults: defaults < file < ``BIVIO_*`` < command line. :func:`load` builds
the :class:`Config` from all of them and says where each setting came from
(``bivio --print-config``); :func:`reload_config` reads the file again for a
SIGHUP. A file that cannot be used stops bivio with one line naming the file,
the key and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import OPTIONS, OPTIONS_BY_NAME, Config, ConfigError, Option, _set_aside, convert

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FILE_NAME = "bivio.toml"
PYPROJECT = "pyproject.toml"
PYPROJECT_LABEL = "pyproject.toml [tool.bivio]"

NOT_IN_FILE = ("config",)
"""Options a config file cannot set: ``config`` (a file does not name another)."""

KEPT_ON_RELOAD = ("host", "port", "uds", "fd", "bind", "backlog", "workers",
                  "timeout_worker_healthcheck", "reload", "reload_dir", "reload_include",
                  "reload_exclude", "reload_delay", "pid", "config", "print_config",
                  "metrics")
"""Options a SIGHUP does not change: the listening sockets (and the metrics
listener) are bound once, and these steer the supervisor itself (``workers``: use
SIGTTIN/SIGTTOU). Every other option of a reloaded file reaches the new workers."""

_ADDRESS = ("host", "port", "uds", "fd", "bind")
_KINDS = {"bool": "true or false", "int": "an integer", "float": "a number",
          "str": "a string", "choice": "a string", "list": "a list of strings"}


@dataclass(frozen=True)
class ConfigFile:
    """A config file that was read: its ``label`` (the path, or ``pyproject.toml
    [tool.bivio]``) and its options by name, converted."""

    label: str
    values: dict[str, Any]


def _read_toml(path: str, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None


def find_config_file(explicit: str | None = None, cwd: str = ".") -> ConfigFile | None:
    """Read ``explicit`` (``--config``), else ``bivio.toml`` in ``cwd``, else the
    ``[tool.bivio]`` table of ``pyproject.toml`` in ``cwd``; ``None`` without any."""
    if explicit is not None:
        path = os.path.join(cwd, explicit)
        return ConfigFile(explicit, parse_table(_read_toml(path, explicit), explicit))
    path = os.path.join(cwd, FILE_NAME)
    if os.path.isfile(path):
        return ConfigFile(FILE_NAME, parse_table(_read_toml(path, FILE_NAME), FILE_NAME))
    path = os.path.join(cwd, PYPROJECT)
    if os.path.isfile(path):
        table = _read_toml(path, PYPROJECT).get("tool", {}).get("bivio")
        if table is None:
            return None
        if not isinstance(table, dict):
            raise ConfigError(f"{PYPROJECT_LABEL}: expected a table")
        return ConfigFile(PYPROJECT_LABEL, parse_table(table, PYPROJECT_LABEL))
    return None


def parse_table(table: Mapping[str, Any], label: str) -> dict[str, Any]:
    """A file's keys turned into option names and its values checked and converted.

    Raises :class:`ConfigError` (``bivio.toml: unknown key 'prot' (did you mean
    'port'?)``) for an unknown key, a key given twice or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        option = OPTIONS_BY_NAME.get(name)
        if option is None or name in NOT_IN_FILE:
            raise ConfigError(f"{label}: unknown key {key!r}{_suggest(key)}")
        if name in values:
            raise ConfigError(f"{label}: key {key!r} given twice (dashes and underscores "
                              "are the same key)")
        values[name] = _convert(option, value, f"{label}: {key}")
    return values


def _suggest(key: str) -> str:
    dashes = "-" in key
    names = [o.name for o in OPTIONS if o.name not in NOT_IN_FILE]
    close = difflib.get_close_matches(key.replace("-", "_"), names, n=1, cutoff=0.6)
    if not close:
        return " (the keys are the option names of bivio --help)"
    best = close[0].replace("_", "-") if dashes else close[0]
    return f" (did you mean {best!r}?)"


def _convert(option: Option, value: Any, label: str) -> Any:
    """TOML's types must be the option's: ``port = "8000"`` is an error, not 8000."""
    kind = option.kind
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "choice": isinstance(value, str),
        "list": isinstance(value, str) or (isinstance(value, list)
                                           and all(isinstance(v, str) for v in value)),
    }[kind]
    if not ok:
        raise ConfigError(f"{label}: expected {_KINDS[kind]}, got {_toml(value)} "
                          f"({type(value).__name__})")
    if kind == "list" and isinstance(value, str):
        value = [value]
    return convert(option, value, label)


def sources(config: Config, options: Mapping[str, Any], env: Mapping[str, str],
            file: ConfigFile | None) -> dict[str, str]:
    """Where each option's value came from: ``command line``, the environment
    variable's name, the file's label or ``default``."""
    env_file = config.env_file
    set_aside = _set_aside(options)  # BIVIO_BIND under --port is not where port came from
    out: dict[str, str] = {}
    for option in OPTIONS:
        if options.get(option.name) is not None:
            out[option.name] = "command line"
        elif option.env in env and option.name not in set_aside:
            out[option.name] = option.env
        elif env_file and option.name != "env_file" and _in_env_file(option, env_file, env):
            out[option.name] = f"{option.env} in {env_file}"
        elif file is not None and option.name in file.values and (
                option.name not in _ADDRESS  # dropped when an address is given above
                or getattr(config, option.name) == file.values[option.name]):
            out[option.name] = file.label
        else:
            out[option.name] = "default"
    if config.bind:  # --bind stands for these
        for name in ("host", "port", "uds", "fd"):
            out[name] = out["bind"]
    if out["forwarded_allow_ips"] == "default" and "FORWARDED_ALLOW_IPS" in env:
        out["forwarded_allow_ips"] = "FORWARDED_ALLOW_IPS"
    if out["workers"] == "default" and config.workers is not None:
        out["workers"] = "WEB_CONCURRENCY"
    return out


def _in_env_file(option: Option, env_file: str, env: Mapping[str, str]) -> bool:
    from .envfile import EnvFileError, read_env_file

    try:
        return option.env in read_env_file(env_file, env)
    except EnvFileError:
        return False


_last: tuple[list[Config], dict[str, Any], str] | None = None
"""What :func:`load` last built (and the reloads since), from which command-line options,
in which directory."""


def load(options: Mapping[str, Any], env: Mapping[str, str] | None = None,
         cwd: str = ".") -> tuple[Config, dict[str, str]]:
    """The command's :class:`Config`: the config file (``options['config']``,
    ``BIVIO_CONFIG`` or the one found in ``cwd``) under the environment and
    ``options`` (what the command line set); and where each value came from.
    Remembers the command line and directory for :func:`reload_config`."""
    global _last
    env = os.environ if env is None else env
    explicit = options.get("config") or env.get(OPTIONS_BY_NAME["config"].env)
    file = find_config_file(explicit, cwd)
    config = Config.from_options(options, env, file=file.values if file else None)
    _last = ([config], dict(options), os.path.abspath(cwd))
    return config, sources(config, options, env, file)


def reload_config(old: Config) -> Config | None:
    """SIGHUP: the options again, with the config file read anew, keeping the options
    of :data:`KEPT_ON_RELOAD` from ``old``; ``None`` when the options did not come
    from the last :func:`load` (``bivio.run``). Raises :class:`ConfigError`."""
    global _last
    if _last is None or old not in _last[0]:
        return None
    built, options, cwd = _last
    new, _ = load(options, os.environ, cwd)
    kept = {name: getattr(old, name) for name in KEPT_ON_RELOAD}
    new = dataclasses.replace(new, **kept, multiprocess=old.multiprocess)
    _last = ([*built[-9:], new], options, cwd)  # an aborted reload goes back to an older one
    return new


def changes(old: Config, new: Config) -> list[str]:
    """``name: old -> new`` for each option that differs (for the reload's log line)."""
    return [f"{o.name}: {_toml(getattr(old, o.name))} -> {_toml(getattr(new, o.name))}"
            for o in OPTIONS if getattr(old, o.name) != getattr(new, o.name)]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value)
    return repr(value)


def describe(config: Config, where: Mapping[str, str]) -> str:
    """``bivio --print-config``: one line per option, TOML that a file could hold
    (unset options commented out), each with where its value came from."""
    lines = ["# bivio's effective settings; after each, where it came from"]
    for option in OPTIONS:
        value = getattr(config, option.name)
        if option.name == "ssl_keyfile_password" and value is not None:
            value = "********"
        text = (f"{option.name} = {_toml(value)}" if value is not None
                else f"# {option.name} is unset")
        if len(config.bind) > 1 and option.name in _ADDRESS[:4]:
            text = f"# {option.name}: see bind"  # several --bind: no one host/port is it
        lines.append(f"{text:<44}  # {where[option.name]}")
    return "\n".join(lines) + "\n"
