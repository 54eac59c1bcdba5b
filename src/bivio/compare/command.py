"""``bivio compare``: its flags, and the order of things (inspect, check, measure, decide, report).

``bivio compare --django mysite`` from the directory with ``manage.py``, or
``bivio compare --wsgi app:wsgi_app --asgi app:asgi_app`` for any pair. Flags
``bivio compare`` does not know, and everything after ``--``, are passed to
every server it starts (``--threads 8``, ``--env-file .env``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from ..core import exits
from . import report, run, servers
from .project import ProjectError, ProjectInfo, inspect_project
from .run import BadInput, Comparison, ModeResult, Progress, Setup
from .verdict import Targets, Verdict, decide

DEFAULT_CONCURRENCY = (1, 16)
TOTAL_SECONDS = 30.0
"""The measurements' share of the minute a default comparison takes (the rest: starting
six servers, the checks, the warm-ups)."""
INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, as ``bivio`` itself does: the reason, not the usage dump."""
        self.exit(exits.USAGE, f"bivio compare: error: {message} (see bivio compare --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bivio compare",
        usage="bivio compare (--django PROJECT | --wsgi MOD:APP --asgi MOD:APP) [OPTIONS] "
              "[-- BIVIO FLAGS]",
        description="Serve your application three ways (WSGI, ASGI, hybrid), check that they "
                    "answer alike, measure each, and recommend one with the command to run it. "
                    "Unknown flags and everything after -- go to every bivio server started.")
    what = parser.add_argument_group("What to compare")
    what.add_argument("--django", metavar="PROJECT",
                      help="a Django project: PROJECT.wsgi, PROJECT.asgi, PROJECT.settings "
                           "(run from the directory with manage.py)")
    what.add_argument("--wsgi", metavar="MOD:APP", help="the WSGI app (with --asgi)")
    what.add_argument("--asgi", metavar="MOD:APP", help="the ASGI app (with --wsgi)")
    what.add_argument("--app-dir", default=".", metavar="DIR",
                      help="import the project from this directory [default: .]")
    what.add_argument("--path", action="append", default=[], metavar="PATH",
                      help="a path to measure (repeatable) [default: the URLconf's pages "
                           "without arguments; / for --wsgi/--asgi]")
    what.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="a request header for every request: a session cookie, a token "
                           "(repeatable)")
    what.add_argument("--asgi-path", action="append", default=None, metavar="PREFIX",
                      help="hybrid mode's prefixes for the ASGI app (repeatable) "
                           "[default: the async views among the paths]")
    how = parser.add_argument_group("How to measure")
    how.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                     help="seconds per measurement [default: about a minute in all]")
    how.add_argument("--concurrency", action="append", default=None, metavar="N[,N...]",
                     help="connections at once (repeatable) [default: 1,16]")
    how.add_argument("--workers", type=int, default=None, metavar="N",
                     help="worker processes per server [default: one process]")
    how.add_argument("--startup-timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long a server may take to accept connections [default: 60]")
    out = parser.add_argument_group("Reports")
    out.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    out.add_argument("--html", metavar="FILE",
                     help="write a self-contained HTML page with the table and charts")
    out.add_argument("--no-progress", action="store_true",
                     help="no progress bar (the lines saying which server runs where are "
                          "still printed, on stderr)")
    return parser


def _concurrency(values: list[str] | None, parser: argparse.ArgumentParser) -> list[int]:
    if not values:
        return list(DEFAULT_CONCURRENCY)
    found: list[int] = []
    for value in values:
        for part in value.split(","):
            try:
                n = int(part)
            except ValueError:
                parser.error(f"--concurrency: expected a number, got {part!r}")
            if n < 1:
                parser.error(f"--concurrency: must be at least 1, got {n}")
            if n not in found:
                found.append(n)
    return sorted(found)


