"""Loading ``MODULE:ATTR``: import errors as one line, ASGI 2/3 detection, factories."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sys
import textwrap

import pytest

from bivio.process.loader import (
    ASGI2Adapter,
    LoadError,
    app_dir_hint,
    detect_interface,
    import_from_string,
    load_app,
)

_names = itertools.count()


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    # import_from_string puts app_dir first on sys.path; keep the test process clean.
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def make_module(tmp_path):
    """Write a uniquely named module into tmp_path; return its name."""
    created: list[str] = []

    def _make(source: str, prefix: str = "loadermod") -> str:
        name = f"{prefix}_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield _make
    for name in created:
        sys.modules.pop(name, None)


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    return message


# -- import_from_string -------------------------------------------------------------------


def test_import_attribute(make_module, tmp_path):
    name = make_module("""
        class Holder:
            class Inner:
                value = 42
        app = object()
    """)
    module = sys.modules.get(name)
    assert module is None
    app = import_from_string(f"{name}:app", str(tmp_path))
    assert app is sys.modules[name].app
    assert import_from_string(f"{name}:Holder.Inner.value", str(tmp_path)) == 42


def test_app_dir_goes_first_on_sys_path(make_module, tmp_path):
    name = make_module("app = 1")
    import_from_string(f"{name}:app", str(tmp_path))
    assert sys.path[0] == str(tmp_path)


def test_package_module(tmp_path):
    package = tmp_path / "loaderpkg_a"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "asgi.py").write_text("application = 'the app'\n")
    try:
        assert import_from_string("loaderpkg_a.sub.asgi:application", str(tmp_path)) == "the app"
    finally:
        for mod in ("loaderpkg_a", "loaderpkg_a.sub", "loaderpkg_a.sub.asgi"):
            sys.modules.pop(mod, None)


@pytest.mark.parametrize("target", ["module", "module:", ":app", "", "a.b"])
def test_bad_target_format(target):
    with pytest.raises(LoadError) as info:
        import_from_string(target)
    assert one_line(info.value) == f'app must be given as "MODULE:ATTRIBUTE", got {target!r}'


def test_no_such_module(tmp_path):
    with pytest.raises(LoadError) as info:
        import_from_string("no_such_module_for_bivio:app", str(tmp_path))
    assert one_line(info.value) == (
        "could not import module 'no_such_module_for_bivio': no such module")


def test_no_such_submodule(tmp_path):
    with pytest.raises(LoadError) as info:
        import_from_string("bivio.no_such_submodule:app", str(tmp_path))
    assert "no such module" in one_line(info.value)
    assert "'bivio.no_such_submodule'" in str(info.value)


def test_no_such_module_suggests_the_app_dir_below_the_working_directory(tmp_path,
                                                                         monkeypatch):
    # examples/example/asgi.py run from the repository without --app-dir examples.
    package = tmp_path / "examples" / "hintpkg_a"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "asgi.py").write_text("application = 1\n")
    (tmp_path / ".hidden" / "hintpkg_b").mkdir(parents=True)  # never searched
    (tmp_path / ".hidden" / "hintpkg_b" / "asgi.py").write_text("application = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LoadError) as info:
        import_from_string("hintpkg_a.asgi:application")
    assert one_line(info.value) == (
        "could not import module 'hintpkg_a.asgi': no such module; "
        "examples/hintpkg_a/asgi.py exists: try --app-dir examples")
    with pytest.raises(LoadError) as info:
        import_from_string("hintpkg_b.asgi:application")
    assert one_line(info.value) == "could not import module 'hintpkg_b.asgi': no such module"


def test_app_dir_hint_takes_the_nearest_and_skips_the_searched_directory(tmp_path):
    for where in ("a/b/c", "z"):
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "hintmod.py").write_text("app = 1\n")
    assert app_dir_hint("hintmod", None, tmp_path) == "; z/hintmod.py exists: try --app-dir z"
    assert app_dir_hint("hintmod", str(tmp_path / "z"), tmp_path) == (
        "; a/b/c/hintmod.py exists: try --app-dir a/b/c")
    assert app_dir_hint("hintmod.sub", None, tmp_path) == ""  # a module is no package


def test_import_error_traceback_is_kept_and_logged_at_debug(make_module, tmp_path, caplog,
                                                          monkeypatch):
    monkeypatch.setattr(logging.getLogger("bivio.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="bivio.error")
    name = make_module("""
        def connect():
            raise RuntimeError("settings are broken")
        connect()
    """)
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:app", str(tmp_path))
    details = info.value.details
    assert details is not None and details.startswith("Traceback (most recent call last):")
    assert f'{name}.py", line 4, in <module>' in details
    assert 'raise RuntimeError("settings are broken")' in details
    assert "importlib" not in details and "loader.py" not in details  # only the app's frames
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    # A set: a handler another test left on the logger may show the record twice.
    assert set(debug) == {f"{info.value}\n{details.rstrip()}"}


def test_missing_dependency_is_not_reported_as_missing_module(make_module, tmp_path):
    name = make_module("import a_dependency_that_is_not_installed\napp = 1\n")
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:app", str(tmp_path))
    message = one_line(info.value)
    assert message.startswith(f"error while importing {name!r}: ModuleNotFoundError")
    assert "a_dependency_that_is_not_installed" in message
    assert "no such module" not in message


def test_missing_attribute(make_module, tmp_path):
    name = make_module("app = 1\n")
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:application", str(tmp_path))
    assert one_line(info.value) == f"module {name!r} has no attribute 'application'"


def test_missing_nested_attribute(make_module, tmp_path):
    name = make_module("class Holder:\n    pass\n")
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:Holder.app", str(tmp_path))
    assert "has no attribute 'Holder.app'" in one_line(info.value)


def test_module_that_raises_at_import(make_module, tmp_path):
    name = make_module("""
        x = 1
        raise RuntimeError("settings are broken")
    """)
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:app", str(tmp_path))
    message = one_line(info.value)
    assert message.startswith(f"error while importing {name!r}: RuntimeError: settings are broken")
    # Where it happened: the module's own file and line.
    assert f"{name}.py:3)" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_module_with_syntax_error(make_module, tmp_path):
    name = make_module("def broken(:\n    pass\n")
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:app", str(tmp_path))
    message = one_line(info.value)
    assert message.startswith(f"error while importing {name!r}: SyntaxError: ")
    assert f"{name}.py, line 1" in message
    assert "importlib" not in message


def test_module_calling_sys_exit(make_module, tmp_path):
    name = make_module("import sys\nsys.exit(4)\n")
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:app", str(tmp_path))
    assert "SystemExit" in one_line(info.value)


# -- detect_interface ------------------------------------------------------------------------


async def asgi3_function(scope, receive, send):
    pass


class ASGI3Instance:
    async def __call__(self, scope, receive, send):
        pass


class ASGI2Class:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        pass


def asgi2_function(scope):
    return ASGI2Class(scope)


class Middleware:
    """A sync __call__ returning a coroutine: ASGI 3 by shape."""

    def __init__(self, app):
        self.app = app

    def __call__(self, scope, receive, send):
        return self.app(scope, receive, send)


async def varargs_app(*args):
    pass


async def app_with_default(scope, receive, send, extra=None):
    pass


async def two_arg_coroutine(scope, receive):
    pass


async def four_required(scope, receive, send, extra):
    pass


def two_arg_function(scope, receive):
    pass


def no_arg_function():
    pass


@pytest.mark.parametrize("app", [
    asgi3_function,
    ASGI3Instance(),
    Middleware(asgi3_function),
    varargs_app,
    app_with_default,
    functools.partial(four_required, extra=1),
    ASGI3Instance().__call__,
], ids=repr)
def test_asgi3(app):
    assert detect_interface(app) == "asgi3"


@pytest.mark.parametrize("app", [ASGI2Class, asgi2_function], ids=repr)
def test_asgi2(app):
    assert detect_interface(app) == "asgi2"


@pytest.mark.parametrize(("app", "count"), [
    # a sync two_arg_function(a, b) is WSGI now: see tests/test_wsgi.py
    (two_arg_coroutine, 2),
    (no_arg_function, 0),
    (four_required, 4),
])
def test_wrong_number_of_arguments(app, count):
    with pytest.raises(LoadError) as info:
        detect_interface(app)
    message = one_line(info.value)
    assert message.startswith(f"{app.__qualname__} is not an ASGI application")
    assert f"takes {count} positional arguments" in message


@pytest.mark.parametrize(("app", "kind"), [(42, "int"), ("text", "str"), (None, "NoneType"),
                                           ({}, "dict")])
def test_not_callable(app, kind):
    with pytest.raises(LoadError) as info:
        detect_interface(app)
    assert one_line(info.value) == f"{kind} object is not an ASGI application (not callable)"


# -- load_app --------------------------------------------------------------------------------


def test_load_asgi3_object_as_is():
    assert load_app(asgi3_function) is asgi3_function


def test_load_asgi2_is_adapted():
    loaded = load_app(ASGI2Class)
    assert isinstance(loaded, ASGI2Adapter)
    assert loaded.app is ASGI2Class


def test_asgi2_adapter_runs_the_instance():
    seen = {}

    class App:
        def __init__(self, scope):
            seen["scope"] = scope

        async def __call__(self, receive, send):
            seen["received"] = await receive()
            await send({"type": "sent"})

    sent = []

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(load_app(App)({"type": "http"}, receive, send))
    assert seen == {"scope": {"type": "http"}, "received": {"type": "http.request"}}
    assert sent == [{"type": "sent"}]


def test_load_from_string(make_module, tmp_path):
    name = make_module("""
        async def app(scope, receive, send):
            pass
    """)
    loaded = load_app(f"{name}:app", app_dir=str(tmp_path))
    assert loaded is sys.modules[name].app


def test_factory(make_module, tmp_path):
    name = make_module("""
        calls = []

        def create_app():
            calls.append(1)

            async def app(scope, receive, send):
                pass
            return app
    """)
    loaded = load_app(f"{name}:create_app", factory=True, app_dir=str(tmp_path))
    assert loaded.__name__ == "app"
    assert sys.modules[name].calls == [1]


def test_factory_returning_asgi2(make_module, tmp_path):
    name = make_module("""
        class App:
            def __init__(self, scope):
                pass

            async def __call__(self, receive, send):
                pass

        def create_app():
            return App
    """)
    loaded = load_app(f"{name}:create_app", factory=True, app_dir=str(tmp_path))
    assert isinstance(loaded, ASGI2Adapter)


def test_without_factory_flag_a_factory_is_refused(make_module, tmp_path):
    name = make_module("""
        def create_app():
            async def app(scope, receive, send):
                pass
            return app
    """)
    with pytest.raises(LoadError) as info:
        load_app(f"{name}:create_app", app_dir=str(tmp_path))
    assert "takes 0 positional arguments" in one_line(info.value)


def test_factory_that_raises(make_module, tmp_path):
    name = make_module("""
        def create_app():
            raise KeyError("DATABASE_URL")
    """)
    with pytest.raises(LoadError) as info:
        load_app(f"{name}:create_app", factory=True, app_dir=str(tmp_path))
    message = one_line(info.value)
    assert message.startswith("the app factory raised KeyError: 'DATABASE_URL'")
    assert f"{name}.py:3" in message


def test_factory_not_callable():
    with pytest.raises(LoadError) as info:
        load_app(42, factory=True)
    assert one_line(info.value) == "--factory: the target is not callable"


def test_async_factory_is_refused_without_a_warning(recwarn):
    async def create_app():
        return asgi3_function

    with pytest.raises(LoadError) as info:
        load_app(create_app, factory=True)
    assert "coroutine" in one_line(info.value)
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_factory_returning_a_non_app():
    with pytest.raises(LoadError) as info:
        load_app(lambda: 42, factory=True)
    assert one_line(info.value) == "int object is not an ASGI application (not callable)"


def test_load_error_is_one_line_for_any_exception_text(make_module, tmp_path):
    name = make_module('raise ValueError("first line\\nsecond line")\n')
    with pytest.raises(LoadError) as info:
        import_from_string(f"{name}:app", str(tmp_path))
    # The CLI prints str(error) as its one line: a multi-line exception text must
    # not turn it into several.
    assert "\n" not in str(info.value)

