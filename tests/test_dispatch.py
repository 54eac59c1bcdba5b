"""Hybrid mode's routing rule and option checks, without sockets (e2e: tests/e2e/test_hybrid.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from bivio.adapters.dispatch import Dispatcher
from bivio.core.config import Config, ConfigError
from bivio.core.paths import PathError as PrefixError
from bivio.core.paths import normalize_prefix, under_prefix
from bivio.process.loader import LoadError, WSGIApp, django_targets, load_pair


class Recorder:
    """A stream handler that notes the paths it was given (stands for WSGI or ASGI)."""

    def __init__(self) -> None:
        self.paths: list[bytes] = []
        self.bound: object = None
        self.stopped = False

    async def __call__(self, stream: SimpleNamespace) -> None:
        self.paths.append(stream.raw_path)

    def bind(self, ctx: object) -> None:
        self.bound = ctx

    def shutdown(self) -> None:
        self.stopped = True


def head(path: bytes, upgrade: str | None = None) -> SimpleNamespace:
    """The two request-head fields the rule reads (the stream contract's names)."""
    return SimpleNamespace(raw_path=path, upgrade=upgrade)


@pytest.mark.parametrize("prefix", ["/events", "/events/", "/events//"])
@pytest.mark.parametrize(("path", "expected"), [
    (b"/events", True), (b"/events/", True), (b"/events/x", True), (b"/events/x/y", True),
    (b"/eventsx", False), (b"/event", False), (b"/", False), (b"/other/events/", False),
    (b"/Events/", False),  # paths are case-sensitive, as the apps' URL patterns are
])
def test_prefixes_match_whole_segments(prefix: str, path: bytes, expected: bool) -> None:
    assert under_prefix(path, (normalize_prefix(prefix),)) is expected


@pytest.mark.parametrize(("prefix", "reason"), [
    ("events/", "must start with '/'"), ("/", "would send every request"),
    ("//", "would send every request"), ("/a?b", "not a path prefix"),
])
def test_bad_prefixes_are_refused(prefix: str, reason: str) -> None:
    with pytest.raises(PrefixError, match=reason.replace("?", r"\?")):
        normalize_prefix(prefix)


def test_rule_websocket_then_prefix_then_wsgi() -> None:
    wsgi, asgi = Recorder(), Recorder()
    dispatcher = Dispatcher(wsgi, asgi, ["/events/", "/api/live"])
    assert dispatcher.route(head(b"/ws/chat/", "websocket")) is asgi  # any path
    assert dispatcher.route(head(b"/events/sse")) is asgi
    assert dispatcher.route(head(b"/api/live")) is asgi
    assert dispatcher.route(head(b"/api/liveness")) is wsgi
    assert dispatcher.route(head(b"/admin/")) is wsgi
    assert dispatcher.route(head(b"/%65vents/x")) is asgi  # matched decoded, as apps route


def test_without_prefixes_only_websockets_go_to_asgi() -> None:
    wsgi, asgi = Recorder(), Recorder()
    dispatcher = Dispatcher(wsgi, asgi)
    assert dispatcher.route(head(b"/events/")) is wsgi
    assert dispatcher.route(head(b"/events/", "websocket")) is asgi


def test_root_path_kept_by_the_proxy_is_not_part_of_the_match() -> None:
    wsgi, asgi = Recorder(), Recorder()
    dispatcher = Dispatcher(wsgi, asgi, ["/events"], root_path="/app")
    assert dispatcher.route(head(b"/app/events/x")) is asgi
    assert dispatcher.route(head(b"/events/x")) is asgi  # the proxy stripped it
    assert dispatcher.route(head(b"/appx/events/x")) is wsgi
    assert dispatcher.route(head(b"/app/page")) is wsgi


def test_call_runs_the_chosen_handler_and_bind_shutdown_reach_both() -> None:
    wsgi, asgi = Recorder(), Recorder()
    dispatcher = Dispatcher(wsgi, asgi, ["/events"])

    async def go() -> None:
        await dispatcher(head(b"/page"))
        await dispatcher(head(b"/events/1"))
        await dispatcher(head(b"/chat", "websocket"))

    asyncio.run(go())
    assert wsgi.paths == [b"/page"] and asgi.paths == [b"/events/1", b"/chat"]
    ctx = object()
    dispatcher.bind(ctx)
    dispatcher.shutdown()
    assert wsgi.bound is ctx and asgi.bound is ctx and wsgi.stopped and asgi.stopped


def test_config_django_fills_in_the_asgi_app() -> None:
    config = Config.from_options({"django": "mysite"}, env={})
    assert config.asgi_app == "mysite.asgi:application"
    assert django_targets("mysite") == ("mysite.wsgi:application", "mysite.asgi:application")
    explicit = Config.from_options({"django": "mysite", "asgi_app": "mysite.routing:app"}, env={})
    assert explicit.asgi_app == "mysite.routing:app"


def test_config_reads_hybrid_options_from_the_environment() -> None:
    config = Config.from_options(env={"BIVIO_ASGI_APP": "a.asgi:app",
                                      "BIVIO_ASGI_PATH": "/events/;/sse"})
    assert config.asgi_app == "a.asgi:app" and config.asgi_path == ("/events/", "/sse")


@pytest.mark.parametrize(("options", "message"), [
    ({"asgi_path": ["/x"]}, "--asgi-path: needs --asgi-app"),
    ({"asgi_app": "a:b", "asgi_path": ["x"]}, "--asgi-path: must start with '/'"),
    ({"asgi_app": "a:b", "interface": "asgi3"}, "--interface: in hybrid mode"),
    ({"django": "my-site"}, "--django: expected a package name"),
])
def test_config_refuses_inconsistent_hybrid_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_options(options, env={})


def test_load_pair_takes_flask_then_starlette() -> None:
    pytest.importorskip("flask")
    wsgi, asgi = load_pair("tests.apps.hybrid_pair:flask_app",
                           "tests.apps.hybrid_pair:starlette_app")
    assert isinstance(wsgi, WSGIApp) and not isinstance(asgi, WSGIApp)


@pytest.mark.parametrize(("wsgi", "asgi", "message"), [
    ("tests.apps.hybrid_pair:starlette_app", "tests.apps.hybrid_pair:starlette_app",
     "is an ASGI application, but MODULE:ATTR must be the WSGI one"),
    ("tests.apps.hybrid_pair:flask_app", "tests.apps.hybrid_pair:flask_app",
     "--asgi-app: tests.apps.hybrid_pair:flask_app is a WSGI application"),
    ("tests.apps.hybrid_pair:flask_app", "tests.apps.hybrid_pair:nothing",
     "--asgi-app: module 'tests.apps.hybrid_pair' has no attribute 'nothing'"),
])
def test_load_pair_refuses_a_wrong_pair(wsgi: str, asgi: str, message: str) -> None:
    pytest.importorskip("flask")
    with pytest.raises(LoadError, match=message):
        load_pair(wsgi, asgi)
