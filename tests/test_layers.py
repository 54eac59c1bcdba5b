"""The package's layers, enforced: imports point down, never sideways, and never in a cycle.

bivio is layered (docs/architecture.md)::

    bivio (run, cli, __main__)        entry points
    bivio.process                     loading apps, the worker's server, the supervisor
    bivio.protocols | bivio.adapters  bytes <-> streams | streams <-> applications
    bivio.core                        config, logs, exits, headers, paths, stream, context

A module may import its own layer or one below. ``protocols`` and
``adapters`` are siblings that meet only through the stream contract in
``core``: neither imports the other. Every import counts, including those
inside functions and under ``TYPE_CHECKING``: a lazy import that closes a
cycle is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bivio

ROOT = Path(bivio.__file__).parent

RANK = {"core": 0, "protocols": 1, "adapters": 1, "process": 2, "compare": 3}
"""``bivio.compare`` ranks with the entry points (3): it may import anything, nothing imports it."""
SIBLINGS = {("protocols", "adapters"), ("adapters", "protocols")}


def module_name(path: Path) -> str:
    parts = ["bivio", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The bivio modules ``name`` imports, resolved (relative imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from pkg import mod`` imports the submodule when there is one.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("bivio") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "entry"


def rank(name: str) -> int:
    return RANK.get(layer(name), 3)


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports against the direction of the layers."""
    found = []
    for source, targets in edges.items():
        for target in targets:
            if target == "bivio":
                continue  # the package root holds only __version__ and run()
            src, dst = layer(source), layer(target)
            if rank(target) > rank(source) or (src, dst) in SIBLINGS:
                found.append(f"{source} ({src}) imports {target} ({dst})")
    return sorted(found)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_layers_exist():
    names = set(modules())
    for package in RANK:
        assert f"bivio.{package}" in names, package
    assert {"bivio.core.stream", "bivio.core.context", "bivio.protocols.http1",
            "bivio.adapters.asgi", "bivio.adapters.wsgi", "bivio.process.server"} <= names


def test_imports_point_down_and_never_sideways():
    assert violations(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_core_imports_nothing_above_it():
    for source, targets in graph().items():
        if layer(source) == "core":
            assert all(layer(t) == "core" for t in targets), (source, targets)


@pytest.mark.parametrize(("edges", "expected"), [
    ({"bivio.protocols.http1": {"bivio.adapters.asgi"}, "bivio.adapters.asgi": set()},
     ["bivio.protocols.http1 (protocols) imports bivio.adapters.asgi (adapters)"]),
    ({"bivio.core.config": {"bivio.adapters.static"}, "bivio.adapters.static": set()},
     ["bivio.core.config (core) imports bivio.adapters.static (adapters)"]),
    ({"bivio.adapters.wsgi": {"bivio.process.server"}, "bivio.process.server": set()},
     ["bivio.adapters.wsgi (adapters) imports bivio.process.server (process)"]),
    ({"bivio.process.server": {"bivio.core.config", "bivio.adapters.asgi"}}, []),
])
def test_the_checker_catches_a_wrong_direction(edges, expected):
    assert violations(edges) == expected


def test_the_checker_catches_a_cycle():
    edges = {"bivio.adapters.asgi": {"bivio.adapters.asgi_ws"},
             "bivio.adapters.asgi_ws": {"bivio.adapters.asgi"},
             "bivio.core.stream": set()}
    assert cycles(edges) == [["bivio.adapters.asgi", "bivio.adapters.asgi_ws"]]


def test_relative_and_lazy_imports_are_resolved(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from ..core import logs\n"
                      "def f():\n    from .asgi_ws import X\n"
                      "from ..core.stream import Stream\n")
    known = {"bivio.core", "bivio.core.logs", "bivio.core.stream", "bivio.adapters.asgi_ws",
             "bivio.adapters.mod"}
    assert imports_of("bivio.adapters.mod", source, known) == {
        "bivio.core.logs", "bivio.adapters.asgi_ws", "bivio.core.stream"}