def _headers(values: list[str], parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    found = []
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip() or any(c in value for c in "\r\n"):
            parser.error(f"--header: expected 'Name: value', got {value!r}")
        found.append((name.strip(), text.strip()))
    return found


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    argv = list(sys.argv[2:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args, unknown = parser.parse_known_args(argv)
    passthrough = unknown + extra
    if args.django is None and (args.wsgi is None or args.asgi is None):
        parser.error("name the project: --django PROJECT, or both --wsgi MOD:APP and "
                     "--asgi MOD:APP")
    if args.django is not None and (args.wsgi or args.asgi):
        parser.error("--django names both apps; use it or --wsgi/--asgi, not both")
    for path in args.path:
        if not path.startswith("/"):
            parser.error(f"--path: must start with /, got {path!r}")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration: must be more than 0")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers: must be at least 1")
    concurrency = _concurrency(args.concurrency, parser)
    headers = _headers(args.header, parser)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cwd = os.getcwd()
    progress = Progress(0, enabled=not args.no_progress)
    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C must stop the comparison even when started where SIGINT is ignored (a
    # background job of a script): the servers it starts are stopped by it, not by the signal.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    project: ProjectInfo | None = None
    if args.django is not None:
        if progress.enabled:
            progress.note(f"inspecting {args.django} ...")
        try:
            project = inspect_project(args.django, args.app_dir, env, cwd)
        except ProjectError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            print("bivio compare: interrupted while inspecting the project; nothing measured",
                  file=sys.stderr)
            sys.exit(INTERRUPTED)
        if not project.localhost_allowed and not any(n.lower() == "host" for n, _ in headers):
            _fail(f"{args.django}.settings refuses the host 127.0.0.1 (ALLOWED_HOSTS = "
                  f"{project.allowed_hosts!r}), so Django would answer 400 in every mode: add "
                  "'127.0.0.1' to ALLOWED_HOSTS (or pass --header 'Host: NAME' with a host it "
                  "allows)")
        wsgi, asgi = f"{args.django}.wsgi:application", f"{args.django}.asgi:application"
        paths = args.path or project.paths or ["/"]
    else:
        wsgi, asgi = args.wsgi, args.asgi
        paths = args.path or ["/"]
    asgi_paths = args.asgi_path
    if asgi_paths is None:
        asgi_paths = [p for p in (project.async_paths if project else []) if p in paths
                      and p != "/"]
    common = ["--app-dir", args.app_dir, "--no-access-log"]
    if args.workers:
        common += ["--workers", str(args.workers)]
    hybrid = ["--django", args.django] if args.django else [wsgi, "--asgi-app", asgi]
    for prefix in asgi_paths:
        hybrid += ["--asgi-path", prefix]
    modes = {"wsgi": [wsgi, *common, *passthrough], "asgi": [asgi, *common, *passthrough],
             "hybrid": [*hybrid, *common, *passthrough]}
    runs = len(modes) * len(paths) * len(concurrency)
    duration = args.duration or max(0.5, min(5.0, TOTAL_SECONDS / runs))
    setup = Setup(modes, paths, headers, concurrency, duration,
                  warmup=min(0.5, max(0.1, duration / 3)), env=env, cwd=cwd,
                  startup_timeout=args.startup_timeout)
    result = Comparison(setup, project,
                        {name: ModeResult(name, argv) for name, argv in modes.items()})
    progress.total = len(modes) + runs
    app_dir = [] if args.app_dir == "." else ["--app-dir", args.app_dir]
    targets = Targets(args.django, wsgi, asgi, [*app_dir, *passthrough])

    live: list[servers.Server] = []
    verdict: Verdict | None = None
    code = exits.OK
    try:
        run.check(result, live, progress)
        if not result.paths:
            raise BadInput(result.dropped[0] if len(result.dropped) == 1 else
                           "every path fails in every mode: " + "; ".join(result.dropped))
        run.measure(result, live, progress)
        verdict = decide(result, targets)
        if verdict.mode == "none":
            code = exits.LOAD_ERROR
    except BadInput as exc:
        _stop_all(live)
        _fail(str(exc), result)
    except KeyboardInterrupt:
        result.interrupted = True
        code = INTERRUPTED
    finally:
        _stop_all(live)
    if result.interrupted:
        sys.stdout.write("\ninterrupted: every server started is stopped; measured so far:\n")
    sys.stdout.write(report.summary(result, verdict))
    sys.stdout.flush()
    if args.json:
        report.write_json(args.json, result, verdict)
    if args.html:
        report.write_html(args.html, result, verdict)
    sys.exit(code)


def _stop_all(live: list[servers.Server]) -> None:
    """Stop every server still running; a second Ctrl-C must not leave one behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while live:
            live.pop().stop()
    finally:
        signal.signal(signal.SIGINT, previous)


def _fail(message: str, result: Comparison | None = None) -> NoReturn:
    if result is not None:
        for mode in result.modes.values():
            if not mode.ok:
                print(f"bivio compare: {run.LABELS[mode.name]}: {mode.error}", file=sys.stderr)
    print(f"bivio compare: error: {message}", file=sys.stderr)
    sys.exit(exits.USAGE)
